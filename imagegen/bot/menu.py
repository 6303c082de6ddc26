"""The command menu (setMyCommands): one list per language, and one for a chat after /lang. With
CREDITS=on the menu also offers /buy, /balance and /paysupport (Telegram asks payment bots for the
last one); with credits off those commands do not exist, so the menu does not show them."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeChat

from imagegen.i18n import RUSSIAN_SPEAKING, t
from imagegen.settings import Settings

COMMANDS = ("start", "help", "cancel", "history", "lang")
CREDIT_COMMANDS = ("buy", "balance", "paysupport")  # imagegen/bot/routers/payments.py
log = logging.getLogger("imagegen.bot")


def commands(lang: str, credits: bool = False) -> list[BotCommand]:
    names = COMMANDS + (CREDIT_COMMANDS if credits else ())
    return [BotCommand(command=c, description=t(f"cmd.{c}", lang)) for c in names]


def _credits(settings: Settings | None) -> bool:
    return settings is not None and settings.credits


async def publish_commands(bot: Bot, settings: Settings | None = None) -> None:
    """Russian for ru/uk/be/kk, English for en and (as the default list) every other language.
    A dispatcher startup handler: aiogram passes the dispatcher's `settings`."""
    en, ru = commands("en", _credits(settings)), commands("ru", _credits(settings))
    try:
        await bot.set_my_commands(en)
        await bot.set_my_commands(en, language_code="en")
        for code in sorted(RUSSIAN_SPEAKING):
            await bot.set_my_commands(ru, language_code=code)
    except Exception as exc:  # the menu is a convenience: the bot works without it
        log.warning("COMMANDS_NOT_SET error=%s", f"{type(exc).__name__}: {exc}"[:200])


async def publish_chat_commands(bot: Bot, chat_id: int, lang: str, settings: Settings | None = None) -> None:
    """After /lang: this chat's menu in the chosen language, whatever the client's language."""
    try:
        await bot.set_my_commands(commands(lang, _credits(settings)), scope=BotCommandScopeChat(chat_id=chat_id))
    except Exception as exc:
        log.warning("COMMANDS_NOT_SET chat_id=%s error=%s", chat_id, f"{type(exc).__name__}: {exc}"[:200])
