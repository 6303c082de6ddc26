"""Connecting to Temporal over (m)TLS, for real: the dev server behind a TLS-terminating proxy that
requires a client certificate from the test CA (tests/support/tls.py), reached with the TEMPORAL_TLS_*
settings through imagegen.temporal_connect, and one generation run through that connection (the
worker polls and the workflow is started over TLS)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import pytest_asyncio

from imagegen.settings import Settings
from imagegen.temporal_connect import connect_options, connect_temporal
from tests.support.stack import Stack
from tests.support.tls import TlsProxy, make_pki

BASE = {"TELEGRAM_BOT_TOKEN": "1:x", "KIE_API_KEY": "k", "PUBLIC_BASE_URL": "https://bot.example.com",
        "CALLBACK_SECRET": "s"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture
async def proxy(pki, temporal_env):
    upstream = int(temporal_env.client.service_client.config.target_host.rsplit(":", 1)[1])
    p = await TlsProxy(pki, upstream).start()
    yield p
    await p.stop()


def tls_settings(pki, proxy, **extra: str) -> Settings:
    env = {**BASE, "TEMPORAL_ADDRESS": proxy.address, "TEMPORAL_TLS_SERVER_CA": str(pki.ca),
           "TEMPORAL_TLS_SERVER_NAME": pki.server_name, "TEMPORAL_TLS_CLIENT_CERT": str(pki.client_cert),
           "TEMPORAL_TLS_CLIENT_KEY": str(pki.client_key), **extra}
    return Settings.from_env({k: v for k, v in env.items() if v})


async def test_a_generation_runs_over_mutual_tls(pki, proxy, pool, pg_dsn):
    settings = tls_settings(pki, proxy)
    client = await connect_temporal(settings, attempts=3)
    assert proxy.client_subjects == ["imagegen-worker"]  # the client certificate was presented and accepted
    stack = Stack(client=client, pool=pool, dsn=pg_dsn, task_queue=f"tls-{uuid.uuid4().hex[:8]}")
    await stack.start()
    try:
        handle, job_id, chat_id = await stack.start_generation(prompt="a lighthouse over TLS")
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
        row = await pool.fetchrow("SELECT state, delivered_at FROM generation_jobs WHERE id = $1", job_id)
        assert row["state"] == "delivered" and row["delivered_at"] is not None
    finally:
        await stack.stop()
    assert len(proxy.client_subjects) >= 1 and set(proxy.client_subjects) == {"imagegen-worker"}


@pytest.mark.parametrize("broken", ["no client certificate", "wrong server name", "unknown CA"])
async def test_a_broken_tls_setup_is_refused_and_retried_with_one_line_per_attempt(pki, proxy, tmp_path, broken,
                                                                                     caplog):
    extra = {
        "no client certificate": {"TEMPORAL_TLS_CLIENT_CERT": "", "TEMPORAL_TLS_CLIENT_KEY": ""},
        "wrong server name": {"TEMPORAL_TLS_SERVER_NAME": "not-the-server.test"},
        "unknown CA": {"TEMPORAL_TLS_SERVER_CA": str(make_pki(tmp_path / "other").ca)},
    }[broken]
    settings = tls_settings(pki, proxy, **extra)
    caplog.set_level(logging.WARNING, logger="imagegen.temporal")
    with pytest.raises(Exception):
        await connect_temporal(settings, attempts=2, first_delay=0.05)
    lines = [r.getMessage() for r in caplog.records if "TEMPORAL_UNREACHABLE" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"address={proxy.address}" in lines[0] and "attempt=1" in lines[0] and "retry_in=" in lines[0]
    assert not any(pki.client_key.read_text()[30:60] in r.getMessage() for r in caplog.records)


async def test_connect_waits_for_temporal_to_come_up(pki, temporal_env, caplog):
    """Temporal down at start: the process retries with backoff (no crash loop) and connects once it is up."""
    upstream = int(temporal_env.client.service_client.config.target_host.rsplit(":", 1)[1])
    late = TlsProxy(pki, upstream)
    settings = tls_settings(pki, late)
    caplog.set_level(logging.INFO, logger="imagegen.temporal")
    connecting = asyncio.create_task(connect_temporal(settings, first_delay=0.2, max_delay=0.5))
    await asyncio.sleep(1.0)
    assert not connecting.done()
    await late.start()
    try:
        client = await asyncio.wait_for(connecting, 30)
        assert await client.service_client.check_health()
    finally:
        await late.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("TEMPORAL_UNREACHABLE" in m for m in messages) >= 2
    assert any("TEMPORAL_CONNECTED" in m for m in messages)


def test_api_key_and_plain_options():
    plain = connect_options(Settings.from_env(BASE))
    assert plain == {"namespace": "default", "tls": False, "api_key": None}
    cloud = connect_options(Settings.from_env({**BASE, "TEMPORAL_API_KEY": "cloud-key-123456",
                                               "TEMPORAL_NAMESPACE": "imagegen.acct1"}))
    assert cloud["api_key"] == "cloud-key-123456" and cloud["namespace"] == "imagegen.acct1"
    tls = cloud["tls"]
    assert tls is not False and tls.client_cert is None and tls.server_root_ca_cert is None  # system roots
