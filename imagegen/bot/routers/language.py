"""/lang: Russian or English, remembered per user in Postgres; the chat's command menu follows."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from imagegen.bot.callback_data import LangChoice
from imagegen.bot.generation import edit_text
from imagegen.bot.keyboards import language_keyboard
from imagegen.bot.menu import publish_chat_commands
from imagegen.i18n import LANGS, t
from imagegen.settings import Settings
from imagegen.users import UserRepository


async def on_lang(message: Message) -> None:
    await message.answer(t("lang.choose"), reply_markup=language_keyboard())


async def on_lang_choice(query: CallbackQuery, callback_data: LangChoice, bot: Bot,
                         users: UserRepository | None = None, settings: Settings | None = None) -> None:
    lang = callback_data.lang
    if lang not in LANGS or not isinstance(query.message, Message):
        await query.answer(t("stale_button"))
        return
    if users is not None:
        await users.set_lang(query.from_user.id, lang)
    await edit_text(query.message, t("lang.set", lang))
    await query.answer()
    await publish_chat_commands(bot, query.message.chat.id, lang, settings)


def build() -> Router:
    router = Router(name="language")
    router.message.register(on_lang, Command("lang"))
    router.callback_query.register(on_lang_choice, LangChoice.filter())
    return router
