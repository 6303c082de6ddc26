"""The bot while Postgres is away: every update that needs the database (conversation state, per-user
limits, job rows) fails; instead of silence the user gets one clear answer, "try again in a minute".

Registered as the dispatcher's error handler, so it also covers the FSM middleware, which reads the
conversation state before any handler runs."""

from __future__ import annotations

import logging

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent

from imagegen.dbdown import is_database_unavailable
from imagegen.i18n import lang_for, t
from imagegen.redact import redact

log = logging.getLogger("imagegen.bot")


async def answer_database_away(event: ErrorEvent, bot: Bot) -> bool:
    update = event.update
    log.warning("DB_AWAY_ANSWERED update=%s error=%s", update.update_id,
                redact(f"{type(event.exception).__name__}: {event.exception}")[:200])
    event_user = (update.callback_query or update.message)
    # The user's stored language is in the database too: Telegram's language code decides here.
    lang = lang_for(event_user.from_user.language_code if event_user and event_user.from_user else None)
    try:
        if update.callback_query is not None:
            await bot.answer_callback_query(update.callback_query.id, t("db_away", lang), show_alert=True)
        elif update.message is not None:
            await bot.send_message(update.message.chat.id, t("db_away", lang))
    except Exception as exc:  # Telegram trouble on top: nothing more to do for this update
        log.warning("DB_AWAY_ANSWER_FAILED %s", redact(f"{type(exc).__name__}: {exc}")[:200])
    return True


def database_away(exc: BaseException) -> bool:
    """An error of the database being away, not Telegram's: aiogram's TelegramNetworkError is raised
    from an OSError too (connection refused, timeout), which the database classifier would take for
    an outage, and the user would be told to wait for the database."""
    return not isinstance(exc, TelegramAPIError) and is_database_unavailable(exc)


def install(dp: Dispatcher) -> None:
    # Only database outages: any other error stays unhandled (aiogram logs it as before).
    dp.errors.register(answer_database_away, lambda event: database_away(event.exception))
