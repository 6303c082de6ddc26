"""Data retention: prompts, result links and conversation state are personal data, kept for
RETENTION_DAYS after they were last touched, then deleted.

Only terminal jobs are ever deleted (TERMINAL_STATES: the generation is over, nothing will read or
write the row again); a job still created/submitted/success, or one whose delivery lock is held,
stays whatever its age. Rows go in batches of `batch` so that no statement holds many row locks for
long. :func:`ensure_schedule` (called by every worker at start) keeps the Temporal Schedule
SCHEDULE_ID that starts RetentionWorkflow (workflows/retention.py) every PURGE_EVERY; it shows in
the Temporal UI under Schedules. The activity is activities/retention.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

log = logging.getLogger("imagegen.retention")
SCHEDULE_ID = "imagegen-retention"
PURGE_EVERY = timedelta(hours=1)
WORKFLOW_NAME = "RetentionWorkflow"


@dataclass
class RetentionInput:
    retention_days: int
    batch: int = 1000


@dataclass
class RetentionResult:
    jobs_deleted: int = 0
    conversations_deleted: int = 0

# Every state a generation can end in (see migrations/001 and docs/reliability.md, "Outcomes").
TERMINAL_STATES = ("delivered", "fail", "timeout", "error", "undeliverable", "cancelled")

_PURGE_JOBS = """
    DELETE FROM generation_jobs
     WHERE id IN (SELECT id FROM generation_jobs
                   WHERE state = ANY($1::text[])
                     AND delivering_at IS NULL
                     AND updated_at < now() - make_interval(days => $2)
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED)
"""
_PURGE_CONVERSATIONS = """
    DELETE FROM bot_fsm_state
     WHERE key IN (SELECT key FROM bot_fsm_state
                    WHERE updated_at < now() - make_interval(days => $1)
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def purge_jobs(pool: asyncpg.Pool, days: int, batch: int = 1000) -> int:
    """Delete one batch of terminal jobs untouched for `days` days; the number deleted."""
    return _count(await pool.execute(_PURGE_JOBS, list(TERMINAL_STATES), days, batch))


async def purge_conversations(pool: asyncpg.Pool, days: int, batch: int = 1000) -> int:
    """Delete one batch of conversation states untouched for `days` days; the number deleted."""
    return _count(await pool.execute(_PURGE_CONVERSATIONS, days, batch))


def schedule_for(task_queue: str, retention_days: int, schedule_id: str = SCHEDULE_ID) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(WORKFLOW_NAME, RetentionInput(retention_days=retention_days),
                                           id=f"{schedule_id}-run", task_queue=task_queue,
                                           execution_timeout=timedelta(minutes=30)),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=PURGE_EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(client: Client, task_queue: str, retention_days: int,
                          schedule_id: str = SCHEDULE_ID) -> None:
    """Create the purge schedule, or bring an existing one to these settings (idempotent; several
    workers starting together are fine)."""
    await upsert_schedule(client, schedule_id, schedule_for(task_queue, retention_days, schedule_id), "RETENTION",
                          f"days={retention_days} every={PURGE_EVERY}")


async def upsert_schedule(client: Client, schedule_id: str, schedule: Schedule, event: str, fields: str = "",
                          trigger_immediately: bool = False) -> None:
    """Create `schedule`, or update the existing one to it; a failure is logged (`<event>_SCHEDULE_FAILED`),
    never raised: the worker runs generations without it."""
    try:
        try:
            await client.create_schedule(schedule_id, schedule, trigger_immediately=trigger_immediately)
            log.info("%s_SCHEDULE_CREATED id=%s %s", event, schedule_id, fields)
        except ScheduleAlreadyRunningError:
            def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(schedule_id).update(update)
            log.info("%s_SCHEDULE_UPDATED id=%s %s", event, schedule_id, fields)
    except Exception as exc:  # e.g. two workers updating at once, or no permission: generations go on
        log.error("%s_SCHEDULE_FAILED id=%s error=%s", event, schedule_id, " ".join(str(exc).split())[:300])
