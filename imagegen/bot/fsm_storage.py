"""aiogram FSM storage in PostgreSQL, so that every bot process sees the same conversation state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StorageKey


def _key(key: StorageKey) -> str:
    return ":".join(str(part) for part in (key.bot_id, key.chat_id, key.user_id, key.thread_id,
                                           key.business_connection_id, key.destiny))


class PostgresStorage(BaseStorage):
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def set_state(self, key: StorageKey, state: str | State | None = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self.pool.execute(
            "INSERT INTO bot_fsm_state (key, state) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
            _key(key), value,
        )

    async def get_state(self, key: StorageKey) -> str | None:
        return await self.pool.fetchval("SELECT state FROM bot_fsm_state WHERE key = $1", _key(key))

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self.pool.execute(
            "INSERT INTO bot_fsm_state (key, data) VALUES ($1, $2::jsonb)"
            " ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, updated_at = now()",
            _key(key), json.dumps(dict(data)),
        )

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        raw = await self.pool.fetchval("SELECT data::text FROM bot_fsm_state WHERE key = $1", _key(key))
        return json.loads(raw) if raw else {}

    async def close(self) -> None:
        pass  # the pool belongs to the caller
