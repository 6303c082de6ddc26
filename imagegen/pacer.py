"""An exact sliding window for one kind of external call, shared by every worker through Postgres.

Kie allows 20 createTask calls in any 10 s and refuses (does not queue) the 21st. Temporal's
task-queue limiter is a token bucket: it cannot say "20 now, then none until the window frees", so a
bucket that never exceeds Kie's window wastes about a third of Kie's allowance in a burst
(docs/performance.md). The pacer gives each call a time slot instead:

    slot(k) = max(now, slot(k - count) + window + margin)

under a transaction-scoped advisory lock, so any ``window`` seconds hold at most ``count`` slots, for
all worker processes together (the clock is the database's): one call of the SQL function
``take_rate_slot`` (migrations/008), one round trip. The caller then sleeps until its slot
(activities: ``budget.sleep_heartbeating``, so a cancel still reaches it).
``margin`` covers the time between the slot and the request reaching Kie (event-loop lag, HTTP).

A slot further away than ``max_wait`` is not taken: :meth:`Pacer.reserve` answers ``(False, delay)``
and the caller gives the work back to the Temporal queue for that long. The worker also runs at most
``count`` createTask activities at once, so a paced call normally waits at most about one window per
worker process; the rest of a backlog waits in the (server-limited) Temporal queue.
"""

from __future__ import annotations

import zlib

import asyncpg

from imagegen.ratelimits import RateLimit

MARGIN_SECONDS = 0.25

# migrations/008_rate_slot_function.sql: the lock, the slot and the purge in one round trip.
_RESERVE = "SELECT taken, delay FROM take_rate_slot($1, $2, $3, $4, $5, $6)"


class Pacer:
    def __init__(self, pool: asyncpg.Pool, name: str, limit: RateLimit, margin: float = MARGIN_SECONDS) -> None:
        if limit.unlimited:
            raise ValueError("an unlimited call needs no pacer")
        self.pool, self.name, self.limit = pool, name, limit
        self.spacing = limit.window + margin
        self._lock_key = zlib.crc32(f"rate_slots:{name}".encode())

    async def reserve(self, max_wait: float) -> tuple[bool, float]:
        """Take the next free slot if it is at most ``max_wait`` seconds away: (taken, seconds until it)."""
        row = await self.pool.fetchrow(_RESERVE, self.name, self._lock_key, self.limit.count, self.spacing,
                                       max_wait, 2 * self.spacing)
        return bool(row["taken"]), max(float(row["delay"]), 0.0)
