"""Telegram delivery of one result image, with a 3-level fallback.

Level 1: ``sendPhoto`` with the URL (Telegram fetches it).
Level 2: if Telegram cannot use the URL (400), download the bytes here (public addresses only, see
         imagegen.urlguard; size cap, timeout, image content type) and upload them.
Level 3: if that fails too, a text message with the link.

Transient trouble (network errors, timeouts, 5xx, 429) is never degraded to a lower level: it raises
:class:`RetryableDeliveryError` so that the caller (a Temporal activity) retries later, honouring
429's ``retry_after``. A refusal that will not change (403: the user blocked the bot) raises
:class:`PermanentDeliveryError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, Union

import aiohttp
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from yarl import URL

from .logs import log_event
from .redact import redact, register
from .urlguard import (
    MAX_REDIRECTS,
    AddressCheck,
    GuardedResolver,
    Resolve,
    UrlRefused,
    address_problem,
    check_url,
)


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
    edited: bool = False  # DELIVERY_MODE=edit: the status message itself became the result


def classify_telegram_error(exc: BaseException) -> Exception | None:
    """Map an aiogram/network exception to Retryable/Permanent; None for a 400 (try the next level)."""
    if isinstance(exc, TelegramRetryAfter):
        return RetryableDeliveryError(f"Telegram 429: retry after {exc.retry_after}s", retry_after=float(exc.retry_after))
    if isinstance(exc, TelegramForbiddenError):
        return PermanentDeliveryError(redact(f"Telegram 403: {exc.message}"))
    if isinstance(exc, TelegramBadRequest):
        return None
    if isinstance(exc, TelegramNotFound):
        return PermanentDeliveryError(redact(f"Telegram 404: {exc.message}"))
    # TelegramNetworkError, TelegramServerError (5xx), TelegramUnauthorizedError (config), timeouts…
    return RetryableDeliveryError(redact(f"{type(exc).__name__}: {exc}"))


# Telegram accepts uploaded photos up to 10 MB; a bigger download could never be sent.
TELEGRAM_PHOTO_MAX_BYTES = 10 * 1000 * 1000
# Image types Telegram takes as a photo, with their leading bytes. SVG is not among them (it is a
# document that can carry scripts), nor is anything we cannot recognise.
_IMAGE_MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/jpg": (b"\xff\xd8\xff",),
    "image/pjpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "image/bmp": (b"BM",),
}
_ANY_MAGIC = tuple(m for magics in _IMAGE_MAGIC.values() for m in magics)
_REDIRECTS = (301, 302, 303, 307, 308)


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(b"RIFF"):
        return data[8:12] == b"WEBP"
    return data.startswith(_ANY_MAGIC)


async def download_image(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    resolve: Resolve | None = None,
    problem: AddressCheck = address_problem,
) -> bytes:
    """Fetch an image for upload.

    http(s) only; no loopback/private/link-local/metadata address, checked after DNS resolution and
    again on every redirect (at most MAX_REDIRECTS), unless `allow_private`; capped at `max_bytes`
    (and Telegram's photo limit) and `timeout` seconds in all; an image content type whose bytes
    look like that image. Any refusal raises :class:`DownloadError`. `resolve`/`problem`: see
    imagegen.urlguard (tests)."""
    max_bytes = min(max_bytes, TELEGRAM_PHOTO_MAX_BYTES)
    resolver = GuardedResolver(allow_private=allow_private, resolve=resolve, problem=problem)
    try:
        target = check_url(url, allow_private=allow_private, problem=problem)
        async with asyncio.timeout(timeout):
            connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
            async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as session:
                for hop in range(MAX_REDIRECTS + 1):
                    async with session.get(target, allow_redirects=False) as resp:
                        if resp.status in _REDIRECTS:
                            location = resp.headers.get("Location", "")
                            if not location:
                                raise DownloadError(f"HTTP {resp.status} without a Location")
                            if hop == MAX_REDIRECTS:
                                raise DownloadError(f"more than {MAX_REDIRECTS} redirects")
                            try:
                                next_url = target.join(URL(location))
                            except (ValueError, TypeError):
                                raise DownloadError("unparseable redirect Location") from None
                            target = check_url(next_url, allow_private=allow_private, problem=problem)
                            continue
                        return await _read_image(resp, max_bytes)
        raise DownloadError("redirect loop")  # pragma: no cover - the loop always returns or raises
    except UrlRefused as exc:
        raise DownloadError(f"refused: {exc}") from None
    except TimeoutError:
        raise DownloadError(f"timed out after {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        if resolver.refused:
            raise DownloadError(f"refused: {resolver.refused}") from None
        raise DownloadError(redact(f"{type(exc).__name__}: {exc}")) from None


async def _read_image(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if resp.status != 200:
        raise DownloadError(f"HTTP {resp.status}")
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in _IMAGE_MAGIC:
        raise DownloadError(f"content type {ctype or 'missing'} is not a photo type")
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise DownloadError(f"image is {resp.content_length} bytes, over the {max_bytes} cap")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise DownloadError(f"image exceeds the {max_bytes} byte cap")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not _looks_like_image(data):
        raise DownloadError(f"body is not a {ctype} image")
    return data


PutPhoto = Callable[[Union[str, BufferedInputFile]], Awaitable[int]]
PutText = Callable[[], Awaitable[int]]
# exc, is_last_level → True: the error means the result is already there (an edit's "message is not
# modified"); False: try the next level. Raises for transient/permanent trouble.
Settle = Callable[[BaseException, bool], bool]


def settle_send(exc: BaseException, last: bool) -> bool:
    """sendPhoto/sendMessage: transient → RetryableDeliveryError, 403 → Permanent, a 400 → next level."""
    mapped = classify_telegram_error(exc)
    if mapped is not None:
        raise mapped from None  # the message carries the (redacted) cause
    if last:
        raise PermanentDeliveryError(redact(f"Telegram refused the text message: {exc}")) from None
    return False


async def fallback_ladder(
    url: str,
    *,
    put_photo: PutPhoto,
    put_text: PutText,
    settle: Settle,
    corr_id: str,
    max_bytes: int,
    download_timeout: float,
    allow_private: bool = False,
    done_id: int | None = None,
    **log_fields: str,
) -> DeliveryResult:
    """The 3 levels, whatever puts the result into the chat (a new message, or an edit of one):
    the URL, the downloaded bytes, the link as text. `done_id`: the message id to report when
    `settle` says the result is already there."""
    edited = done_id is not None
    # Level 1: Telegram fetches the URL.
    try:
        return DeliveryResult("url", await put_photo(url), edited)
    except Exception as exc:
        if settle(exc, False):
            return DeliveryResult("url", done_id, edited)
        log_event(corr_id, "DELIVER_FALLBACK", level="bytes", reason=redact(exc)[:200], **log_fields)

    # Level 2: download here, upload the bytes.
    try:
        data = await download_image(url, max_bytes=max_bytes, timeout=download_timeout, allow_private=allow_private)
        return DeliveryResult("bytes", await put_photo(BufferedInputFile(data, filename="image.png")), edited)
    except DownloadError as exc:
        log_event(corr_id, "DELIVER_FALLBACK", level="text", reason=f"download: {exc}"[:200], **log_fields)
    except Exception as exc:
        if settle(exc, False):
            return DeliveryResult("bytes", done_id, edited)
        log_event(corr_id, "DELIVER_FALLBACK", level="text", reason=redact(exc)[:200], **log_fields)

    # Level 3: the link as text.
    try:
        return DeliveryResult("text", await put_text(), edited)
    except Exception as exc:
        settle(exc, True)
        return DeliveryResult("text", done_id, edited)


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
    reply_markup: InlineKeyboardMarkup | None = None,
) -> DeliveryResult:
    """A new message: sendPhoto (URL, then uploaded bytes), else sendMessage with the link."""

    async def put_photo(photo: str | BufferedInputFile) -> int:
        return (await bot.send_photo(chat_id, photo=photo, caption=caption, reply_markup=reply_markup)).message_id

    async def put_text() -> int:
        return (await bot.send_message(chat_id, link_text, disable_web_page_preview=False,
                                       reply_markup=reply_markup)).message_id

    return await fallback_ladder(url, put_photo=put_photo, put_text=put_text, settle=settle_send, corr_id=corr_id,
                                 max_bytes=max_bytes, download_timeout=download_timeout, allow_private=allow_private)


def create_bot(token: str, api_base: str, *, timeout: float = 30.0, pacing=None) -> Bot:
    """The real aiogram Bot, pointed at `api_base` (Telegram, or the local Bot API simulator).
    `pacing`: a request middleware run before the call is counted (the worker's Telegram pacer,
    imagegen/telegram_pacing.py), so a call the pacer refuses is not counted as Telegram's."""
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    register(token)
    from .telegram_metrics import CountingMiddleware

    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base), timeout=timeout)
    if pacing is not None:
        session.middleware(pacing)
    session.middleware(CountingMiddleware())
    return Bot(token, session=session)
