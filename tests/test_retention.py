"""Data retention: the purge deletes terminal jobs and idle conversation state older than
RETENTION_DAYS, never a job that is not terminal; it runs as RetentionWorkflow on the worker, started by
the Temporal Schedule that ensure_schedule keeps (visible in the UI under Schedules)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio.client import ScheduleActionStartWorkflow, ScheduleIntervalSpec

from imagegen.retention import (
    PURGE_EVERY,
    TERMINAL_STATES,
    RetentionInput,
    RetentionResult,
    ensure_schedule,
)
from workflows.retention import RetentionWorkflow

NON_TERMINAL = ("created", "submitted", "success")


async def insert_job(pool, state: str, age_days: float, *, locked: bool = False) -> str:
    job_id = f"ret-{uuid.uuid4().hex[:12]}"
    await pool.execute(
        """INSERT INTO generation_jobs (id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio, state,
                                        delivering_at, delivery_owner, updated_at, created_at)
           VALUES ($1, 'zimage-' || $1, 1, 1, 'zimage', 'a private prompt', '1:1', $2,
                   CASE WHEN $3 THEN now() END, CASE WHEN $3 THEN 'someone' END,
                   now() - make_interval(secs => $4), now() - make_interval(secs => $4))""",
        job_id, state, locked, age_days * 86400)
    return job_id


async def insert_conversation(pool, age_days: float) -> str:
    key = f"ret-{uuid.uuid4().hex[:12]}"
    await pool.execute("INSERT INTO bot_fsm_state (key, state, updated_at) VALUES ($1, 'x', now() - make_interval(secs => $2))",
                       key, age_days * 86400)
    return key


async def test_the_purge_deletes_only_old_terminal_rows(stack, pool):
    old_terminal = [await insert_job(pool, s, 40) for s in TERMINAL_STATES]
    young_terminal = [await insert_job(pool, s, 10) for s in TERMINAL_STATES]
    old_active = [await insert_job(pool, s, 400) for s in NON_TERMINAL]
    old_locked = await insert_job(pool, "delivered", 400, locked=True)
    old_conv, young_conv = await insert_conversation(pool, 31), await insert_conversation(pool, 29)

    result = await stack.client.execute_workflow(
        RetentionWorkflow.run, RetentionInput(retention_days=30, batch=2), id=f"retention-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue, result_type=RetentionResult, execution_timeout=timedelta(seconds=60))

    left = {r["id"] for r in await pool.fetch("SELECT id FROM generation_jobs WHERE id LIKE 'ret-%'")}
    assert not left & set(old_terminal), "old terminal jobs are purged"
    assert set(young_terminal) | set(old_active) | {old_locked} <= left, "nothing young or unfinished is"
    convs = {r["key"] for r in await pool.fetch("SELECT key FROM bot_fsm_state WHERE key LIKE 'ret-%'")}
    assert old_conv not in convs and young_conv in convs
    # Batches of 2 ran until one came back short; other tests' rows are never this old.
    assert result.jobs_deleted >= len(old_terminal) and result.conversations_deleted >= 1


async def test_zero_days_keeps_everything(stack, pool):
    job = await insert_job(pool, "delivered", 4000)
    result = await stack.client.execute_workflow(
        RetentionWorkflow.run, RetentionInput(retention_days=0), id=f"retention-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue, result_type=RetentionResult, execution_timeout=timedelta(seconds=60))
    assert result == RetentionResult(0, 0)
    assert await pool.fetchval("SELECT count(*) FROM generation_jobs WHERE id = $1", job) == 1


async def test_the_schedule_is_created_then_updated_and_starts_the_purge(stack, pool):
    schedule_id = f"imagegen-retention-{uuid.uuid4().hex[:8]}"
    await ensure_schedule(stack.client, stack.task_queue, 30, schedule_id=schedule_id)
    await ensure_schedule(stack.client, stack.task_queue, 45, schedule_id=schedule_id)  # a restart with new settings
    handle = stack.client.get_schedule_handle(schedule_id)
    try:
        desc = await handle.describe()
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.workflow == "RetentionWorkflow"
        assert action.task_queue == stack.task_queue
        assert desc.schedule.spec.intervals == [ScheduleIntervalSpec(every=PURGE_EVERY)]
        old = await insert_job(pool, "timeout", 60)
        await handle.trigger()  # what the hourly tick does
        for _ in range(100):
            if await pool.fetchval("SELECT count(*) FROM generation_jobs WHERE id = $1", old) == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the scheduled purge did not run")
        desc = await handle.describe()
        assert desc.info.num_actions == 1
        (run,) = desc.info.recent_actions
        assert (await stack.client.get_workflow_handle(run.action.workflow_id).describe()).workflow_type == \
            "RetentionWorkflow"
        args = (await stack.client.get_workflow_handle(run.action.workflow_id).fetch_history()).events[0]
        assert b"45" in args.workflow_execution_started_event_attributes.input.payloads[0].data  # updated days
    finally:
        await handle.delete()
