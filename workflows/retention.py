"""RetentionWorkflow: purge expired personal data (imagegen/retention.py), started hourly by the
Temporal Schedule "imagegen-retention". Deterministic: the activity does the deleting."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from imagegen.retention import RetentionInput, RetentionResult


@workflow.defn(name="RetentionWorkflow")
class RetentionWorkflow:
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionResult:
        if inp.retention_days <= 0:  # RETENTION_DAYS=0: keep everything
            return RetentionResult()
        return await workflow.execute_activity(
            "purge_expired", inp, result_type=RetentionResult,
            start_to_close_timeout=timedelta(minutes=20), heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=5),
        )
