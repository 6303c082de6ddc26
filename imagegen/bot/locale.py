"""The user's language for every update: the one chosen with /lang (Postgres), else from Telegram's
language_code. aiogram's I18nMiddleware sets it as the current locale; it is also in data["lang"]."""

from __future__ import annotations

from typing import Any

from aiogram.types import TelegramObject, User
from aiogram.utils.i18n import I18nMiddleware

from imagegen.dbdown import is_database_unavailable
from imagegen.i18n import i18n, lang_for
from imagegen.users import UserRepository


class UserLocaleMiddleware(I18nMiddleware):
    def __init__(self, users: UserRepository | None):
        super().__init__(i18n)
        self.users = users

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        user: User | None = data.get("event_from_user")
        if user is None:
            return self.i18n.default_locale
        try:
            chosen = await self.users.get_lang(user.id) if self.users is not None else None
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            chosen = None  # Postgres is away: Telegram's language code, so the outage answer still reads right
        return chosen or lang_for(user.language_code)

    async def __call__(self, handler, event, data):  # type: ignore[override]
        lang = await self.get_locale(event=event, data=data)
        data["lang"] = lang
        with self.i18n.use_locale(lang):
            return await handler(event, data)
