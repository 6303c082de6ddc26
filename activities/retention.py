"""The purge activity of RetentionWorkflow: deletes expired rows in batches (imagegen/retention.py),
heartbeating between batches."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from imagegen.logs import log_event
from imagegen.retention import RetentionInput, RetentionResult, purge_conversations, purge_jobs


class RetentionActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name="purge_expired")
    async def purge_expired(self, inp: RetentionInput) -> RetentionResult:
        result = RetentionResult()
        for purge, field in ((purge_jobs, "jobs_deleted"), (purge_conversations, "conversations_deleted")):
            while True:
                deleted = await purge(self.pool, inp.retention_days, inp.batch)
                setattr(result, field, getattr(result, field) + deleted)
                activity.heartbeat(result.jobs_deleted, result.conversations_deleted)
                if deleted < inp.batch:
                    break
        log_event("retention", "RETENTION_PURGED", days=inp.retention_days, jobs=result.jobs_deleted,
                  conversations=result.conversations_deleted)
        return result

    def all(self) -> list:
        return [self.purge_expired]
