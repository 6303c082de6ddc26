"""Fault matrix, Kie callback cells, on the in-process stack: duplicate callbacks, callback + poll
race, callback lost, callback early. N generations each, concurrently."""

from __future__ import annotations

import time

import pytest

from tests.faults.matrix import (N, assert_exactly_one, launch, photo_method, status_texts, statuses, tally,
                                 telegram_calls)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

SLOW = [(30.0, 10.0)]  # polling too slow to matter: the callbacks must drive the workflows


def kie_counts(kie) -> dict:
    return {"callbacks": len(kie.callbacks), "callbacks_2xx": sum(c.ok for c in kie.callbacks),
            "recordInfo": sum(kie.record_info_calls.values())}


@pytest.mark.parametrize("variant", ["concurrent", "spread"])
async def test_duplicate_callbacks(fstack, variant):
    s = fstack
    s.kie.duplicate_callbacks = 3
    s.kie.duplicates_concurrent = variant == "concurrent"
    s.kie.duplicate_spacing = 0.4  # spread over the poll, the delivery and the final status
    s.poll_schedule = SLOW
    t0 = time.monotonic()
    gens = await launch(s, N)
    await s.kie.wait_for_callbacks(3 * N, timeout=60)
    rec = await tally("duplicate callbacks", f"3x {variant}", gens, s.tg, s.dsn, started=t0,
                      extra=lambda: {**kie_counts(s.kie), "photo_calls": telegram_calls(s.tg, photo_method(s.tg))})
    assert_exactly_one(rec)
    assert rec["extra"]["callbacks_2xx"] == 3 * N, "every duplicate must be acknowledged (no Kie retries)"
    assert rec["extra"]["photo_calls"] == N
    assert status_texts(s.tg, gens) == {"done": N}


async def test_callback_and_poll_race(fstack):
    s = fstack
    # The timer poll goes out at ~1.5 s (the dev server's timers fire up to a few hundred ms late) and
    # takes 1 s; the task succeeds at 2 s and its callback lands while that poll is still running:
    # both paths see success for the same generation.
    s.kie.delay = 2.0
    s.kie.record_info_latency = 1.0
    s.poll_schedule = [(10.0, 1.5)]
    t0 = time.monotonic()
    gens = await launch(s, N)
    await s.kie.wait_for_callbacks(N, timeout=60)

    async def extra():
        st = await statuses(gens)
        raced = sum(s.kie.callback_during_success_poll(task_id) for task_id in s.kie.tasks)
        return {**kie_counts(s.kie), "photo_calls": telegram_calls(s.tg, photo_method(s.tg)),
                "signals": sum(x["callbacks"] for x in st), "polls": sum(x["polls"] for x in st),
                "callback_during_success_poll": raced}

    rec = await tally("callback + poll race", "callback lands during the poll that sees success", gens, s.tg,
                      s.dsn, started=t0, extra=extra)
    assert_exactly_one(rec)
    assert rec["extra"]["photo_calls"] == N
    assert rec["extra"]["callback_during_success_poll"] >= N // 2, "the race did not happen often enough to prove anything"


async def test_callback_lost(fstack):
    s = fstack
    s.kie.lose_callback = True
    t0 = time.monotonic()
    gens = await launch(s, N)
    rec = await tally("callback lost", "no callback, polling", gens, s.tg, s.dsn, started=t0,
                      extra=lambda: {**kie_counts(s.kie), "photo_calls": telegram_calls(s.tg, photo_method(s.tg))})
    assert_exactly_one(rec)
    assert rec["extra"]["callbacks"] == 0


async def test_callback_early(fstack):
    s = fstack
    s.kie.callback_before_create_response = True  # the callback is in before createTask answers
    s.poll_schedule = SLOW
    t0 = time.monotonic()
    gens = await launch(s, N)
    st = []

    async def extra():
        st.extend(await statuses(gens))
        return {**kie_counts(s.kie), "polls": sum(x["polls"] for x in st)}

    rec = await tally("callback early", "before the task id is stored", gens, s.tg, s.dsn, started=t0, extra=extra)
    assert_exactly_one(rec)
    # Woken by the early callback: one recordInfo each, long before the 10 s timer.
    assert all(x["polls"] == 1 for x in st), st
    assert rec["seconds"] < 10
