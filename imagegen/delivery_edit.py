"""DELIVERY_MODE=edit: the user's "⏳" status message itself becomes the picture.

An edit is idempotent where ``sendPhoto`` is not: a retry after a crash applies the same edit to the
same message again, so however often it runs the user sees ONE picture. Same 3-level fallback as
:func:`imagegen.delivery.send_result`:

Level 1: ``editMessageMedia`` with the URL (Telegram fetches it; the current Bot API turns a text
         message into a photo message).
Level 2: if Telegram cannot use the URL (400), download the bytes here (same guard as the send mode)
         and upload them (``attach://``).
Level 3: if that fails too, ``editMessageText`` with the link (``editMessageCaption`` when the
         message is already a photo).

"message is not modified" is success (a retry found the edit already applied). A status message the
user deleted, or a Bot API server that refuses media on a text message, falls back to the send mode
(``sendPhoto``), logged as ``DELIVER_EDIT_FALLBACK``. Transient trouble raises
:class:`~imagegen.delivery.RetryableDeliveryError`, a refusal for good
:class:`~imagegen.delivery.PermanentDeliveryError`, exactly as in the send mode.
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, InputMediaPhoto

from .delivery import (
    DeliveryResult,
    PermanentDeliveryError,
    classify_telegram_error,
    fallback_ladder,
    send_result,
)
from .logs import log_event
from .redact import redact

class StatusMessageGone(Exception):
    """The status message cannot be edited into the result: deleted, or the server refuses media on text."""


def settle_edit(exc: BaseException, last: bool) -> bool:
    """True: the edit is already applied ("not modified"). False: a 400 that the next level may avoid.
    Raises StatusMessageGone, or the mapped Retryable/Permanent error."""
    if isinstance(exc, TelegramBadRequest):
        text = exc.message.lower()
        if "message is not modified" in text:
            return True
        if any(gone in text for gone in ("message to edit not found", "message can't be edited",
                                         "there is no media in the message to edit")):
            raise StatusMessageGone(exc.message) from None
        if last:
            raise PermanentDeliveryError(redact(f"Telegram refused the link edit: {exc.message}")) from None
        return False
    raise classify_telegram_error(exc) from None  # not a 400: always mapped


async def edit_result(
    bot: Bot,
    chat_id: int,
    message_id: int,
    url: str,
    *,
    caption: str,
    link_text: str,
    reply_markup: InlineKeyboardMarkup | None = None,
    **fetch: Any,
) -> DeliveryResult:
    """Edit message `message_id` into the result; the DeliveryResult carries that same message id.
    `fetch`: corr_id, max_bytes, download_timeout, allow_private (see fallback_ladder)."""
    where = dict(chat_id=chat_id, message_id=message_id, reply_markup=reply_markup)

    async def put_photo(photo: str | BufferedInputFile) -> int:
        await bot.edit_message_media(InputMediaPhoto(media=photo, caption=caption), **where)
        return message_id

    async def put_text() -> int:
        try:
            await bot.edit_message_text(text=link_text, **where)
        except TelegramBadRequest as exc:
            if "no text in the message" not in exc.message.lower():
                raise
            await bot.edit_message_caption(caption=link_text, **where)
        return message_id

    return await fallback_ladder(url, put_photo=put_photo, put_text=put_text, settle=settle_edit,
                                 done_id=message_id, mode="edit", **fetch)


async def deliver_result(
    bot: Bot,
    mode: str,
    chat_id: int,
    status_message_id: int | None,
    url: str,
    *,
    caption: str,
    edit_caption: str,
    link_text: str,
    reply_markup: InlineKeyboardMarkup | None = None,
    **fetch: Any,
) -> DeliveryResult:
    """Deliver in `mode` ("send" | "edit"); edit mode falls back to sending when there is nothing to
    edit. `fetch`: corr_id, max_bytes, download_timeout, allow_private."""
    if mode == "edit" and status_message_id is not None:
        try:
            return await edit_result(bot, chat_id, status_message_id, url, caption=edit_caption,
                                     link_text=link_text, reply_markup=reply_markup, **fetch)
        except StatusMessageGone as exc:
            log_event(fetch["corr_id"], "DELIVER_EDIT_FALLBACK", to="sendPhoto", reason=redact(str(exc))[:200])
    return await send_result(bot, chat_id, url, caption=caption, link_text=link_text, reply_markup=reply_markup,
                             **fetch)
