"""One long-polling bot at a time: leadership through a Postgres session-level advisory lock.

Telegram allows a single getUpdates consumer per bot. Every bot process runs :class:`Leadership`;
the one holding the advisory lock (on a dedicated connection, autocommit, never inside a
transaction, so never "idle in transaction") polls Telegram; the others stay PASSIVE (they keep
serving /kie/callback and /healthz) and retry with jitter. When the leader dies its connection
closes and Postgres releases the lock, so a passive process takes over within one retry interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from typing import Awaitable, Callable

import asyncpg

log = logging.getLogger("imagegen.leader")
APPLICATION_NAME = "imagegen-bot-leadership"  # visible in pg_stat_activity


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

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "passive"

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Loop forever (until cancelled): acquire, lead, and on loss go back to waiting."""
        busy_logged = False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10,
                                             server_settings={"application_name": APPLICATION_NAME})
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key)
                if not got:
                    if not busy_logged:
                        log.info("LOCK_BUSY key=%s: another bot instance polls Telegram; staying passive", self.key)
                        busy_logged = True
                    await conn.close()
                    conn = None
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
                if conn is not None and not conn.is_closed():
                    try:
                        await asyncio.shield(conn.close(timeout=2))
                    except Exception:
                        conn.terminate()

    async def _lead_while_held(self, conn: asyncpg.Connection, lead: Callable[[], Awaitable[None]]) -> None:
        leading = asyncio.create_task(lead())
        try:
            while not leading.done():
                done, _ = await asyncio.wait({leading}, timeout=self.check_seconds)
                if done:
                    break
                # The lock lives as long as this session: if the connection is gone, so is the lock.
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self.check_seconds * 2)
            leading.result()  # re-raise what stopped it
        finally:
            if not leading.done():
                leading.cancel()
                await asyncio.gather(leading, return_exceptions=True)
