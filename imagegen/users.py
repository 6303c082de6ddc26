"""Per-user and per-chat facts the bot keeps in Postgres: the chosen language, and which group chats
were already told that the bot works in private chats only."""

from __future__ import annotations

import asyncpg


class UserRepository:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def get_lang(self, user_id: int) -> str | None:
        """The language the user chose with /lang; None when they never chose."""
        return await self.pool.fetchval("SELECT lang FROM bot_users WHERE user_id = $1", user_id)

    async def set_lang(self, user_id: int, lang: str) -> None:
        await self.pool.execute(
            "INSERT INTO bot_users (user_id, lang) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET lang = EXCLUDED.lang, updated_at = now()",
            user_id, lang,
        )

    async def first_group_notice(self, chat_id: int) -> bool:
        """True exactly once per group chat: the first time the bot should say it stays quiet there."""
        row = await self.pool.fetchrow(
            "INSERT INTO group_notices (chat_id) VALUES ($1) ON CONFLICT (chat_id) DO NOTHING RETURNING chat_id",
            chat_id,
        )
        return row is not None
