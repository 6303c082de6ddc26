"""KieAccountWorkflow: the Kie account's balance checked, and stale reservations settled
(imagegen/kie_account.py), started by the Temporal Schedule "imagegen-kie-account". Deterministic:
the activity does the asking and the writing."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from imagegen.kie_account import AccountCheckInput, AccountCheckResult


@workflow.defn(name="KieAccountWorkflow")
class KieAccountWorkflow:
    @workflow.run
    async def run(self, inp: AccountCheckInput) -> AccountCheckResult:
        return await workflow.execute_activity(
            "check_kie_account", inp, result_type=AccountCheckResult,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=3),
        )
