"""Fault matrix, Kie cells, on the in-process stack: the generation fails (the user is told once),
recordInfo answers 5xx / 429 for a while (delivered anyway) or for good (timeout, told once), and
polling backs off while recordInfo fails."""

from __future__ import annotations

import statistics
import time
import uuid

import pytest
import pytest_asyncio

from imagegen.ratelimits import KIE_CREATE, RateLimit
from tests.faults.matrix import N, assert_exactly_one, assert_none_delivered, launch, status_texts, tally
from tests.faults.sims import FaultKie, FaultTelegram
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
INTERVAL = 0.3


def poll_counts(kie) -> dict:
    per_task = list(kie.record_info_calls.values()) or [0]
    return {"recordInfo": sum(per_task), "recordInfo_max_per_task": max(per_task)}


def gap_growth(kie) -> tuple[float, float]:
    """Median over tasks of the first gap between recordInfo calls, and of the largest gap."""
    firsts, largest = [], []
    for times in kie.record_info_times.values():
        gaps = [b - a for a, b in zip(times, times[1:])]
        if len(gaps) >= 2:
            firsts.append(gaps[0])
            largest.append(max(gaps))
    return (statistics.median(firsts) if firsts else 0.0), (statistics.median(largest) if largest else 0.0)


async def test_kie_generation_fails(fstack):
    s = fstack
    s.kie.fail = True
    t0 = time.monotonic()
    gens = await launch(s, N)
    rec = await tally("Kie fail / 5xx / 429", "generation fails", gens, s.tg, s.dsn, started=t0, expect="fail",
                      settle=1.0, extra=lambda: {**poll_counts(s.kie), "callbacks": len(s.kie.callbacks)})
    assert_none_delivered(rec, "fail", errors_per_user=1)
    assert rec["outcomes"] == {"failed": N}
    assert status_texts(s.tg, gens) == {"❌": N}


@pytest.mark.parametrize("code", [500, 429])
async def test_kie_record_info_errors_then_recovers(fstack, code):
    s = fstack
    s.kie.record_info_errors = [code] * (2 * N)  # the first 2N recordInfo calls fail, then Kie recovers
    t0 = time.monotonic()
    gens = await launch(s, N)
    rec = await tally("Kie fail / 5xx / 429", f"recordInfo {code} x{2 * N}, then ok", gens, s.tg, s.dsn, started=t0,
                      extra=lambda: {**poll_counts(s.kie), "callbacks": len(s.kie.callbacks)})
    assert_exactly_one(rec)
    assert status_texts(s.tg, gens) == {"done": N}


@pytest.mark.parametrize("code", [500, 429])
async def test_kie_record_info_down(fstack, code):
    s = fstack
    s.kie.record_info_errors = [code] * 100_000  # recordInfo never answers well again
    s.kie.lose_callback = True  # only the timer wakes the workflows: the gaps show the backoff
    s.poll_schedule = [(12.0, INTERVAL)]
    t0 = time.monotonic()
    gens = await launch(s, N)

    def extra():
        first, largest = gap_growth(s.kie)
        return {**poll_counts(s.kie), "schedule_interval_s": INTERVAL, "first_gap_s": round(first, 2),
                "largest_gap_s": round(largest, 2), "flat_schedule_polls": int(12 / INTERVAL)}

    rec = await tally("Kie fail / 5xx / 429", f"recordInfo {code} for good → timeout", gens, s.tg, s.dsn,
                      started=t0, expect="timeout", settle=1.0, extra=extra)
    assert_none_delivered(rec, "timeout", errors_per_user=1)
    assert status_texts(s.tg, gens) == {"⌛": N}
    e = rec["extra"]
    # Backing off: the gap grows from the schedule's 0.3 s up to ×16, so far fewer calls than 12 / 0.3 = 40.
    assert e["largest_gap_s"] >= 8 * INTERVAL and e["largest_gap_s"] > 2 * e["first_gap_s"], e
    assert e["recordInfo_max_per_task"] <= 10, e


@pytest_asyncio.fixture
async def paced_fstack(temporal_env, pg_dsn, pool, mode):
    """fstack with Kie's createTask window paced (imagegen/pacer.py), as in production."""
    s = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue=f"paced-{uuid.uuid4().hex[:10]}",
              delivery_mode=mode, kie_create_limit=RateLimit(20, 10.0))
    s.kie = FaultKie(api_key="test-kie-key")
    s.tg = FaultTelegram(token=s.tg.token)
    s.tg.delivery_mode = mode
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
        await pool.execute("DELETE FROM rate_slots WHERE name = $1", KIE_CREATE)


async def test_kie_slow_create_answer_after_a_paced_wait_makes_one_task(paced_fstack, pool):
    """Issue 19.1: Kie's window is full for ~19 s (the longest wait a createTask attempt takes), then
    Kie answers createTask 24 s late. The call must still fit in the attempt (its timeout comes from
    what is left of it): otherwise Temporal times the attempt out and the retry creates a second,
    paid Kie task."""
    s = paced_fstack
    assert N <= 20  # one window's worth: every generation gets the same ~19 s wait
    await pool.execute("DELETE FROM rate_slots WHERE name = $1", KIE_CREATE)
    await pool.execute("INSERT INTO rate_slots (name, at) SELECT $1, now() + interval '9 s'"
                       " FROM generate_series(1, 20)", KIE_CREATE)
    s.kie.create_latency = 24.0
    t0 = time.monotonic()
    gens = await launch(s, N)
    rec = await tally("Kie fail / 5xx / 429", "createTask answers 24 s late after a 19 s paced wait", gens, s.tg,
                      s.dsn, started=t0, timeout=150,
                      extra=lambda: {"createTask_calls": s.kie.create_calls, "kie_tasks": len(s.kie.tasks)})
    assert_exactly_one(rec)
    assert rec["extra"]["kie_tasks"] == N and rec["extra"]["createTask_calls"] == N, rec["extra"]
    assert status_texts(s.tg, gens) == {"done": N}
