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
                                       ("POLL_SCHEDULE", "fast"), ("POLL_SCHEDULE", "10:0"),
                                       ("POLL_SCHEDULE", "60:5,30:2")])
def test_malformed_setting_is_named(key, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, key: value})
    assert key in str(err.value)


def test_default_schedule_follows_kie_advice():
    steps = parse_poll_schedule("30:3,120:8,900:20")
    assert steps[0] == (30, 3) and steps[-1][0] == 900


@pytest.mark.parametrize("script", ["worker.py", "bot.py"])
@pytest.mark.parametrize("drop", ["TELEGRAM_BOT_TOKEN", "DATABASE_URL"])
def test_entry_point_processes_name_the_missing_setting_in_one_line(script, drop):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in BASE and k != "DATABASE_URL"}
    env.update({**BASE, "DATABASE_URL": "postgresql://u@127.0.0.1:1/db"})
    env.pop(drop)
    proc = subprocess.run([sys.executable, str(root / script)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and drop in lines[0], proc.stderr
