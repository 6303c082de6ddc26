"""Updates of one chat are handled one after another (in the order Telegram sent them).

aiogram handles the updates of a getUpdates batch concurrently; two messages of one chat (a long text
split by the client, a double press) would then race on the conversation state. Chats stay concurrent
with each other."""

from __future__ import annotations

import asyncio
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Chat


class PerChatSerializer(BaseMiddleware):
    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}

    async def __call__(self, handler, event, data: dict[str, Any]) -> Any:
        chat: Chat | None = data.get("event_chat")
        if chat is None:
            return await handler(event, data)
        lock = self._locks.setdefault(chat.id, asyncio.Lock())
        self._users[chat.id] = self._users.get(chat.id, 0) + 1
        try:
            async with lock:
                return await handler(event, data)
        finally:
            self._users[chat.id] -= 1
            if not self._users[chat.id]:  # nobody waits: forget the chat
                del self._users[chat.id]
                self._locks.pop(chat.id, None)
