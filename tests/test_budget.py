"""Budgets that add up: a retry loop inside an activity ends before the attempt's start_to_close,
with a margin, and heartbeats all the while (activities/budget.py). Run under temporalio's
ActivityEnvironment with a real Postgres and the Kie simulator; only the task-id write fails."""

from __future__ import annotations

import dataclasses
import time
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import budget
from activities.generation import GenerationActivities
from imagegen.contracts import CreateTaskInput
from imagegen.delivery import create_bot
from imagegen.jobs import JobRepository
from imagegen.kie import KieClient
from tests.support.kie_sim import KieSimulator
from tests.support.stack import Stack


class TaskIdWriteFails(JobRepository):
    """Postgres answers everything but the task-id write (as if it went away right after Kie answered)."""

    async def set_task_id(self, job_id: str, task_id: str) -> None:
        raise ConnectionRefusedError("connection refused")


@asynccontextmanager
async def create_task_attempt(pool, pg_dsn, temporal_env, repo: JobRepository, start_to_close: float, prefix: str,
                              **settings_overrides):
    """One createTask attempt under temporalio's ActivityEnvironment, with `start_to_close`, against a
    fresh Kie simulator: yields (kie, activities, env, input); cleans up the job row and clients."""
    async with KieSimulator(api_key="test-kie-key") as kie:
        stack = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue="unused")
        settings = stack.settings(kie_api_base=kie.base_url, **settings_overrides)
        kie_client = KieClient(kie.base_url, "test-kie-key")
        bot = create_bot("1:x", "http://127.0.0.1:9")
        acts = GenerationActivities(settings=settings, repo=repo, kie=kie_client, bot=bot)
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=start_to_close),
                                       started_time=datetime.now(timezone.utc), heartbeat_details=[])
        inp = CreateTaskInput(job_id=f"{prefix}-{int(time.time() * 1000)}", workflow_id="w", user_id=1, chat_id=1,
                              model="zimage", prompt="p", aspect_ratio="1:1", status_message_id=None)
        try:
            yield kie, acts, env, inp
        finally:
            await kie_client.close()
            await bot.session.close()
            await pool.execute("DELETE FROM generation_jobs WHERE id = $1", inp.job_id)  # no workflow will ever run it


async def test_create_task_db_retries_end_inside_start_to_close_and_heartbeat(pool, pg_dsn, temporal_env):
    start_to_close = 16.0
    async with create_task_attempt(pool, pg_dsn, temporal_env, TaskIdWriteFails(pool), start_to_close,
                                   "budget") as (kie, acts, env, inp):
        beats: list[float] = []
        env.on_heartbeat = lambda *details: beats.append(time.monotonic())
        t0 = time.monotonic()
        with pytest.raises(ApplicationError) as err:
            await env.run(acts.create_task, inp)
        elapsed = time.monotonic() - t0
    assert err.value.type == "DatabaseUnavailable"
    # Ends by itself, before Temporal's timeout would, with (about) the margin to spare...
    assert start_to_close - budget.MARGIN_SECONDS - 2.5 < elapsed < start_to_close - budget.MARGIN_SECONDS + 0.5
    # ...and never silent for long: the task id memo was heartbeated all along.
    gaps = [b - a for a, b in zip([t0] + beats, beats + [t0 + elapsed])]
    assert len(beats) >= 3 and max(gaps) < 3.0, gaps
    assert len(kie.tasks) == 1  # one paid Kie task


async def test_create_task_never_starts_a_kie_call_the_attempt_cannot_wait_for(pool, pg_dsn, temporal_env):
    """Issue 19.1: what is left of the attempt (here 9 - 5 margin - 5 for storing the id < 5 s) is
    too little for Kie's answer: no call (one cut short may still create a paid task nobody learns
    of); the task goes back to the queue."""
    async with create_task_attempt(pool, pg_dsn, temporal_env, JobRepository(pool), 9.0, "short") as (kie, acts, env, inp):
        with pytest.raises(ApplicationError) as err:
            await env.run(acts.create_task, inp)
    assert err.value.type == "KiePaced" and not err.value.non_retryable
    assert kie.create_calls == 0 and len(kie.tasks) == 0


async def test_create_task_gives_a_far_createtask_slot_back_to_the_queue(pool, pg_dsn, temporal_env):
    """Kie's window is full for longer than this attempt may wait (imagegen/pacer.py): no Kie call, no
    slot taken; the task goes back to the Temporal queue (KiePaced, benign, with a retry delay)."""
    from imagegen.ratelimits import KIE_CREATE, RateLimit

    # 20 slots 30 s from now: the next free one is ~40 s away; a 60-s attempt may wait
    # 60 - 5 (margin) - 30 (Kie's whole timeout) - 5 (storing the task id) = 20 s.
    await pool.execute("INSERT INTO rate_slots (name, at) SELECT $1, now() + interval '30 s' FROM generate_series(1, 20)",
                       KIE_CREATE)
    try:
        async with create_task_attempt(pool, pg_dsn, temporal_env, JobRepository(pool), 60.0, "paced",
                                       kie_create_limit=RateLimit(20, 10.0)) as (kie, acts, env, inp):
            with pytest.raises(ApplicationError) as err:
                await env.run(acts.create_task, inp)
        # (other tests' past slots may still be there: count the future ones, this test's 20)
        slots = await pool.fetchval("SELECT count(*) FROM rate_slots WHERE name = $1 AND at > now()", KIE_CREATE)
    finally:
        await pool.execute("DELETE FROM rate_slots WHERE name = $1", KIE_CREATE)
    assert err.value.type == "KiePaced" and not err.value.non_retryable
    assert err.value.next_retry_delay is not None and err.value.next_retry_delay >= timedelta(seconds=15)
    assert slots == 20 and len(kie.tasks) == 0


class SlowKie(KieSimulator):
    """Kie whose createTask answers only when `answer` is set (a call still on its way)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import asyncio

        self.answer = asyncio.Event()
        self.calls_in_flight = 0

    async def _create_task(self, request):
        self.calls_in_flight += 1
        await self.answer.wait()
        return await super()._create_task(request)


async def test_two_attempts_of_one_job_at_once_make_one_kie_task(pool, pg_dsn, temporal_env):
    """The local createTask's workflow task can time out while its worker, cut off from Temporal (not
    from Kie or Postgres), is still inside the Kie call, and another worker runs the attempt again. The
    job's create claim (migration 009) keeps it to one call: the second local attempt hands over (""),
    a queued one is retried later (KiePaced, benign), and once the first has stored its task id every
    attempt returns that one. Kie has no idempotency key: two calls would be two paid tasks."""
    import asyncio

    async with SlowKie(api_key="test-kie-key") as kie:
        stack = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue="unused")
        kie_client = KieClient(kie.base_url, "test-kie-key")
        bot = create_bot("1:x", "http://127.0.0.1:9")
        acts = GenerationActivities(settings=stack.settings(kie_api_base=kie.base_url), repo=JobRepository(pool),
                                    kie=kie_client, bot=bot)

        def env(local: bool) -> ActivityEnvironment:
            e = ActivityEnvironment()
            e.info = dataclasses.replace(e.info, start_to_close_timeout=timedelta(seconds=60), is_local=local,
                                         started_time=datetime.now(timezone.utc), heartbeat_details=[])
            return e

        inp = CreateTaskInput(job_id=f"claim-{int(time.time() * 1000)}", workflow_id="w", user_id=1, chat_id=1,
                              model="zimage", prompt="p", aspect_ratio="1:1", status_message_id=None, local=True)
        try:
            first = asyncio.ensure_future(env(True).run(acts.create_task, inp))
            while kie.calls_in_flight == 0:  # the first attempt is inside its Kie call
                await asyncio.sleep(0.02)
            # the rerun local attempt hands over (without the claim it would wait on a second Kie call)
            assert await asyncio.wait_for(env(True).run(acts.create_task, inp), 10) == ""
            with pytest.raises(ApplicationError) as err:  # the queued attempt comes back later
                await asyncio.wait_for(env(False).run(acts.create_task, dataclasses.replace(inp, local=False)), 10)
            assert err.value.type == "KiePaced" and not err.value.non_retryable
            assert kie.calls_in_flight == 1
            kie.answer.set()
            task_id = await asyncio.wait_for(first, 10)
            assert task_id and await env(False).run(acts.create_task, dataclasses.replace(inp, local=False)) == task_id
            assert kie.create_calls == 1 and len(kie.tasks) == 1
        finally:
            kie.answer.set()
            await kie_client.close()
            await bot.session.close()
            await pool.execute("DELETE FROM generation_jobs WHERE id = $1", inp.job_id)


async def test_a_refused_create_leaves_the_next_attempt_free_to_call(pool, pg_dsn, temporal_env):
    """The claim is given back when Kie created nothing (here a 500): the retry calls at once."""
    async with create_task_attempt(pool, pg_dsn, temporal_env, JobRepository(pool), 60.0, "release") as (kie, acts, env, inp):
        kie.create_errors.append(500)
        with pytest.raises(ApplicationError) as err:
            await env.run(acts.create_task, inp)
        assert err.value.type == "KieUnavailable"
        task_id = await env.run(acts.create_task, inp)
        assert task_id and kie.create_calls == 2 and len(kie.tasks) == 1
