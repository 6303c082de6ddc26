"""Fault matrix, restart cells: the database or the Temporal dev server restarts while generations
are in flight. Each cell runs its OWN server (fixed port, persistent data under .run/faults/<name>-<pid>/), so
the session-wide ones of tests/conftest.py are never disturbed; worker.py and bot.py are real
subprocesses pointed at it."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.matrix import (N, assert_exactly_one, fresh_dir, launch, own_postgres, status_texts, stop_postgres,
                                 tally)
from tests.support.services import EmbeddedPostgres, TemporalDevServer, free_port

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


async def staggered(ps, n: int, every: float) -> list:
    gens = []
    for _ in range(n):
        gens += await launch(ps, 1)
        await asyncio.sleep(every)
    return gens


def restart_postgres(pg: EmbeddedPostgres, down_seconds: float) -> float:
    """Fast shutdown (SIGINT: clients are disconnected), stay down, start again on the same port/data."""
    t0 = time.monotonic()
    stop_postgres(pg)
    time.sleep(down_seconds)
    pg.start()
    return time.monotonic() - t0


async def test_postgres_restart(procstack):
    async with own_postgres("postgres-restart") as pg:
        ps = await procstack("postgres-restart", dsn=pg.dsn)
        ps.kie.delay = 1.0
        workers = [await ps.start_worker()]
        await ps.start_bot()
        t0 = time.monotonic()
        # Generations keep coming for 3 s; the database goes away 1.5 s in, for 2 s: the restart hits
        # every phase (job insert, task id, poll result, delivery lock, delivered mark, final status).
        starting = asyncio.create_task(staggered(ps, N, 0.15))
        await asyncio.sleep(1.5)
        outage = await asyncio.to_thread(restart_postgres, pg, 2.0)
        gens = await starting
        rec = await tally("Postgres restart", "fast shutdown, 2 s down, mid-run", gens, ps.tg, ps.dsn, started=t0,
                          timeout=150,
                          extra=lambda: {"outage_s": round(outage, 1),
                                         "activity_failures": sum(w.count("Completing activity as failed")
                                                                  for w in workers),
                                         "worker_alive": all(w.alive for w in workers)})
        assert_exactly_one(rec)
        assert rec["extra"]["worker_alive"]
        assert status_texts(ps.tg, gens) == {"done": N}


async def test_postgres_restart_between_accept_and_commit(procstack):
    """Telegram has accepted all N photos; the database is down when their answers reach the worker.
    The worker is alive and knows every message id: it must record them, not send them again.
    (Finding F1 of the first matrix run; fixed in the deliver activity.)"""
    async with own_postgres("postgres-restart-commit") as pg:
        ps = await procstack("postgres-restart-commit", dsn=pg.dsn, lease_seconds=8)
        ps.kie.delay = 0.5
        ps.tg.hold_photos = "after"  # accepted by Telegram, the answer held back...
        workers = [await ps.start_worker()]
        await ps.start_bot()
        t0 = time.monotonic()
        gens = await launch(ps, N)
        await ps.tg.wait_for(lambda: ps.tg.held >= N, timeout=60)
        # ...the database goes down, the answers reach the worker, the database comes back 2 s later.
        t_down = time.monotonic()
        await asyncio.to_thread(stop_postgres, pg)
        ps.tg.hold_photos = None
        ps.tg.release.set()
        await asyncio.sleep(2.0)
        await asyncio.to_thread(pg.start)
        outage = time.monotonic() - t_down
        rec = await tally("Postgres restart", "between Telegram's accept and the commit", gens, ps.tg, ps.dsn,
                          started=t0, timeout=150,
                          extra=lambda: {"outage_s": round(outage, 1),
                                         "marked_first_try": sum(w.log().count("MARK_DELIVERED") for w in workers),
                                         "worker_alive": all(w.alive for w in workers)})
        assert_exactly_one(rec)
        assert status_texts(ps.tg, gens) == {"done": N}


async def test_temporal_restart(procstack):
    work = fresh_dir("temporal-restart-data")
    server = TemporalDevServer(port=free_port(), db_file=str(work / "temporal.db"), log_path=str(work / "temporal.log"))
    await asyncio.to_thread(server.start)
    try:
        ps = await procstack("temporal-restart", address=server.address)
        ps.kie.delay = 5.0  # the generations wait for Kie, and Kie calls back, while the server is away
        ps.kie.callback_retries = 3
        ps.kie.callback_retry_delay = 1.0
        workers = [await ps.start_worker()]
        bots = [await ps.start_bot()]
        t0 = time.monotonic()
        gens = await staggered(ps, N, 0.05)
        await ps.tg.wait_for(lambda: len(ps.kie.tasks) >= N, timeout=60)  # every Kie task created
        t_down, wall_down = time.monotonic(), time.time()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(4.0)
        await asyncio.to_thread(server.start)  # same port, same database file
        outage, wall_up = time.monotonic() - t_down, time.time()
        rec = await tally("Temporal restart", "dev server restarted (persistent db), callbacks during the outage", gens, ps.tg, ps.dsn,
                          started=t0, timeout=180,
                          extra=lambda: {"outage_s": round(outage, 1), "callbacks": len(ps.kie.callbacks),
                                         "callbacks_2xx": sum(c.ok for c in ps.kie.callbacks),
                                         "callbacks_sent_while_down": sum(wall_down <= c.time <= wall_up
                                                                          for c in ps.kie.callbacks),
                                         "bot_signal_failed": sum(b.count("CALLBACK_SIGNAL_FAILED") for b in bots),
                                         "worker_alive": all(w.alive for w in workers)})
        assert_exactly_one(rec)
        assert rec["extra"]["worker_alive"]
        assert rec["extra"]["callbacks_sent_while_down"] > 0, "the outage must overlap the callbacks"
        assert status_texts(ps.tg, gens) == {"done": N}
    finally:
        await asyncio.to_thread(server.stop)
