"""Global rate limits (issue 9): the Kie simulator's limits knob, the queue-rate arithmetic, and two
real worker.py processes that together never exceed Kie's createTask limit.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from imagegen.contracts import GENERATION_SHAPE, LEAN_SHAPE, LOCAL_CREATE_SHAPE
from imagegen.i18n import t
from imagegen.pacer import Pacer
from imagegen.ratelimits import (KIE_CREATE, KIE_INFO, TELEGRAM, TELEGRAM_CALLS_PER_TASK, RateLimit, paced_worst,
                               worst_in_window)
from imagegen.settings import Settings, SettingsError
from tests.support.kie_limits import LimitedKieSimulator, max_in_window
from tests.support.procstack import ProcStack


BASE_ENV = {"TELEGRAM_BOT_TOKEN": "1:x", "KIE_API_KEY": "k", "PUBLIC_BASE_URL": "http://a", "CALLBACK_SECRET": "c"}


def test_queue_rate_keeps_the_token_bucket_worst_case_inside_the_limit():
    # Worst case of Temporal's limiter in a window: ceil(rate) + 1 at once, then `rate` per second.
    for text, rate in (("20/10", 1.7), ("10/1", 4.0), ("30/1", 14.0)):
        limit = RateLimit.parse(text)
        assert limit.queue_rate == rate
        assert -(-rate // 1) + 1 + rate * limit.window <= limit.count
    assert RateLimit.parse("off").queue_rate is None
    # createTask, recordInfo and Telegram's sends are paced exactly in Postgres (issue 18: the lean shape's
    # poll is a local activity and the Telegram activities run on the workflow's queue, which no queue
    # limiter sees); a paced kind's queue limit is a ceiling that lets the provider's burst out. (The
    # Telegram queue of older workflows keeps its call-counting rate: Settings.queue_rate, next test.)
    assert RateLimit.parse("20/10").rate_for(KIE_CREATE) == 6.0
    assert RateLimit.parse("10/1").rate_for(KIE_INFO) == 30.0 and RateLimit.parse("30/1").rate_for(TELEGRAM) == 90.0
    assert RateLimit.parse("off").rate_for(KIE_CREATE) is None
    for bad in ("20", "a/b", "-1/1", "2/10"):
        with pytest.raises(ValueError):
            RateLimit.parse(bad)
    assert Settings.from_env({**BASE_ENV, "KIE_CREATE_LIMIT": "off"}).kie_create_limit.unlimited
    with pytest.raises(SettingsError, match="KIE_CREATE_LIMIT"):
        Settings.from_env({**BASE_ENV, "KIE_CREATE_LIMIT": "20"})


def test_the_telegram_queue_counts_bot_api_calls_not_activities():
    """Issue 19.5: a delivery sends the picture and edits the status to ✅ (2 calls), and every
    recordInfo poll may edit the "generating" status (1 call): together, in any window, at most
    TELEGRAM_SEND_LIMIT calls. The polls are paced in Postgres (at most `count` per window: 10 in a
    second with the defaults), so that many calls are set aside."""
    settings = Settings.from_env(BASE_ENV)
    tg, info = settings.telegram_send_limit, settings.kie_record_info_limit
    tg_rate = settings.queue_rate(TELEGRAM)
    assert (tg.count, tg.window, paced_worst(info, tg.window)) == (30, 1.0, 10)
    assert paced_worst(RateLimit.parse("20/10"), 1.0) == 20 and paced_worst(RateLimit.parse("10/1"), 2.5) == 30
    calls = TELEGRAM_CALLS_PER_TASK * worst_in_window(tg_rate, tg.window) + paced_worst(info, tg.window)
    assert calls <= tg.count, (tg_rate, calls)
    assert tg_rate == 4.0  # the largest such rate in steps of 0.1/s: 4.1 would allow 2 × 10.1 + 10 > 30
    assert TELEGRAM_CALLS_PER_TASK * worst_in_window(4.1, 1.0) + 10 > 30
    # (counting activities, as before issue 19, the queue ran at 14/s: 2 × 29 + 10 = 68 calls in a second)
    assert TELEGRAM_CALLS_PER_TASK * worst_in_window(tg.queue_rate, tg.window) + 10 > tg.count
    # a limit that leaves nothing for deliveries is refused at start, naming the setting
    with pytest.raises(SettingsError, match="TELEGRAM_SEND_LIMIT"):
        Settings.from_env({**BASE_ENV, "TELEGRAM_SEND_LIMIT": "12/1"})
    # without a recordInfo limit the polls' edits cannot be bounded: the calls of the queue are
    assert Settings.from_env({**BASE_ENV, "KIE_RECORD_INFO_LIMIT": "off"}).queue_rate(TELEGRAM) == 7.0
    assert Settings.from_env({**BASE_ENV, "TELEGRAM_SEND_LIMIT": "off"}).queue_rate(TELEGRAM) is None


async def _create(session, kie, i):
    body = {"model": "z-image", "input": {"prompt": f"p{i}", "aspect_ratio": "1:1"}}
    async with session.post(f"{kie.base_url}/api/v1/jobs/createTask", json=body,
                            headers={"Authorization": f"Bearer {kie.api_key}"}) as r:
        return r.status, await r.json()


async def test_kie_simulator_enforces_kies_limits_only_when_asked():
    async with LimitedKieSimulator(api_key="k") as kie, aiohttp.ClientSession() as s:
        answers = [await _create(s, kie, i) for i in range(25)]
        assert all(status == 200 for status, _ in answers)  # off by default
        kie.enforce_limits = True
        answers = [await _create(s, kie, i) for i in range(25)]
        assert [status for status, _ in answers].count(200) == 20
        refused = [body for status, body in answers if status == 429]
        assert len(refused) == 5 and all(b["code"] == 429 and "Rate limited" in b["msg"] for b in refused)
        assert kie.refused["createTask"] == 5
        task_id = answers[0][1]["data"]["taskId"]
        statuses = []
        for _ in range(12):
            async with s.get(f"{kie.base_url}/api/v1/jobs/recordInfo", params={"taskId": task_id},
                             headers={"Authorization": "Bearer k"}) as r:
                statuses.append(r.status)
        assert statuses.count(200) == 10 and statuses.count(429) == 2
        await asyncio.sleep(1.05)  # recordInfo's window is one second
        async with s.get(f"{kie.base_url}/api/v1/jobs/recordInfo", params={"taskId": task_id},
                         headers={"Authorization": "Bearer k"}) as r:
            assert r.status == 200


async def test_the_pacer_keeps_an_exact_window_across_pools_and_gives_back_far_slots(pg_dsn):
    """Two pools (as two worker processes would have) share one window of 5 calls per 0.5 s: 15 calls
    at once go out as 5 at once, then 5 after one window, then 5 after two; never 6 in a window. A slot
    further away than the caller may wait is not taken (and not counted)."""
    import asyncpg

    name = f"test-{time.monotonic_ns()}"
    limit = RateLimit(5, 0.5)
    pools = [await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4) for _ in range(2)]
    try:
        pacers = [Pacer(p, name, limit, margin=0.05) for p in pools]
        went: list[float] = []

        async def call(i: int) -> None:
            taken, delay = await pacers[i % 2].reserve(max_wait=5.0)
            assert taken
            await asyncio.sleep(delay)
            went.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*(call(i) for i in range(15)))
        assert max_in_window(went, 0.5) <= 5
        offsets = sorted(w - started for w in went)
        assert offsets[4] < 0.4 and offsets[5] >= 0.5 and offsets[10] >= 1.05  # the whole burst used, then paced
        assert offsets[-1] < 2.5
        # The next five slots are ~0.55 s away: a caller that may wait 0.1 s is told so, and takes none.
        count = "SELECT count(*) FROM rate_slots WHERE name = $1 AND at > clock_timestamp() - interval '0.5 s'"
        before = await pools[0].fetchval(count, name)
        taken, delay = await pacers[0].reserve(max_wait=0.1)
        assert not taken and 0.1 < delay <= 0.6
        assert await pools[0].fetchval(count, name) == before == 5
    finally:
        for p in pools:
            await p.close()


async def test_the_workers_telegram_sends_keep_one_window_across_processes(pg_dsn):
    """Telegram's send limit in Postgres (imagegen/telegram_pacing.py): two Bots with their own pools
    (as two worker processes have) share one window, here 5 sends per 0.5 s. 18 sends and edits at
    once reach the simulator never more than 5 in a window, the whole burst used; reading calls
    (getMe) are not paced; a send whose slot is further away than it may wait fails as Telegram's
    flood control would (TelegramRetryAfter with the wait) without reaching Telegram, and the pacer
    runs before the counting middleware, so such a refusal is not counted as Telegram's."""
    import asyncpg
    from aiogram.exceptions import TelegramRetryAfter

    from imagegen.delivery import create_bot
    from imagegen.telegram_pacing import PacingMiddleware
    from tests.support.telegram_sim import TelegramSimulator

    name = f"tg-test-{time.monotonic_ns()}"
    limit = RateLimit(5, 0.5)
    tg = TelegramSimulator(token=f"{time.monotonic_ns() % 10**9}:PACING")
    await tg.start()
    pools = [await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4) for _ in range(2)]
    bots = [create_bot(tg.token, tg.base_url, pacing=PacingMiddleware(Pacer(p, name, limit, margin=0.05), max_wait=5.0))
            for p in pools]
    try:
        assert [type(m).__name__ for m in bots[0].session.middleware] == ["PacingMiddleware", "CountingMiddleware"]
        sent = [await bots[0].send_message(1000 + i, f"status {i}") for i in range(2)]
        await asyncio.sleep(0.6)  # an empty window
        tg.calls.clear()
        started = time.time()
        await asyncio.gather(*(bots[i % 2].send_message(2000 + i, f"hello {i}") for i in range(16)),
                             *(bots[i % 2].edit_message_text(text=f"edited {i}", chat_id=1000 + i, message_id=m.message_id)
                               for i, m in enumerate(sent)),
                             *(bots[i % 2].get_me() for i in range(2)))
        sends = [c.time for c in tg.calls if c.method in ("sendMessage", "editMessageText")]
        assert len(sends) == 18
        assert max_in_window(sends, 0.5) <= 5
        offsets = sorted(t - started for t in sends)
        assert offsets[4] < 0.4 and offsets[5] >= 0.45  # the window's whole count at once, then the next window
        first_get_me = min(c.time for c in tg.calls if c.method == "getMe") - started
        assert first_get_me < 0.4  # not queued behind the sends
        # The window is full for the next ~0.5 s: a send that may wait 0.1 s is refused before Telegram.
        await asyncio.sleep(0.6)
        await asyncio.gather(*(bots[0].send_message(3000 + i, "fill") for i in range(5)))  # 5 at one instant
        impatient = create_bot(tg.token, tg.base_url,
                               pacing=PacingMiddleware(Pacer(pools[1], name, limit, margin=0.05), max_wait=0.1))
        try:
            before = len(tg.calls)
            with pytest.raises(TelegramRetryAfter) as refused:
                await impatient.send_message(4000, "too soon")
            assert refused.value.retry_after >= 1 and len(tg.calls) == before
        finally:
            await impatient.session.close()
    finally:
        for b in bots:
            await b.session.close()
        for p in pools:
            await p.close()
        await tg.stop()


def test_max_in_window():
    assert max_in_window([0, 0.5, 9.9, 10.0, 10.1], 10) == 4  # 0.5 … 10.1
    assert max_in_window([0, 0.5, 9.9, 10.0, 10.1], 5) == 3
    assert max_in_window([], 10) == 0


N_GENERATIONS = 36


async def test_two_worker_processes_together_keep_kies_createtask_limit(temporal_env, pg_dsn):
    """36 generations at once, two worker.py processes: Kie (enforcing 20 createTask per 10 s) never
    refuses one, no 10-second window holds more than 20, both workers created tasks, and every
    generation is delivered exactly once. Kie's burst is used (the first 20 go out at once: the Postgres
    pacer, not the token bucket, keeps the window). Users whose request waited were told it is queued."""
    kie = LimitedKieSimulator(api_key="limits-kie-key")
    kie.enforce_limits = True
    ps = ProcStack(name="ratelimits", dsn=pg_dsn, temporal_address=temporal_env.client.service_client.config.target_host,
                   client=temporal_env.client, kie=kie)
    await ps.start()
    try:
        limits = dict(KIE_CREATE_LIMIT="20/10", KIE_RECORD_INFO_LIMIT="10/1", TELEGRAM_SEND_LIMIT="30/1")  # the defaults
        w1 = await ps.start_worker("worker-a", **limits)
        w2 = await ps.start_worker("worker-b", **limits)
        started = time.monotonic()
        gens = await asyncio.gather(*(ps.start_generation(prompt=f"fox {i}") for i in range(N_GENERATIONS)))
        results = await asyncio.wait_for(asyncio.gather(*(g.handle.result() for g in gens)), 120)
        wall = time.monotonic() - started

        assert [r.outcome for r in results] == ["done"] * N_GENERATIONS, ps.logs()
        assert all(len(ps.photos_for(g.chat_id)) == 1 for g in gens)
        assert kie.refused == {"createTask": 0, "recordInfo": 0}
        assert len(kie.create_times) == N_GENERATIONS
        assert max_in_window(kie.create_times, 10.0) <= 20
        assert max_in_window(kie.record_info_times, 1.0) <= 10
        # Both processes took createTask work from the one queue (the limit is the server's, not theirs).
        assert w1.count("JOB_CREATED") > 0 and w2.count("JOB_CREATED") > 0
        assert w1.count("JOB_CREATED") + w2.count("JOB_CREATED") == N_GENERATIONS
        # Kie's burst was used (the first 20 went out within a few seconds) and the rest waited for the
        # window to free: 36 tasks cannot take less than one window.
        creates = sorted(kie.create_times)
        assert creates[19] - creates[0] < 6 and creates[20] - creates[0] >= 10
        assert wall > 10
        queued = [c for c in ps.tg.calls_of("editMessageText") if c.params.get("text") == t("status.queued", "ru")]
        assert len(queued) >= N_GENERATIONS - 20  # those beyond Kie's burst waited their turn, and were told
    finally:
        await ps.stop()


async def test_a_rate_limited_confirmation_is_retried_not_left_to_the_next_poll(stack):
    """A callback's recordInfo that Kie refuses with 429 is asked again after ~1 s (jittered), not at
    the next polling tick (20 s away here), and the user never sees a failure."""
    stack.poll_schedule = [(60.0, 20.0)]
    stack.kie.record_info_errors.append(429)
    handle, job_id, chat_id = await stack.start_generation()
    started = time.monotonic()
    result = await asyncio.wait_for(handle.result(), 15)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
    assert time.monotonic() - started < 8
    task_id = (await stack.repo.get(job_id))["external_task_id"]
    assert stack.kie.record_info_calls[task_id] == 2  # the refused one and its retry
    assert (await handle.query("status"))["polls"] == 1  # one confirmation, retried inside the activity


async def test_a_kind_without_a_limit_runs_on_the_workflows_own_queue(stack):
    """The bot passes the kinds that need no rate-limited queue (Settings.direct_kinds): those whose
    limit is `off`, and Telegram, paced in Postgres by each call (imagegen/telegram_pacing.py); the
    workflow schedules those on its own task queue (eager dispatch), the others on their queues."""
    assert Settings.from_env(BASE_ENV).direct_kinds == [TELEGRAM]
    assert Settings.from_env({**BASE_ENV, "KIE_RECORD_INFO_LIMIT": "off", "TELEGRAM_SEND_LIMIT": "off"}).direct_kinds == [
        KIE_INFO, TELEGRAM]

    async def queues(direct_kinds, shape=GENERATION_SHAPE):
        handle, _, chat_id = await stack.start_generation(direct_kinds=direct_kinds, shape=shape)
        assert (await asyncio.wait_for(handle.result(), 30)).outcome == "done"
        assert len(stack.photos_for(chat_id)) == 1
        history = await handle.fetch_history()
        scheduled = {e.activity_task_scheduled_event_attributes.activity_type.name:
                     e.activity_task_scheduled_event_attributes.task_queue.name
                     for e in history.events if e.HasField("activity_task_scheduled_event_attributes")}
        local = [e for e in history.events if e.HasField("marker_recorded_event_attributes")
                 and e.marker_recorded_event_attributes.marker_name == "core_local_activity"]
        return scheduled, len(local)

    q = stack.task_queue
    # Issue 18: createTask (Kie's window has a slot), recordInfo and the delivery are local activities,
    # paced in Postgres (Telegram by every call of the worker's Bot), on no queue at all.
    assert await queues([KIE_INFO, TELEGRAM]) == ({}, 3)
    assert await queues([TELEGRAM]) == ({}, 3)  # the default limits
    # The local-create shape: the delivery on the workflow's own queue.
    assert await queues([TELEGRAM], shape=LOCAL_CREATE_SHAPE) == ({"deliver": q}, 2)
    # A bot from before the Telegram pacer (during a rollout) keeps the Telegram queue.
    assert await queues([], shape=LOCAL_CREATE_SHAPE) == ({"deliver": f"{q}-telegram"}, 2)
    # The lean shape of a bot before the local createTask: createTask on its rate-limited queue.
    assert await queues([TELEGRAM], shape=LEAN_SHAPE) == ({"create_task": f"{q}-kie-create", "deliver": q}, 1)
    # A workflow an older bot started (shape 0, during a rollout) keeps the queues it always had.
    assert await queues([KIE_INFO, TELEGRAM], shape=0) == ({"create_task": f"{q}-kie-create", "poll_task": q,
                                                            "deliver": q}, 0)
    assert await queues([], shape=0) == ({"create_task": f"{q}-kie-create", "poll_task": f"{q}-kie-info",
                                          "deliver": f"{q}-telegram"}, 0)


def test_compose_gives_the_rate_limited_queues_one_partition():
    """docker compose's Temporal server gets deploy/dynamicconfig.yaml, which pins exactly the three
    queues the worker derives from the default TEMPORAL_TASK_QUEUE to one partition."""
    import yaml

    from imagegen.ratelimits import KINDS, queue_name

    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["temporal"]
    assert compose["environment"]["DYNAMIC_CONFIG_FILE_PATH"] == "/deploy/dynamicconfig.yaml"
    assert "./deploy:/deploy:ro" in compose["volumes"]
    config = yaml.safe_load((root / "deploy" / "dynamicconfig.yaml").read_text())
    expected = {queue_name(Settings.model_fields["temporal_task_queue"].default, k) for k in KINDS}
    for key in ("matching.numTaskqueueReadPartitions", "matching.numTaskqueueWritePartitions"):
        assert {e["constraints"]["taskQueueName"] for e in config[key]} == expected
        assert all(e["value"] == 1 for e in config[key])
