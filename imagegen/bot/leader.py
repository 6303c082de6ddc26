"""One long-polling bot at a time: leadership through a Postgres session-level advisory lock.

Telegram allows a single getUpdates consumer per bot. Every bot process runs :class:`Leadership`;
the one holding the advisory lock (on a dedicated connection, autocommit, never inside a
transaction, so never "idle in transaction") polls Telegram; the others stay PASSIVE (they keep
serving /kie/callback and /healthz) and retry with jitter. When the leader dies its connection
closes and Postgres releases the lock, so a passive process takes over within one retry interval.

A database outage is not a reason to stop: when the lock session breaks and Postgres cannot be
reached at all, nobody can hold (or take) the lock, so the leader keeps polling (``LOCK_DB_AWAY``)
and the bot keeps answering users ("try again in a minute", see db_outage.py). When Postgres is back
it takes the lock again (``LOCK_REACQUIRED``) or, if another instance was quicker, steps down. A lock
session that breaks while Postgres is reachable (terminated, network blip to this process only)
ends the leadership at once, as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from typing import Awaitable, Callable

import asyncpg

from imagegen.dbdown import is_database_unavailable

log = logging.getLogger("imagegen.leader")
APPLICATION_NAME = "imagegen-bot-leadership"  # visible in pg_stat_activity
# While Postgres is away the leader tries to reconnect this often; a passive instance that saw the
# outage waits `check_seconds` after Postgres is back before it competes, so the leader that kept
# polling through the outage gets its lock back and there is no handover (and no 409) for nothing.
OUTAGE_RECONNECT_SECONDS = 0.5


def lock_key(bot_token: str) -> int:
    """A signed 64-bit advisory lock key derived from the bot token (the token itself is never logged)."""
    return int.from_bytes(hashlib.sha256(f"polling:{bot_token}".encode()).digest()[:8], "big", signed=True)


class Leadership:
    """Run `lead()` only while this process holds the lock; stop it when the lock is lost."""

    def __init__(self, dsn: str, bot_token: str, *, retry_seconds: float = 3.0, check_seconds: float = 2.0):
        self.dsn = dsn
        self.key = lock_key(bot_token)
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.is_leader = False
        self._conn: asyncpg.Connection | None = None

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "passive"

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Loop forever (until cancelled): acquire, lead, and on loss go back to waiting."""
        busy_logged = False
        db_was_away = False
        while True:
            try:
                try:
                    conn = self._conn = await self._connect()
                except Exception as exc:
                    db_was_away = is_database_unavailable(exc)
                    raise
                if db_was_away:  # give a leader that polled through the outage the first go
                    db_was_away = False
                    await asyncio.sleep(self.check_seconds)
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key)
                if not got:
                    if not busy_logged:
                        log.info("LOCK_BUSY key=%s: another bot instance polls Telegram; staying passive", self.key)
                        busy_logged = True
                    await self._close()
                    await asyncio.sleep(self.retry_seconds * random.uniform(0.5, 1.5))
                    continue
                busy_logged = False
                self.is_leader = True
                log.info("LOCK_ACQUIRED key=%s: this instance polls Telegram", self.key)
                await self._lead_while_held(conn, lead)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LOCK_ERROR %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(self.retry_seconds * random.uniform(0.5, 1.5))
            finally:
                if self.is_leader:
                    log.info("LOCK_LOST key=%s: stopped polling", self.key)
                self.is_leader = False
                await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.shield(conn.close(timeout=2))
            except Exception:
                conn.terminate()

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME})

    async def _lead_while_held(self, conn: asyncpg.Connection, lead: Callable[[], Awaitable[None]]) -> None:
        leading = asyncio.create_task(lead())
        try:
            while not leading.done():
                done, _ = await asyncio.wait({leading}, timeout=self.check_seconds)
                if done:
                    break
                # The lock lives as long as this session: if the connection is gone, so is the lock.
                try:
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self.check_seconds * 2)
                except Exception as exc:
                    if not is_database_unavailable(exc):
                        raise
                    conn.terminate()
                    conn = await self._lead_through_outage(leading, exc)
                    self._conn = conn
            leading.result()  # re-raise what stopped it
        finally:
            if not leading.done():
                leading.cancel()
                await asyncio.gather(leading, return_exceptions=True)

    async def _lead_through_outage(self, leading: asyncio.Task, cause: BaseException) -> asyncpg.Connection:
        """The lock session broke. Postgres reachable: the leadership ends (raise). Unreachable: keep
        polling until it is back, then hold the lock again — or step down if another instance took it."""
        away_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn = await self._connect()
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                if away_since is None:
                    away_since = loop.time()
                    log.warning("LOCK_DB_AWAY %s: Postgres unreachable; nobody can take the lock, "
                                "so this instance keeps polling", type(exc).__name__)
                done, _ = await asyncio.wait({leading}, timeout=OUTAGE_RECONNECT_SECONDS)
                if done:
                    leading.result()
                continue
            if away_since is None:  # never away: only our session died
                await conn.close()
                raise ConnectionError(f"lock session lost: {type(cause).__name__}: {cause}")
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key)
            if got:
                log.info("LOCK_REACQUIRED key=%s after %.1f s without Postgres", self.key, loop.time() - away_since)
                return conn
            await conn.close()
            raise ConnectionError("Postgres is back and another instance holds the lock")
