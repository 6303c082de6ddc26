"""Fault matrix, Kie callback cells, on the in-process stack: duplicate callbacks, callback + poll
race, callback lost, callback early. N generations each, concurrently."""

from __future__ import annotations

import time

import pytest

from tests.faults.matrix import N, assert_exactly_one, launch, status_texts, statuses, tally, telegram_calls

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
                      extra=lambda: {**kie_counts(s.kie), "sendPhoto": telegram_calls(s.tg, "sendPhoto")})
    assert_exactly_one(rec)
    assert rec["extra"]["callbacks_2xx"] == 3 * N, "every duplicate must be acknowledged (no Kie retries)"
    assert rec["extra"]["sendPhoto"] == N
    assert status_texts(s.tg, gens) == {"done": N}


async def test_callback_and_poll_race(fstack):
    s = fstack
    # The poll interval equals the generation time, so a poll sees success as the callback lands.
    s.kie.delay = 0.4
    s.kie.callback_delay = 0.05
    s.poll_schedule = [(10.0, 0.4)]
    t0 = time.monotonic()
    gens = await launch(s, N)
    await s.kie.wait_for_callbacks(N, timeout=60)

    async def extra():
        st = await statuses(gens)
        return {**kie_counts(s.kie), "sendPhoto": telegram_calls(s.tg, "sendPhoto"),
                "signals": sum(x["callbacks"] for x in st), "polls": sum(x["polls"] for x in st)}

    rec = await tally("callback + poll race", "poll every 0.4 s, task 0.4 s", gens, s.tg, s.dsn, started=t0,
                      extra=extra)
    assert_exactly_one(rec)
    assert rec["extra"]["sendPhoto"] == N


async def test_callback_lost(fstack):
    s = fstack
    s.kie.lose_callback = True
    t0 = time.monotonic()
    gens = await launch(s, N)
    rec = await tally("callback lost", "no callback, polling", gens, s.tg, s.dsn, started=t0,
                      extra=lambda: {**kie_counts(s.kie), "sendPhoto": telegram_calls(s.tg, "sendPhoto")})
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
