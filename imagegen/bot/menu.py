"""The command menu (setMyCommands): one list per language, and one for a chat after /lang."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeChat

from imagegen.i18n import RUSSIAN_SPEAKING, t

COMMANDS = ("start", "help", "cancel", "history", "lang")
log = logging.getLogger("imagegen.bot")


def commands(lang: str) -> list[BotCommand]:
    return [BotCommand(command=c, description=t(f"cmd.{c}", lang)) for c in COMMANDS]


async def publish_commands(bot: Bot) -> None:
    """Russian for ru/uk/be/kk, English for en and (as the default list) every other language."""
    try:
        await bot.set_my_commands(commands("en"))
        await bot.set_my_commands(commands("en"), language_code="en")
        for code in sorted(RUSSIAN_SPEAKING):
            await bot.set_my_commands(commands("ru"), language_code=code)
    except Exception as exc:  # the menu is a convenience: the bot works without it
        log.warning("COMMANDS_NOT_SET error=%s", f"{type(exc).__name__}: {exc}"[:200])


async def publish_chat_commands(bot: Bot, chat_id: int, lang: str) -> None:
    """After /lang: this chat's menu in the chosen language, whatever the client's language."""
    try:
        await bot.set_my_commands(commands(lang), scope=BotCommandScopeChat(chat_id=chat_id))
    except Exception as exc:
        log.warning("COMMANDS_NOT_SET chat_id=%s error=%s", chat_id, f"{type(exc).__name__}: {exc}"[:200])
