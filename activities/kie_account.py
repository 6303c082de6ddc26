"""The activity of KieAccountWorkflow: a thin adapter over imagegen/kie_account.py."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from imagegen.credits import Ledger
from imagegen.kie_account import AccountCheckInput, AccountCheckResult, check_account, reconcile


class KieAccountActivities:
    def __init__(self, pool: asyncpg.Pool, kie) -> None:
        self.pool, self.kie, self.ledger = pool, kie, Ledger(pool)

    @activity.defn(name="check_kie_account")
    async def check_kie_account(self, inp: AccountCheckInput) -> AccountCheckResult:
        result = await check_account(self.kie, self.pool, inp.warn_below)
        result.captured, result.released = await reconcile(self.pool, self.ledger, inp.stale_after_seconds)
        return result

    def all(self) -> list:
        return [self.check_kie_account]
