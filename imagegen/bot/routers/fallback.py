"""What no other router took: a stale or unknown button (a polite toast), any other message."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery, Message

from imagegen.bot.callback_data import RatioChoice
from imagegen.bot.generation import job_id_for
from imagegen.i18n import t
from imagegen.logs import log_event


async def on_stale_ratio(query: CallbackQuery) -> None:
    """A ratio button from an old menu, or pressed again after the generation started."""
    if isinstance(query.message, Message):
        log_event(job_id_for(query.message), "STALE_BUTTON", user_id=query.from_user.id)
    await query.answer(t("stale_button"))


async def on_stale_button(query: CallbackQuery) -> None:
    await query.answer(t("stale_button"))


async def on_other_message(message: Message) -> None:
    await message.answer(t("start_first"))


def build() -> Router:
    router = Router(name="fallback")
    router.callback_query.register(on_stale_ratio, RatioChoice.filter())
    router.callback_query.register(on_stale_button)
    router.message.register(on_other_message)
    return router
