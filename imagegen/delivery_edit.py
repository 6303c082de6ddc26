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

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, InputMediaPhoto

from .delivery import (
    DeliveryResult,
    DownloadError,
    PermanentDeliveryError,
    classify_telegram_error,
    download_image,
    send_result,
)
from .logs import log_event
from .redact import redact

MODES = ("send", "edit")


class StatusMessageGone(Exception):
    """The status message cannot be edited into the result: deleted, or the server refuses media on text."""


def _edited(exc: BaseException) -> bool:
    """True: the edit is already applied ("not modified"). False: a 400 that the next level may avoid.
    Raises StatusMessageGone, or the mapped Retryable/Permanent error."""
    if isinstance(exc, TelegramBadRequest):
        text = exc.message.lower()
        if "message is not modified" in text:
            return True
        if "message to edit not found" in text or "message can't be edited" in text:
            raise StatusMessageGone(exc.message) from None
        if "there is no media in the message to edit" in text:
            raise StatusMessageGone(exc.message) from None
        return False
    mapped = classify_telegram_error(exc)
    raise (mapped or PermanentDeliveryError(redact(str(exc)))) from None


async def edit_result(
    bot: Bot,
    chat_id: int,
    message_id: int,
    url: str,
    *,
    caption: str,
    link_text: str,
    corr_id: str,
    max_bytes: int,
    download_timeout: float,
    allow_private: bool = False,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> DeliveryResult:
    """Edit message `message_id` into the result; the DeliveryResult carries that same message id."""
    # Level 1: Telegram fetches the URL.
    try:
        await bot.edit_message_media(InputMediaPhoto(media=url, caption=caption), chat_id=chat_id,
                                     message_id=message_id, reply_markup=reply_markup)
        return DeliveryResult("url", message_id, edited=True)
    except StatusMessageGone:
        raise
    except Exception as exc:
        if _edited(exc):
            return DeliveryResult("url", message_id, edited=True)
        log_event(corr_id, "DELIVER_FALLBACK", level="bytes", reason=redact(exc)[:200], mode="edit")

    # Level 2: download here, upload the bytes (attach://).
    try:
        data = await download_image(url, max_bytes=max_bytes, timeout=download_timeout, allow_private=allow_private)
        media = InputMediaPhoto(media=BufferedInputFile(data, filename="image.png"), caption=caption)
        await bot.edit_message_media(media, chat_id=chat_id, message_id=message_id, reply_markup=reply_markup)
        return DeliveryResult("bytes", message_id, edited=True)
    except DownloadError as exc:
        log_event(corr_id, "DELIVER_FALLBACK", level="text", reason=f"download: {exc}"[:200], mode="edit")
    except StatusMessageGone:
        raise
    except Exception as exc:
        if _edited(exc):
            return DeliveryResult("bytes", message_id, edited=True)
        log_event(corr_id, "DELIVER_FALLBACK", level="text", reason=redact(exc)[:200], mode="edit")

    # Level 3: the link, as the message's text (or caption, if it is a photo already).
    try:
        try:
            await bot.edit_message_text(text=link_text, chat_id=chat_id, message_id=message_id,
                                        reply_markup=reply_markup)
        except TelegramBadRequest as exc:
            if "no text in the message" not in exc.message.lower():
                raise
            await bot.edit_message_caption(caption=link_text, chat_id=chat_id, message_id=message_id,
                                           reply_markup=reply_markup)
        return DeliveryResult("text", message_id, edited=True)
    except Exception as exc:
        if _edited(exc):
            return DeliveryResult("text", message_id, edited=True)
        raise PermanentDeliveryError(redact(f"Telegram refused the link edit: {exc}")) from None


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
    corr_id: str,
    max_bytes: int,
    download_timeout: float,
    allow_private: bool = False,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> DeliveryResult:
    """Deliver in `mode` ("send" | "edit"); edit mode falls back to sending when there is nothing to edit."""
    common = dict(corr_id=corr_id, max_bytes=max_bytes, download_timeout=download_timeout,
                  allow_private=allow_private, reply_markup=reply_markup)
    if mode == "edit" and status_message_id is not None:
        try:
            return await edit_result(bot, chat_id, status_message_id, url, caption=edit_caption,
                                     link_text=link_text, **common)
        except StatusMessageGone as exc:
            log_event(corr_id, "DELIVER_EDIT_FALLBACK", to="sendPhoto", reason=redact(str(exc))[:200])
    return await send_result(bot, chat_id, url, caption=caption, link_text=link_text, **common)
