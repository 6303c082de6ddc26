"""Updates of one user in one chat are handled one after another, in the order Telegram sent them.

aiogram handles the updates of a getUpdates batch concurrently; two messages of one user (a long text
split by the client, a tap right after a message) would otherwise race on the conversation state.
aiogram's FSM middleware takes this lock before it loads the state. Unlike aiogram's
SimpleEventIsolation, a key's lock is dropped when nobody holds or waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from aiogram.fsm.storage.base import BaseEventIsolation, StorageKey


class PerKeyIsolation(BaseEventIsolation):
    def __init__(self) -> None:
        self._locks: dict[StorageKey, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def close(self) -> None:
        self._locks.clear()
