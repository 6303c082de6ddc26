"""Bound the updates the bot handles at once, and let a stopping bot finish the ones in hand.

Every handler may take a database connection (conversation state, admission), so the number of
updates in progress is capped (BOT_MAX_CONCURRENT_UPDATES); more wait here instead of queueing on
the pool. On SIGTERM the bot stops taking updates, then :meth:`UpdateGate.drain` waits for those
already taken.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject


class UpdateGate(BaseMiddleware):
    """Outer middleware on ``dp.update``: at most `limit` updates in their handlers at once."""

    def __init__(self, limit: int):
        self._slots = asyncio.Semaphore(limit)
        self.in_hand = 0  # taken: waiting for a slot or being handled
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        self.in_hand += 1
        self._idle.clear()
        try:
            async with self._slots:
                return await handler(event, data)
        finally:
            self.in_hand -= 1
            if self.in_hand == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no update is in hand (True) or `timeout` seconds have passed (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
