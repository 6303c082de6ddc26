"""Telegram delivery of one result image, with a 3-level fallback.

Level 1: ``sendPhoto`` with the URL (Telegram fetches it).
Level 2: if Telegram cannot use the URL (400), download the bytes here (size cap, timeout, image
         content type) and upload them.
Level 3: if that fails too, a text message with the link.

Transient trouble (network errors, timeouts, 5xx, 429) is never degraded to a lower level: it raises
:class:`RetryableDeliveryError` so that the caller (a Temporal activity) retries later, honouring
429's ``retry_after``. A refusal that will not change (403: the user blocked the bot) raises
:class:`PermanentDeliveryError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.types import BufferedInputFile

from .logs import log_event


class RetryableDeliveryError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(Exception):
    pass


class DownloadError(Exception):
    pass


@dataclass(frozen=True)
class DeliveryResult:
    level: str  # "url" | "bytes" | "text"
    message_id: int


def classify_telegram_error(exc: BaseException) -> Exception | None:
    """Map an aiogram/network exception to Retryable/Permanent; None for a 400 (try the next level)."""
    if isinstance(exc, TelegramRetryAfter):
        return RetryableDeliveryError(f"Telegram 429: retry after {exc.retry_after}s", retry_after=float(exc.retry_after))
    if isinstance(exc, TelegramForbiddenError):
        return PermanentDeliveryError(f"Telegram 403: {exc.message}")
    if isinstance(exc, TelegramBadRequest):
        return None
    if isinstance(exc, TelegramNotFound):
        return PermanentDeliveryError(f"Telegram 404: {exc.message}")
    # TelegramNetworkError, TelegramServerError (5xx), TelegramUnauthorizedError (config), timeouts…
    return RetryableDeliveryError(f"{type(exc).__name__}: {exc}")


async def download_image(url: str, *, max_bytes: int, timeout: float, allow_private: bool = False) -> bytes:
    """Fetch an image for upload: http(s) only, capped in size and time, image/* only."""
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError("only http(s) URLs are downloaded")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise DownloadError(f"HTTP {resp.status}")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/"):
                    raise DownloadError(f"content type {ctype or 'missing'} is not an image")
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise DownloadError(f"image is {resp.content_length} bytes, over the {max_bytes} cap")
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadError(f"image exceeds the {max_bytes} byte cap")
                    chunks.append(chunk)
                return b"".join(chunks)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise DownloadError(f"{type(exc).__name__}: {exc}") from exc


async def send_result(
    bot: Bot,
    chat_id: int,
    url: str,
    *,
    caption: str,
    link_text: str,
    corr_id: str,
    max_bytes: int,
    download_timeout: float,
    allow_private: bool = False,
) -> DeliveryResult:
    # Level 1: Telegram fetches the URL.
    try:
        msg = await bot.send_photo(chat_id, photo=url, caption=caption)
        return DeliveryResult("url", msg.message_id)
    except Exception as exc:
        mapped = classify_telegram_error(exc)
        if mapped is not None:
            raise mapped from exc
        log_event(corr_id, "DELIVER_FALLBACK", level="bytes", reason=str(exc)[:200])

    # Level 2: download here, upload the bytes.
    try:
        data = await download_image(url, max_bytes=max_bytes, timeout=download_timeout, allow_private=allow_private)
        msg = await bot.send_photo(chat_id, photo=BufferedInputFile(data, filename="image.png"), caption=caption)
        return DeliveryResult("bytes", msg.message_id)
    except DownloadError as exc:
        log_event(corr_id, "DELIVER_FALLBACK", level="text", reason=f"download: {exc}"[:200])
    except Exception as exc:
        mapped = classify_telegram_error(exc)
        if mapped is not None:
            raise mapped from exc
        log_event(corr_id, "DELIVER_FALLBACK", level="text", reason=str(exc)[:200])

    # Level 3: the link as text.
    try:
        msg = await bot.send_message(chat_id, link_text, disable_web_page_preview=False)
        return DeliveryResult("text", msg.message_id)
    except Exception as exc:
        mapped = classify_telegram_error(exc)
        raise (mapped or PermanentDeliveryError(f"Telegram refused the text message: {exc}")) from exc


def create_bot(token: str, api_base: str, *, timeout: float = 30.0) -> Bot:
    """The real aiogram Bot, pointed at `api_base` (Telegram, or the local Bot API simulator)."""
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base), timeout=timeout)
    return Bot(token, session=session)
