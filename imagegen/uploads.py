"""An edit's input pictures: fetched from Telegram, checked, uploaded to Kie's file upload API.

Kie's file upload API lives on its own host (``KIE_UPLOAD_BASE``, same Bearer key as the jobs API):
``POST /api/file-stream-upload`` with a multipart ``file``, an ``uploadPath`` and an optional
``fileName``; the answer's ``data.downloadUrl`` is what createTask's ``image_urls`` takes. Uploads are
free and deleted after 3 days. A second upload under the same path and name replaces the first, so
the names here are deterministic per job and picture (``upload_name``): an upload repeated after a
crash replaces its own earlier copy, never adds one.

Every picture is checked twice: before the download (the size Telegram announces, and Telegram's
own refusal of files over 20 MB) and after it (the real size, and the type read from the bytes: only
the model's types, JPEG/PNG/WebP). A picture that fails a check raises :class:`InputProblem` (asking
again cannot help); trouble that may pass (network, 5xx, 429) raises :class:`InputUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramNotFound, TelegramRetryAfter

from imagegen.kie import KieClient, KieError

STREAM_UPLOAD_PATH = "/api/file-stream-upload"
KIE_KEEPS_UPLOADS_SECONDS = 3 * 24 * 3600
UPLOAD_DIR = "imagegen/inputs"  # the uploadPath of every input picture
TELEGRAM_GETFILE_MAX_BYTES = 20 * 1024 * 1024  # the Bot API's download limit
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


class InputProblem(Exception):
    """A picture that cannot be used: `reason` is "too_big", "bad_type" or "gone"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class InputUnavailable(Exception):
    """Telegram or Kie could not be reached (or refused for now): asking again later may help."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def sniff_type(data: bytes) -> str | None:
    """The image type the bytes really are (JPEG, PNG, WebP, GIF), else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def upload_name(job_id: str, index: int, mime: str) -> str:
    """The file name of picture `index` of job `job_id` on Kie: the same for every attempt."""
    return f"{job_id}-{index}.{EXTENSIONS.get(mime, 'bin')}"


def still_kept(uploaded_at: float, reuse_hours: float, now: float | None = None) -> bool:
    """Whether an upload made at `uploaded_at` (Unix seconds) may be given to Kie again now: younger
    than `reuse_hours` (KIE_UPLOAD_REUSE_HOURS, within Kie's 3 days)."""
    if not uploaded_at or reuse_hours <= 0:
        return False
    age = (time.time() if now is None else now) - uploaded_at
    return 0 <= age < min(reuse_hours * 3600, KIE_KEEPS_UPLOADS_SECONDS)


def mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"


def check_picture(data: bytes, *, max_bytes: int, types: tuple[str, ...], what: str) -> str:
    """The picture's type once it is downloaded; InputProblem when it is too big or not one of `types`."""
    if len(data) > max_bytes:
        raise InputProblem("too_big", f"{what} is {len(data)} bytes, over the {max_bytes} limit")
    mime = sniff_type(data)
    if mime not in types:
        raise InputProblem("bad_type", f"{what} is {mime or 'not a picture'}, not one of {', '.join(types)}")
    return mime


async def download_telegram_file(bot: Bot, file_id: str, *, max_bytes: int, timeout: float,
                                 announced: int | None = None) -> bytes:
    """The bytes of a Telegram file (getFile, then the file URL, through the bot's own aiohttp session),
    refusing more than `max_bytes`: before the download (what Telegram announces) and during it."""
    if announced and announced > max_bytes:
        raise InputProblem("too_big", f"Telegram announced {announced} bytes, over the {max_bytes} limit")
    try:
        file = await bot.get_file(file_id)
    except TelegramRetryAfter as exc:
        raise InputUnavailable(f"getFile: Telegram 429, retry after {exc.retry_after}s",
                               retry_after=float(exc.retry_after)) from None
    except TelegramBadRequest as exc:
        if "too big" in exc.message:
            raise InputProblem("too_big", f"getFile: {exc.message}") from None
        raise InputProblem("gone", f"getFile: {exc.message}") from None
    except TelegramNotFound as exc:
        raise InputProblem("gone", f"getFile: {exc.message}") from None
    except Exception as exc:  # network, 5xx, timeouts
        raise InputUnavailable(f"getFile: {type(exc).__name__}: {exc}") from None
    if file.file_size and file.file_size > max_bytes:
        raise InputProblem("too_big", f"Telegram says the file is {file.file_size} bytes, over the {max_bytes} limit")
    if not file.file_path:
        raise InputProblem("gone", "getFile answered without a file_path")
    url = bot.session.api.file_url(bot.token, file.file_path)
    session = await bot.session.create_session()
    chunks, size = [], 0
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                # The file path is valid for an hour: a new getFile (the next attempt) gets a fresh one.
                raise InputUnavailable(f"file download: HTTP {resp.status}")
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise InputProblem("too_big", f"the download exceeds the {max_bytes} byte limit")
                chunks.append(chunk)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise InputUnavailable(f"file download: {type(exc).__name__}") from None
    return b"".join(chunks)


@dataclass(frozen=True)
class Uploaded:
    url: str  # Kie's downloadUrl: what createTask takes
    file_name: str
    size: int
    mime: str
    sha256: str


class KieUploader(KieClient):
    """Kie's file upload API (its own host, same key): the jobs client's checks of the HTTP status and
    the body code, with a multipart body instead of JSON."""

    def __init__(self, upload_base: str, api_key: str, *, timeout: float = 60.0,
                 session: aiohttp.ClientSession | None = None):
        super().__init__(upload_base, api_key, timeout=timeout, session=session)
        self._headers = {"Authorization": f"Bearer {api_key}"}  # aiohttp sets the multipart type

    async def upload(self, data: bytes, *, file_name: str, mime: str, upload_path: str = UPLOAD_DIR) -> Uploaded:
        """Upload one file under `upload_path`/`file_name` (replacing an earlier one of that name)."""
        form = aiohttp.FormData()
        form.add_field("file", data, filename=file_name, content_type=mime)
        form.add_field("uploadPath", upload_path)
        form.add_field("fileName", file_name)
        body = await self._call("POST", STREAM_UPLOAD_PATH, data=form)
        if body.get("success") is False:
            raise KieError(200, str(body.get("msg") or "upload refused"), retryable=True, http_status=200)
        answer: Any = body.get("data")
        url = answer.get("downloadUrl") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise KieError(200, "upload answered without a downloadUrl", retryable=True, http_status=200)
        return Uploaded(url=url, file_name=file_name, size=len(data), mime=mime,
                        sha256=hashlib.sha256(data).hexdigest())

    async def still_there(self, url: str, timeout: float = 10.0) -> bool:
        """Whether Kie still serves an earlier upload (HEAD answers 200): Kie's pages say both 24 hours
        and 3 days, so an upload is reused only when it is young enough *and* still there."""
        session = await self._get_session()
        try:
            async with session.head(url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=True) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False


# -- an edit's pictures between the chat, the job row and the workflow input ------------------------

def source_of(image: Any) -> str:
    """What identifies a picture's source across jobs: its Telegram file_unique_id, else its URL."""
    return getattr(image, "file_unique_id", "") or getattr(image, "url", "") or getattr(image, "file_id", "")


def input_records(images: list[Any]) -> list[dict[str, Any]]:
    """The job row's `input_files` for these InputImages (what the user gave; no upload state)."""
    return [{"file_id": i.file_id, "file_unique_id": i.file_unique_id, "url": i.url, "size": i.size, "mime": i.mime}
            for i in images]


def images_from_job(job: dict[str, Any], *, reuse: bool = True) -> list[Any]:
    """The InputImages of an earlier job (Again, Other ratio, the sweep), each with that job's upload of
    it (when `reuse`): the upload activity gives Kie that URL again while Kie still keeps it."""
    from imagegen.contracts import InputImage
    from imagegen.jobs import job_input_files, job_uploads

    uploads = job_uploads(job) if reuse else {}
    images = []
    for index, f in enumerate(job_input_files(job)):
        image = InputImage(file_id=str(f.get("file_id") or ""), file_unique_id=str(f.get("file_unique_id") or ""),
                           url=str(f.get("url") or ""), size=int(f.get("size") or 0), mime=str(f.get("mime") or ""))
        up = uploads.get(index)
        if up and up.get("source") == source_of(image) and isinstance(up.get("url"), str):
            image.uploaded_url, image.uploaded_at = up["url"], float(up.get("uploaded_at") or 0)
        images.append(image)
    return images
