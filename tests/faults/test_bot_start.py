"""Fault matrix, between the bot and Temporal: a request is never lost.

* bot crash between admit and start: the bot has inserted the job (the user's "⏳" is showing) and
  dies before its start_workflow reaches Temporal (held in a TCP proxy, then the bot is SIGKILLed).
  Another bot process's sweep finds the 'created' rows with no workflow and starts them.
* ambiguous start: Temporal accepts the start but the answer does not come back in time (held in the
  proxy past the start's rpc timeout). The bot describes the workflow before it reports a failure:
  the user never sees "❌" for a generation that runs and delivers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from imagegen.launch import workflow_exists
from tests.faults.matrix import N, assert_exactly_one, job_rows, status_texts, tally
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
SWEEP = "2"  # UNSTARTED_SWEEP_SECONDS of the bots here (default 30)


async def users_through_a_held_proxy(ps, direction: str) -> tuple:
    """A worker, and a bot that reaches Temporal through a proxy holding `direction`; N users tap
    the ratio button. Returns (proxy, bot, generations, t0) once every job row is in Postgres."""
    ps.kie.delay = 0.5
    await ps.start_worker()
    host, port = ps.temporal_address.rsplit(":", 1)
    proxy = await TcpProxy(host, int(port)).start()
    bot = await ps.start_bot("bot-proxied", TEMPORAL_ADDRESS=proxy.address, UNSTARTED_SWEEP_SECONDS=SWEEP)
    t0 = time.monotonic()
    proxy.hold(direction)
    gens = list(await asyncio.gather(*(ps.user_generation(prompt=f"request {i}", started=False) for i in range(N))))
    return proxy, bot, gens, t0


async def test_bot_crash_between_admit_and_start(procstack):
    ps = await procstack("bot-crash-admit")
    proxy, bot, gens, t0 = await users_through_a_held_proxy(ps, "up")  # nothing the bot sends reaches Temporal
    try:
        await asyncio.sleep(1.0)  # every handler is inside start_workflow, its request held
        rows = await job_rows(ps.dsn, [g.job_id for g in gens])
        created_at_kill = sum(r["state"] == "created" for r in rows.values())
        no_workflow = sum([await workflow_exists(ps.client, g.handle.id) is False for g in gens])
        bot.kill()
        await bot.wait(10)
        await proxy.cut()  # the held start requests die with the bot's connection
        ps.retire_bot(bot)
        t_kill = time.monotonic()
        await ps.start_bot("bot-next", UNSTARTED_SWEEP_SECONDS=SWEEP)
        rec = await tally("bot crash between admit and start", "bot SIGKILLed inside start_workflow", gens, ps.tg,
                          ps.dsn, started=t0, timeout=120,
                          extra=lambda: {"created_at_kill": created_at_kill, "no_workflow_at_kill": no_workflow,
                                         "sweep_s": float(SWEEP),
                                         "all_done_after_kill_s": round(time.monotonic() - t_kill, 1),
                                         "bot-next.SWEEP_STARTED": ps.procs[-1].count("SWEEP_STARTED")})
        assert created_at_kill == N and no_workflow == N, rec["extra"]
        assert_exactly_one(rec)
        assert rec["extra"]["bot-next.SWEEP_STARTED"] == N
        assert status_texts(ps.tg, gens) == {"done": N}
    finally:
        await proxy.stop()


async def test_ambiguous_start(procstack):
    ps = await procstack("ambiguous-start")
    proxy, bot, gens, t0 = await users_through_a_held_proxy(ps, "down")  # Temporal acts; its answers are held
    try:
        # Past the start's rpc timeout (10 s): every start has failed on the bot's side by now.
        await asyncio.sleep(11.0)
        started_on_server = sum([await workflow_exists(ps.client, g.handle.id) is True for g in gens])
        proxy.release()
        rec = await tally("ambiguous start", "start accepted, answer held past the rpc timeout", gens, ps.tg, ps.dsn,
                          started=t0, timeout=120,
                          extra=lambda: {"started_on_server": started_on_server,
                                         "bot.JOB_START_AMBIGUOUS": bot.count("JOB_START_AMBIGUOUS"),
                                         "bot.JOB_START_FAILED": bot.count("JOB_START_FAILED")})
        assert started_on_server == N, rec["extra"]
        assert_exactly_one(rec)
        assert rec["user_errors"] == {0: N}, f"a failure was reported for a generation that runs: {rec}"
        assert status_texts(ps.tg, gens) == {"done": N}
    finally:
        await proxy.stop()
