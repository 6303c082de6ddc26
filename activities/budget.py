"""Time budgets inside one activity attempt (docs/reliability.md, "Budgets that add up").

Every retry loop inside an activity ends before the attempt's ``start_to_close`` with a margin, so
Temporal never times an attempt out while it still works (and starts another that would send again
or create a second paid Kie task); and it keeps heartbeating, so a heartbeat timeout cannot either.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from temporalio import activity

# An attempt finishes its own work this long before start_to_close: time for the final write (lock
# release) and for the answer to reach the Temporal server.
MARGIN_SECONDS = 5.0
# Of a delivery attempt, the part reserved for recording an accepted delivery in Postgres (retried
# while the database is away): sending stops this long before the attempt's own end.
RECORD_RESERVE_SECONDS = 20.0
# One database call inside such a retry loop: a hanging connection must not keep the loop from
# heartbeating (deliver: 15 s heartbeat timeout).
DB_CALL_SECONDS = 5.0
# Used when the activity has no start_to_close (tests calling an activity directly).
FALLBACK_SECONDS = 60.0


def attempt_deadline(margin: float = MARGIN_SECONDS) -> float:
    """The event-loop time by which the running activity attempt must be done with its own work."""
    info = activity.info()
    timeout = info.start_to_close_timeout.total_seconds() if info.start_to_close_timeout else FALLBACK_SECONDS
    elapsed = (datetime.now(timezone.utc) - info.started_time).total_seconds()
    elapsed = min(max(elapsed, 0.0), timeout)
    return asyncio.get_running_loop().time() + max(timeout - elapsed - margin, 1.0)


def remaining(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


def heartbeat(details: dict | None = None) -> None:
    """Heartbeat the running activity with a copy of `details` (a memo a later attempt reads), if any.
    A local activity (the lean shape's poll) has nowhere to send it: nothing is done."""
    if activity.info().is_local:
        return
    activity.heartbeat(dict(details)) if details else activity.heartbeat()


async def sleep_heartbeating(seconds: float, details: dict | None = None, every: float = 2.0) -> None:
    """Sleep inside an activity, heartbeating `details` at least every `every` seconds (so a cancel
    reaches it, no heartbeat timeout ends the attempt, and a later attempt keeps what `details` carries)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while (left := until - loop.time()) > 0:
        heartbeat(details)
        await asyncio.sleep(min(left, every))


async def heartbeating(work, details: dict | None = None, every: float = 2.0):
    """Await `work` while heartbeating `details` every `every` seconds (a slow call inside it, e.g.
    Telegram's 30 s timeout, must not let the heartbeat timeout end the attempt)."""
    task = asyncio.ensure_future(work)
    while True:
        heartbeat(details)
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
