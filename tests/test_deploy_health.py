"""Liveness, readiness and shutdown of the bot; the bounded database pool.

The bot (run_bot, polling, against the Telegram simulator): the public port answers /healthz and
/readyz with `{"ok": …}` only (no counters, no role); the internal HEALTH_PORT adds /status; readiness
follows Postgres and Temporal; on stop the bot turns unready, stops polling and still finishes the
update it had in hand."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import asyncpg
import pytest

from imagegen.bot.app import run_bot
from imagegen.bot.gate import UpdateGate
from imagegen.health import Readiness
from imagegen.jobs import create_pool
from tests.support.services import free_port


async def get(port: int, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"http://127.0.0.1:{port}{path}") as r:
            return r.status, await r.json()


async def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await get(port, "/readyz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("never ready")
        await asyncio.sleep(0.1)


async def test_bot_health_endpoints_and_a_stop_that_finishes_the_update_in_hand(stack, caplog):
    caplog.set_level(logging.INFO, logger="imagegen.bot")
    port, internal = free_port(), free_port()
    settings = stack.settings(http_port=port, health_port=internal, public_base_url=f"http://127.0.0.1:{port}")
    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(settings, stack.client, stop=stop, leader_retry_seconds=0.3))
    try:
        await wait_ready(port)
        assert await get(port, "/healthz") == (200, {"ok": True})
        assert await get(port, "/readyz") == (200, {"ok": True})  # nothing else on the public port
        status, body = await get(internal, "/status")
        assert status == 200 and body["checks"] == {"postgres": "ok", "temporal": "ok"}
        assert body["mode"] == "polling" and "callbacks" in body and body["draining"] is False
        await stack.tg.wait_for(lambda: stack.tg.calls_of("getUpdates"))  # it leads and polls

        chat = 870_001
        stack.tg.delay_next("sendMessage", 2.0)  # the reply to /start takes 2 s
        stack.tg.user_send_command(chat, "/start")
        await stack.tg.wait_for(lambda: any(c.params.get("chat_id") in (chat, str(chat))
                                            for c in stack.tg.calls_of("sendMessage")))
        stop.set()  # SIGTERM while the update is in hand
        stopped_at = time.monotonic()
        await asyncio.sleep(0.3)
        assert await get(internal, "/readyz") == (503, {"ok": False})  # draining: unready at once
        polls = len(stack.tg.calls_of("getUpdates"))
        await asyncio.wait_for(task, 30)
        # It waited for the handler (its reply takes 2 s) instead of closing the session under it.
        assert time.monotonic() - stopped_at > 1.2
        assert "BOT_STOPPING in_hand=1" in caplog.text and "BOT_DRAIN_TIMEOUT" not in caplog.text
        reply = [c for c in stack.tg.calls_of("sendMessage") if c.params.get("chat_id") in (chat, str(chat))]
        assert reply and reply[-1].status == 200 and stack.tg.messages(chat)
        await asyncio.sleep(1.0)
        assert len(stack.tg.calls_of("getUpdates")) <= polls + 1  # no more updates taken
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def test_readiness_reports_a_failing_dependency_and_caches_results():
    calls = {"pg": 0}

    async def pg() -> None:
        calls["pg"] += 1

    async def temporal() -> None:
        raise ConnectionError("frontend unreachable")

    now = [0.0]
    ready = Readiness({"postgres": pg, "temporal": temporal}, clock=lambda: now[0])
    assert not await ready.ready()
    assert (await ready.results())["temporal"].startswith("ConnectionError")
    await ready.ready()
    assert calls["pg"] == 1  # within the cache window: not checked again
    now[0] += 2
    await ready.ready()
    assert calls["pg"] == 2
    assert not await Readiness().ready()  # no checks yet = still starting


async def test_update_gate_bounds_concurrency_and_drains():
    gate = UpdateGate(limit=2)
    running, peak = 0, 0
    release = asyncio.Event()

    async def handler(event, data):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    tasks = [asyncio.create_task(gate(handler, object(), {})) for _ in range(5)]
    await asyncio.sleep(0.1)
    assert peak == 2 and gate.in_hand == 5
    assert not await gate.drain(0.1)
    release.set()
    assert await gate.drain(5)
    await asyncio.gather(*tasks)
    assert peak == 2 and gate.in_hand == 0


async def test_pool_acquire_and_command_timeouts(pg_dsn):
    pool = await create_pool(pg_dsn, min_size=1, max_size=1, acquire_timeout=0.3, command_timeout=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.fetchval("SELECT pg_sleep(3)")
        assert time.monotonic() - t0 < 2
        async with pool.acquire():  # the only connection is taken: the next caller waits 0.3 s, then fails
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await pool.fetchval("SELECT 1")
            assert 0.2 < time.monotonic() - t0 < 2
        assert await pool.fetchval("SELECT 1") == 1
        assert isinstance(pool, asyncpg.Pool)
    finally:
        await pool.close()


async def test_probe_follows_readiness():
    from imagegen.health import start_internal_server
    from imagegen.probe import main, probe

    async def ok() -> None:
        return None

    readiness = Readiness({"postgres": ok}, cache_seconds=0)
    port = free_port()
    runner = await start_internal_server("127.0.0.1", port, readiness)
    try:
        assert await asyncio.to_thread(probe, port) and await asyncio.to_thread(probe, port, "/healthz")
        readiness.draining = True
        assert not await asyncio.to_thread(probe, port)
        assert await asyncio.to_thread(probe, port, "/healthz")  # alive while stopping
    finally:
        await runner.cleanup()
    assert not await asyncio.to_thread(probe, port)  # nothing listens
    assert main(["not-a-port"]) == 2
