"""SIGTERM during load, on the real dev server: `worker.py` (a real subprocess, as docker stops it) is
SIGTERMed while a burst of generations is in flight with photos being sent; a new worker starts at
once (a deploy). The old worker stops polling, lets its running activities finish within the graceful
shutdown and exits 0 well inside the compose stop_grace_period; the new one takes the rest; every
generation is delivered exactly once."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest_asyncio

from tests.faults.sims import FaultTelegram
from tests.support.kie_sim import KieSimulator
from tests.support.procstack import ProcStack
from worker import GRACEFUL_SHUTDOWN_SECONDS

BURST = 12


@pytest_asyncio.fixture
async def ps(temporal_env, pg_dsn):
    stack = ProcStack(name="sigterm", dsn=pg_dsn, temporal_address=temporal_env.client.service_client.config.target_host,
                      client=temporal_env.client, kie=KieSimulator(api_key="sigterm-kie-key"),
                      tg=FaultTelegram(token=f"{random.randint(10**8, 10**9)}:SIGTERM-TOKEN"))
    await stack.start()
    yield stack
    await stack.stop()


async def get(port: int, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"http://127.0.0.1:{port}{path}") as r:
            return r.status, await r.json()


def after(log: str, marker: str, event: str) -> int:
    """How many `event` lines the log has after the first `marker` line."""
    head, sep, tail = log.partition(marker)
    return tail.count(event) if sep else 0


async def test_sigterm_mid_burst_finishes_in_flight_work_and_a_new_worker_delivers_the_rest(ps):
    ps.kie.delay = 1.0
    ps.tg.photo_latency = (1.5, 2.5)  # deliveries take a while: some are in flight at SIGTERM
    old = await ps.start_worker("worker-old")
    status, body = await get(old.health_port, "/readyz")
    assert (status, body) == (200, {"ok": True})
    status, body = await get(old.health_port, "/status")
    assert body["checks"] == {"postgres": "ok", "temporal": "ok"} and not body["draining"]

    gens = [await ps.start_generation(prompt=f"burst {i}") for i in range(BURST)]
    await ps.tg.wait_for(lambda: ps.tg.sending >= 2, timeout=60)
    in_flight = ps.tg.sending
    photos_at_stop = len(ps.tg.photos)
    t0 = time.monotonic()
    old.terminate()  # what `docker compose stop` / a deploy does
    new = await ps.start_worker("worker-new")
    code = await old.wait(GRACEFUL_SHUTDOWN_SECONDS + 15)
    stopped_in = time.monotonic() - t0

    results = await asyncio.gather(*(asyncio.wait_for(g.handle.result(), 120) for g in gens))
    rows = await ps.pool.fetch("SELECT id, state, delivered_at FROM generation_jobs WHERE id = ANY($1::text[])",
                               [g.job_id for g in gens])
    per_chat = {g.chat_id: len(ps.photos_for(g.chat_id)) for g in gens}
    old_log, new_log = old.log(), new.log()
    print(f"\nSIGTERM mid-burst: {BURST} generations, {in_flight} photos in flight and {photos_at_stop} delivered "
          f"at SIGTERM; old worker exited {code} after {stopped_in:.1f} s "
          f"(DELIVER_OK after SIGTERM: {after(old_log, 'WORKER_STOPPING', 'DELIVER_OK')}); "
          f"new worker DELIVER_OK: {new_log.count('DELIVER_OK')}")

    assert code == 0, old_log[-3000:]
    assert "loop=uvloop" in old_log  # EVENT_LOOP's default: SIGTERM handled on uvloop too
    assert stopped_in < GRACEFUL_SHUTDOWN_SECONDS + 5  # inside the graceful shutdown, far below the 45 s grace
    assert all(r.outcome == "done" for r in results), results
    assert set(per_chat.values()) == {1}, per_chat  # exactly one photo per generation
    assert len(rows) == BURST and all(r["state"] == "delivered" and r["delivered_at"] for r in rows)
    # The old worker finished the deliveries it had in hand after SIGTERM instead of abandoning them…
    assert after(old_log, "WORKER_STOPPING", "DELIVER_OK") >= 1, old_log[-3000:]
    assert "WORKER_STOPPED" in old_log
    # …and the new worker took over what was left.
    assert new_log.count("DELIVER_OK") >= 1, new_log[-3000:]


async def test_temporal_down_at_start_is_retried_not_a_crash_loop_and_sigterm_still_stops(ps):
    from tests.support.services import free_port

    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    w = await ps.start_worker("worker-no-temporal", wait=False, TEMPORAL_ADDRESS=down)
    deadline = time.monotonic() + 60
    while w.log().count("TEMPORAL_UNREACHABLE") < 2:
        assert w.alive, w.log()[-3000:]
        assert time.monotonic() < deadline, w.log()[-3000:]
        await asyncio.sleep(0.2)
    lines = [line for line in w.log().splitlines() if "TEMPORAL_UNREACHABLE" in line]
    assert all(f"address={down}" in line and "retry_in=" in line for line in lines)
    assert "Traceback" not in w.log()
    assert await get(w.health_port, "/healthz") == (200, {"ok": True})  # alive…
    status, body = await get(w.health_port, "/readyz")
    assert (status, body) == (503, {"ok": False})  # …but not ready
    t0 = time.monotonic()
    w.terminate()
    assert await w.wait(10) == 0 and time.monotonic() - t0 < 5, w.log()[-3000:]
    assert "WORKER_STOPPED before Temporal answered" in w.log()
