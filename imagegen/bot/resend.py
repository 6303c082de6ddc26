"""Sending a finished result again from its stored Kie URL: as a photo (/history) or as a document
("Original": Telegram does not recompress documents).

Telegram fetches the URL itself; when it cannot, the bot downloads it (with the same guards as the
worker's delivery) and uploads the bytes; when that fails too, Kie's URL has expired and the user is
told so plainly."""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BufferedInputFile

from imagegen.delivery import DownloadError, download_image
from imagegen.i18n import t
from imagegen.logs import log_event
from imagegen.settings import Settings


async def resend_result(bot: Bot, chat_id: int, url: str, *, as_document: bool, caption: str, lang: str,
                        settings: Settings, corr_id: str) -> bool:
    """True when the picture was sent; False when it is gone (the user was told)."""
    send = bot.send_document if as_document else bot.send_photo
    field = "document" if as_document else "photo"
    try:
        await send(chat_id, **{field: url}, caption=caption)
        log_event(corr_id, "RESENT", level="url", document=as_document)
        return True
    except TelegramBadRequest as exc:
        log_event(corr_id, "RESEND_FALLBACK", level="bytes", reason=exc.message[:200])
    try:
        data = await download_image(url, max_bytes=settings.download_max_bytes,
                                    timeout=settings.download_timeout_seconds,
                                    allow_private=settings.allow_private_urls)
    except DownloadError as exc:
        log_event(corr_id, "RESEND_EXPIRED", reason=str(exc)[:200])
        await bot.send_message(chat_id, t("resend.expired", lang))
        return False
    await send(chat_id, **{field: BufferedInputFile(data, filename="image.png")}, caption=caption)
    log_event(corr_id, "RESENT", level="bytes", document=as_document)
    return True
