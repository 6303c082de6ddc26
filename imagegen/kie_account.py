"""The Kie account, watched: a Temporal Schedule (SCHEDULE_ID, every KIE_BALANCE_EVERY_MINUTES)
starts KieAccountWorkflow (workflows/kie_account.py), whose activity asks Kie's credit endpoint,
exports the balance (metric ``imagegen_kie_credits``), logs KIE_CREDITS_LOW under
KIE_CREDITS_WARN_BELOW, and keeps the `kie_account` row: while Kie is out of credits (its createTask
answered 402, or the balance is 0) the bot admits no generation and answers "temporarily
unavailable"; the next check that sees credits again opens it.

The same run settles reservations that no workflow will settle any more (a workflow terminated by an
operator, or timed out): a delivered job's is captured, any other's released (reconcile)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from imagegen import metrics
from imagegen.credits import Ledger
from imagegen.logs import log_event
from imagegen.retention import upsert_schedule

log = logging.getLogger("imagegen.kie_account")
SCHEDULE_ID = "imagegen-kie-account"
WORKFLOW_NAME = "KieAccountWorkflow"


@dataclass
class AccountCheckInput:
    warn_below: float
    # Reservations older than this with no settle: their workflow is over (execution timeout + margin).
    stale_after_seconds: float = 2 * 3600.0


@dataclass
class AccountCheckResult:
    credits: float | None = None
    out_of_credits: bool = False
    error: str = ""
    captured: int = 0
    released: int = 0


async def account(pool: asyncpg.Pool) -> dict:
    """The `kie_account` row: what the last check (or a createTask's 402) learned."""
    row = await pool.fetchrow("SELECT credits, out_of_credits, checked_at, reason FROM kie_account WHERE id = 1")
    return dict(row) if row else {"credits": None, "out_of_credits": False, "checked_at": None, "reason": None}


async def set_account(pool: asyncpg.Pool, *, out_of_credits: bool, credits: float | None = None,
                      reason: str = "") -> None:
    await pool.execute(
        "INSERT INTO kie_account (id, credits, out_of_credits, checked_at, reason) VALUES (1, $1, $2, now(), $3)"
        " ON CONFLICT (id) DO UPDATE SET credits = COALESCE($1, kie_account.credits), out_of_credits = $2,"
        " checked_at = now(), reason = $3", credits, out_of_credits, reason or None)


async def check_account(kie, pool: asyncpg.Pool, warn_below: float) -> AccountCheckResult:
    """Ask Kie for the balance and record it; Kie unreachable changes nothing (the row keeps its state)."""
    from imagegen.kie import KieError

    try:
        credits = await kie.credit()
    except KieError as exc:
        if exc.code == 402:
            await set_account(pool, out_of_credits=True, credits=0, reason="credit endpoint: 402")
            log_event("kie-account", "KIE_CREDITS_OUT", severity=logging.WARNING, reason="402")
            return AccountCheckResult(credits=0, out_of_credits=True)
        log_event("kie-account", "KIE_CREDITS_UNKNOWN", severity=logging.WARNING, error=str(exc)[:200])
        return AccountCheckResult(error=str(exc)[:200])
    out = credits <= 0
    await set_account(pool, out_of_credits=out, credits=credits, reason="balance is 0" if out else "")
    metrics.gauge("imagegen_kie_credits", float(credits))
    if credits < warn_below:
        log_event("kie-account", "KIE_CREDITS_LOW", severity=logging.WARNING, credits=credits, warn_below=warn_below)
    else:
        log_event("kie-account", "KIE_CREDITS", credits=credits)
    return AccountCheckResult(credits=credits, out_of_credits=out)


_STALE = """
SELECT e.job_id, j.delivered_at IS NOT NULL AS delivered
  FROM credit_entries e
  LEFT JOIN generation_jobs j ON j.id = e.job_id
 WHERE e.kind = 'reserve' AND e.created_at < now() - make_interval(secs => $1)
   AND NOT EXISTS (SELECT 1 FROM credit_entries s WHERE s.job_id = e.job_id AND s.kind IN ('capture', 'release'))
 LIMIT 500
"""


async def reconcile(pool: asyncpg.Pool, ledger: Ledger, stale_after_seconds: float) -> tuple[int, int]:
    """Settle reservations older than any workflow can run: (captured, released)."""
    captured = released = 0
    for row in await pool.fetch(_STALE, float(stale_after_seconds)):
        if row["delivered"]:
            captured += await ledger.capture(row["job_id"]) == "captured"
        else:
            released += await ledger.release(row["job_id"], "reconciled: its workflow ended without settling") == "released"
        log_event(row["job_id"], "CREDITS_RECONCILED", delivered=row["delivered"])
    return captured, released


def schedule_for(task_queue: str, every_minutes: float, warn_below: float,
                 schedule_id: str = SCHEDULE_ID) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(WORKFLOW_NAME, AccountCheckInput(warn_below=warn_below),
                                           id=f"{schedule_id}-run", task_queue=task_queue,
                                           execution_timeout=timedelta(minutes=5)),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=every_minutes))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(client: Client, task_queue: str, every_minutes: float, warn_below: float,
                          schedule_id: str = SCHEDULE_ID) -> None:
    """Create the balance schedule (its first run at once), or bring an existing one to these settings."""
    await upsert_schedule(client, schedule_id, schedule_for(task_queue, every_minutes, warn_below, schedule_id),
                          "KIE_ACCOUNT", f"every={every_minutes}min", trigger_immediately=True)
