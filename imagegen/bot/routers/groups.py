"""Private chats only: in a group the bot says so once (per group) and then stays quiet."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message

from imagegen.i18n import t
from imagegen.users import UserRepository


async def on_group_message(message: Message, bot: Bot, users: UserRepository | None = None) -> None:
    if users is not None and not await users.first_group_notice(message.chat.id):
        return  # told already: quiet
    me = await bot.me()
    await message.answer(t("group_only", bot=me.username or ""))


async def on_group_button(query: CallbackQuery, bot: Bot) -> None:
    me = await bot.me()
    await query.answer(t("group_only", bot=me.username or ""), show_alert=True)


def build() -> Router:
    router = Router(name="groups")
    router.message.filter(F.chat.type != ChatType.PRIVATE)
    router.callback_query.filter(F.message.chat.type != ChatType.PRIVATE)
    router.message.register(on_group_message)
    router.callback_query.register(on_group_button)
    return router
