"""The upload_inputs activity: an edit's pictures from Telegram (or an earlier result's URL) to Kie's
file upload API, whose URLs createTask then gets (imagegen/uploads.py has the domain code).

Safe to repeat after a crash at any point, without a lost or doubled picture:

* every picture has its own deterministic name on Kie (``<job id>-<index>.<ext>``): an upload repeated
  after a crash replaces its own earlier copy under the same name;
* each finished upload is recorded at once in the job row (``uploads``, by index) and heartbeated; a
  retried attempt reuses what is recorded (or heartbeated, when the row write failed) and uploads only
  the rest; the result is always one URL per picture, in the user's order;
* a picture an earlier job uploaded (Again, Other ratio) is given to Kie again while Kie keeps it
  (KIE_UPLOAD_REUSE_HOURS, within Kie's 3 days), otherwise it is fetched and uploaded again.
"""

from __future__ import annotations

import asyncio
import time

from aiogram import Bot
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import budget
from imagegen import ratelimits
from imagegen.contracts import InputImage, UploadedImage, UploadInput
from imagegen.delivery import DownloadError, download_image
from imagegen.jobs import JobRepository, job_uploads
from imagegen.kie import ACCOUNT_CODES, KieError
from imagegen.logs import log_event
from imagegen.models import MODELS, ImageInputs
from imagegen.redact import redact
from imagegen.settings import Settings
from imagegen.uploads import (InputProblem, InputUnavailable, KieUploader, check_picture, download_telegram_file,
                              source_of, still_kept, upload_name)

BENIGN = ApplicationErrorCategory.BENIGN
HEARTBEAT_EVERY_SECONDS = 2.0
OWN_UPLOADS_HOURS = 72.0


def _earlier(details: object) -> dict[str, dict]:
    """The uploads a previous attempt heartbeated ({index: record}), if any."""
    if isinstance(details, (list, tuple)) and details and isinstance(details[-1], dict):
        uploads = details[-1].get("uploads")
        if isinstance(uploads, dict):
            return {str(k): v for k, v in uploads.items() if isinstance(v, dict)}
    return {}


def _uploaded(index: int, record: dict) -> UploadedImage:
    return UploadedImage(index=index, url=record["url"], file_name=record.get("file_name", ""),
                         size=int(record.get("size") or 0), sha256=record.get("sha256", ""),
                         mime=record.get("mime", ""), uploaded_at=float(record.get("uploaded_at") or 0),
                         reused=bool(record.get("reused")))


class InputActivities:
    def __init__(self, *, settings: Settings, repo: JobRepository, bot: Bot, uploader: KieUploader):
        self.settings = settings
        self.repo = repo
        self.bot = bot
        self.uploader = uploader

    @activity.defn(name="upload_inputs")
    async def upload_inputs(self, inp: UploadInput) -> list[UploadedImage]:
        """Each picture on Kie's file host, in order: reused when this job (an earlier attempt) or the
        job it repeats already has it there, else fetched, checked and uploaded."""
        model = MODELS.get(inp.model)
        spec = model.images if model is not None else None
        if spec is None or not inp.images or len(inp.images) > spec.max_count:
            most = spec.max_count if spec else 0
            raise ApplicationError(f"input picture count {len(inp.images)}: {inp.model} takes 1 to {most}",
                                   type="InputRejected", non_retryable=True, category=BENIGN)
        deadline = budget.attempt_deadline()
        memo: dict = {"uploads": _earlier(activity.info().heartbeat_details)}
        beating = asyncio.create_task(self._keep_beating(memo))
        try:
            job = await self.repo.get(inp.job_id)
            recorded = job_uploads(job) if job is not None else {}
            done = []
            for index, image in enumerate(inp.images):
                record = await self._one(inp.job_id, index, image, spec, recorded, memo, deadline)
                done.append(_uploaded(index, record))
        finally:
            beating.cancel()
        log_event(inp.job_id, "INPUTS_UPLOADED", count=len(done), reused=sum(u.reused for u in done),
                  files=",".join(u.file_name for u in done))
        return done

    async def _keep_beating(self, memo: dict) -> None:
        """Heartbeat (with the uploads so far) while a long download or upload runs: a cancel reaches
        it, and a dead worker is noticed within the heartbeat timeout."""
        while True:
            budget.heartbeat({"uploads": dict(memo["uploads"])})
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    async def _one(self, job_id: str, index: int, image: InputImage, spec: ImageInputs,
                   recorded: dict[int, dict], memo: dict, deadline: float) -> dict:
        source = source_of(image)
        reuse_hours = self.settings.kie_upload_reuse_hours
        earlier = recorded.get(index) or memo["uploads"].get(str(index))
        if earlier and earlier.get("source") == source and still_kept(float(earlier.get("uploaded_at") or 0),
                                                                         OWN_UPLOADS_HOURS):
            # This job's own upload, by an earlier attempt: Kie has it under this job's name (a job
            # lives far less than Kie keeps uploads, so it is always reused, whatever the setting).
            log_event(job_id, "INPUT_REUSED", index=index, file=earlier.get("file_name"), reason="earlier attempt")
            await self._record(job_id, index, earlier, memo)
            return earlier
        if (image.uploaded_url and still_kept(image.uploaded_at, reuse_hours)
                and await self.uploader.still_there(image.uploaded_url)):
            record = {"url": image.uploaded_url, "file_name": image.uploaded_url.rsplit("/", 1)[-1], "size": image.size,
                      "sha256": "", "mime": image.mime, "uploaded_at": image.uploaded_at, "reused": True,
                      "source": source}
            log_event(job_id, "INPUT_REUSED", index=index, file=record["file_name"], reason="earlier job",
                      age_h=round((time.time() - image.uploaded_at) / 3600, 1))
            await self._record(job_id, index, record, memo)
            return record
        data = await self._fetch(job_id, index, image, spec, deadline)
        try:
            mime = check_picture(data, max_bytes=spec.max_bytes, types=spec.types, what=f"picture {index + 1}")
        except InputProblem as exc:
            raise self._rejected(job_id, index, exc) from None
        name = upload_name(job_id, index, mime)
        try:
            up = await self.uploader.upload(data, file_name=name, mime=mime)
        except KieError as exc:
            raise self._kie_failed(job_id, index, exc) from None
        record = {"url": up.url, "file_name": up.file_name, "size": up.size, "sha256": up.sha256, "mime": up.mime,
                  "uploaded_at": time.time(), "reused": False, "source": source}
        log_event(job_id, "INPUT_UPLOADED", index=index, file=name, size=up.size, mime=mime)
        await self._record(job_id, index, record, memo)
        return record

    async def _fetch(self, job_id: str, index: int, image: InputImage, spec: ImageInputs, deadline: float) -> bytes:
        timeout = max(min(self.settings.download_timeout_seconds, budget.remaining(deadline)), 1.0)
        try:
            if image.file_id:
                return await download_telegram_file(self.bot, image.file_id, max_bytes=spec.max_bytes,
                                                    timeout=timeout, announced=image.size or None)
            try:
                return await download_image(image.url, max_bytes=spec.max_bytes, timeout=timeout,
                                            allow_private=self.settings.allow_private_urls)
            except DownloadError as exc:
                text = str(exc)
                if "cap" in text or "over the" in text:
                    raise InputProblem("too_big", f"result download: {text}") from None
                if text.startswith("HTTP 4") or "content type" in text or "body is not" in text:
                    raise InputProblem("gone", f"result download: {text}") from None
                raise InputUnavailable(f"result download: {text}") from None
        except InputProblem as exc:
            raise self._rejected(job_id, index, exc) from None
        except InputUnavailable as exc:
            log_event(job_id, "INPUT_FETCH_RETRY", index=index, error=redact(exc)[:200])
            delay = ratelimits.jittered(exc.retry_after) if exc.retry_after else None
            raise ApplicationError(redact(f"input picture {index + 1}: {exc}"), type="InputUnavailable",
                                   next_retry_delay=delay, category=BENIGN) from None

    async def _record(self, job_id: str, index: int, record: dict, memo: dict) -> None:
        """Remember the upload: heartbeated at once, and in the job row (a write that fails is only
        logged: the heartbeat carries it to the next attempt, and the URL goes on to createTask)."""
        memo["uploads"][str(index)] = record
        budget.heartbeat({"uploads": dict(memo["uploads"])})
        try:
            await asyncio.wait_for(self.repo.record_upload(job_id, index, record), budget.DB_CALL_SECONDS)
        except Exception as exc:
            log_event(job_id, "INPUT_RECORD_FAILED", index=index, error=redact(f"{type(exc).__name__}: {exc}")[:200])

    @staticmethod
    def _rejected(job_id: str, index: int, exc: InputProblem) -> ApplicationError:
        log_event(job_id, "INPUT_REJECTED", index=index, reason=exc.reason, error=redact(exc)[:200])
        return ApplicationError(redact(f"input picture {index + 1}: {exc.reason}: {exc}"), type="InputRejected",
                                non_retryable=True, category=BENIGN)

    @staticmethod
    def _kie_failed(job_id: str, index: int, exc: KieError) -> ApplicationError:
        log_event(job_id, "INPUT_UPLOAD_FAILED", index=index, code=exc.code, retryable=exc.retryable,
                  error=redact(exc.message)[:200])
        if exc.retryable:
            delay = ratelimits.jittered(ratelimits.KIE_CREATE_WINDOW_SECONDS) if exc.code == 429 else None
            return ApplicationError(redact(f"upload: {exc}"), type="KieUnavailable", next_retry_delay=delay,
                                    category=BENIGN)
        kind = "KieUnusable" if exc.code in ACCOUNT_CODES else "KieRejected"
        return ApplicationError(redact(f"upload: {exc}"), type=kind, non_retryable=True, category=BENIGN)

    def all(self) -> list:
        return [self.upload_inputs]

