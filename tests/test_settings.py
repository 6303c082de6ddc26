import pytest

from imagegen.settings import Settings, SettingsError, parse_poll_schedule

BASE = {"TELEGRAM_BOT_TOKEN": "1:x", "KIE_API_KEY": "k", "PUBLIC_BASE_URL": "https://bot.example.com/",
        "CALLBACK_SECRET": "s"}


def test_defaults_and_overrides():
    s = Settings.from_env({**BASE, "HTTP_PORT": "9000", "POLL_SCHEDULE": "10:1,60:5"})
    assert s.telegram_api_base == "https://api.telegram.org"
    assert s.kie_api_base == "https://api.kie.ai"
    assert s.public_base_url == "https://bot.example.com"
    assert s.http_port == 9000
    assert s.poll_schedule == [(10.0, 1.0), (60.0, 5.0)] and s.max_wait_seconds == 60


@pytest.mark.parametrize("missing", sorted(BASE))
def test_missing_required_setting_is_named(missing):
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert missing in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key,value", [("HTTP_PORT", "eighty"), ("KIE_API_BASE", "ftp://x"),
                                       ("DELIVERY_LEASE_SECONDS", "600"), ("DELIVERY_LEASE_SECONDS", "1"),
                                       ("DELIVERY_MODE", "fax"),
                                       ("POLL_SCHEDULE", "fast"), ("POLL_SCHEDULE", "10:0"),
                                       ("POLL_SCHEDULE", "60:5,30:2"), ("EVENT_LOOP", "trio")])
def test_malformed_setting_is_named(key, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, key: value})
    assert key in str(err.value)


def test_delivery_defaults_short_renewed_lease_and_send_mode():
    s = Settings.from_env(BASE)
    assert s.delivery_lease_seconds == 20 and s.delivery_mode == "send"
    assert Settings.from_env({**BASE, "DELIVERY_MODE": "Edit"}).delivery_mode == "edit"


def test_default_schedule_follows_kie_advice():
    steps = parse_poll_schedule("30:3,120:8,900:20")
    assert steps[0] == (30, 3) and steps[-1][0] == 900


@pytest.mark.parametrize("script", ["worker.py", "bot.py"])
@pytest.mark.parametrize("drop", ["TELEGRAM_BOT_TOKEN", "DATABASE_URL"])
def test_entry_point_processes_name_the_missing_setting_in_one_line(script, drop, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in BASE and k != "DATABASE_URL"}
    env.update({**BASE, "DATABASE_URL": "postgresql://u@127.0.0.1:1/db"})
    env.pop(drop)
    proc = subprocess.run([sys.executable, str(root / script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and drop in lines[0], proc.stderr


@pytest.mark.parametrize("key,value", [("POLL_SCHEDULE", "nan:3"), ("POLL_SCHEDULE", "30:inf"),
                                       ("POLL_SCHEDULE", "30:3,inf:8"), ("POLL_SCHEDULE", "90000:60"),
                                       ("DOWNLOAD_TIMEOUT_SECONDS", "nan"), ("TELEGRAM_TIMEOUT_SECONDS", "inf"),
                                       ("DB_COMMAND_TIMEOUT_SECONDS", "-1"), ("DB_ACQUIRE_TIMEOUT_SECONDS", "nan"),
                                       ("DB_POOL_SIZE", "0"), ("HTTP_PORT", "70000"), ("HEALTH_PORT", "-1"),
                                       ("RETENTION_DAYS", "-3"), ("USER_MAX_ACTIVE", "0"),
                                       ("WORKER_MAX_CONCURRENT_ACTIVITIES", "1e9"), ("LOG_FORMAT", "xml"),
                                       ("BOT_MODE", "both"), ("ALLOW_PRIVATE_URLS", "maybe")])
def test_every_numeric_setting_is_finite_and_in_range(key, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, key: value})
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message


def test_a_constructed_schedule_is_checked_too():
    with pytest.raises(SettingsError, match="POLL_SCHEDULE"):
        Settings(**{k.lower(): v for k, v in BASE.items()}, poll_schedule=[(float("nan"), 1.0)])


SECRETS = {"TELEGRAM_BOT_TOKEN": "123456789:AAsecret-bot-token-value-0123456789abc",
           "KIE_API_KEY": "kie-secret-key-value", "CALLBACK_SECRET": "callback-secret-value",
           "KIE_WEBHOOK_HMAC_KEY": "hmac-secret-value", "TELEGRAM_WEBHOOK_SECRET": "webhook-secret-value",
           "TEMPORAL_API_KEY": "temporal-cloud-api-key-value",
           "DATABASE_URL": "postgresql://imagegen:db-password-value@db.internal:5432/imagegen"}


def test_no_secret_in_repr_str_or_dump():
    s = Settings.from_env({**BASE, **SECRETS})
    shown = repr(s) + str(s) + str(s.model_dump())
    for name, value in SECRETS.items():
        assert value not in shown, name
    assert "db-password-value" not in shown
    assert s.telegram_bot_token.get_secret_value() == SECRETS["TELEGRAM_BOT_TOKEN"]
    assert s.require_database_url() == SECRETS["DATABASE_URL"]


def test_every_secret_and_the_database_password_are_registered_for_redaction():
    from imagegen.redact import redact, register_settings

    register_settings(Settings.from_env({**BASE, **SECRETS}))
    line = "connect failed: password authentication failed for db-password-value; " + " ".join(SECRETS.values())
    cleaned = redact(line)
    assert "db-password-value" not in cleaned
    for name, value in SECRETS.items():
        assert value not in cleaned, name


def test_a_malformed_secret_is_named_without_its_value():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "TELEGRAM_WEBHOOK_SECRET": "has spaces in it"})
    assert "TELEGRAM_WEBHOOK_SECRET" in str(err.value) and "has spaces" not in str(err.value)


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("\n".join(f"{k}={v}" for k, v in BASE.items()) + "\nHTTP_PORT=9100\n"
                                   "LOG_FORMAT=json\n")
    monkeypatch.chdir(tmp_path)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PORT", "9200")
    s = Settings.from_env()
    assert s.kie_api_key.get_secret_value() == "k" and s.log_format == "json" and s.http_port == 9200


def test_temporal_tls_files_and_api_key(tmp_path):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert"), key.write_text("key")
    plain = Settings.from_env(BASE)
    assert not plain.temporal_tls_enabled
    mtls = Settings.from_env({**BASE, "TEMPORAL_TLS_CLIENT_CERT": str(cert), "TEMPORAL_TLS_CLIENT_KEY": str(key)})
    assert mtls.temporal_tls_enabled and mtls.temporal_tls_client_cert == cert
    assert Settings.from_env({**BASE, "TEMPORAL_API_KEY": "some-api-key"}).temporal_tls_enabled
    with pytest.raises(SettingsError, match="^TEMPORAL_TLS_CLIENT_KEY"):
        Settings.from_env({**BASE, "TEMPORAL_TLS_CLIENT_CERT": str(cert)})
    with pytest.raises(SettingsError, match="^TEMPORAL_TLS_SERVER_CA"):
        Settings.from_env({**BASE, "TEMPORAL_TLS_SERVER_CA": str(tmp_path / "missing.pem")})


def test_pool_options_follow_the_settings():
    s = Settings.from_env({**BASE, "DB_POOL_SIZE": "7", "DB_ACQUIRE_TIMEOUT_SECONDS": "2.5",
                           "DB_COMMAND_TIMEOUT_SECONDS": "9"})
    assert s.pool_options() == {"max_size": 7, "acquire_timeout": 2.5, "command_timeout": 9.0}


def test_event_loop_is_uvloop_unless_asyncio_is_asked_for():
    import asyncio

    import uvloop

    from imagegen import eventloop

    assert Settings.from_env(BASE).event_loop == "uvloop"
    assert Settings.from_env({**BASE, "EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"

    async def kind() -> str:
        return eventloop.name()

    assert eventloop.run(kind(), "uvloop") == "uvloop"
    assert eventloop.run(kind(), "asyncio") == "asyncio" and eventloop.run(kind(), " UVLoop ") == "uvloop"
    assert eventloop.loop_factory("uvloop") is uvloop.new_event_loop and eventloop.loop_factory("asyncio") is None
    with pytest.raises(ValueError):
        eventloop.loop_factory("trio")
