"""Starting one generation from the chat: per-user limits, the status message, the workflow.

One function for every way a generation starts (the ratio tap, "Again", "Other ratio"), so the order
of its steps lives in one place.
"""

from __future__ import annotations

import hashlib
import logging
import time
import math
from dataclasses import dataclass, field

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message
from temporalio.client import Client

from imagegen import kie_account, metrics
from imagegen.contracts import GenerationInput, InputImage, workflow_id_for
from imagegen.i18n import t
from imagegen.jobs import Admission, JobRepository
from imagegen.credits import Ledger
from imagegen.launch import deployment_fields, ensure_started, generation_price
from imagegen.logs import log_event
from imagegen.models import ImageModel
from imagegen.redact import redact
from imagegen.settings import Settings
from imagegen.uploads import input_records

log = logging.getLogger("imagegen.bot")


@dataclass(frozen=True)
class Request:
    model: ImageModel
    prompt: str
    ratio: str
    lang: str
    options: dict[str, str] = field(default_factory=dict)
    images: list[InputImage] = field(default_factory=list)  # an edit's pictures (an edit model)


def job_id_for(message: Message) -> str:
    """Deterministic per request (the bot's status message), so a double press is one generation.
    Bot id and message date are in the key so that a new bot (message ids restart) or a reset chat
    never maps onto an old job."""
    key = f"{message.bot.id if message.bot else 0}:{message.chat.id}:{message.message_id}:{int(message.date.timestamp())}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def limit_message(admission: Admission, settings: Settings, lang: str) -> str:
    if admission.outcome == "too_many_recent":
        return t("limit.recent", lang, limit=settings.user_max_per_minute,
                 seconds=max(1, math.ceil(admission.retry_after)))
    return t("limit.active", lang, active=admission.active, limit=settings.user_max_active)


async def edit_text(message: Message, text: str, **kwargs) -> None:
    """Edit a bot message; a repeated press that would not change it is not an error."""
    try:
        await message.edit_text(text, **kwargs)
    except TelegramBadRequest as exc:
        if "not modified" not in exc.message:
            raise


async def _show_status(message: Message, job_id: str, text: str) -> None:
    """The "⏳" status is cosmetic: if Telegram refuses it now (429, network), the generation still
    starts and the workflow's final edit still lands on this message."""
    try:
        await edit_text(message, text)
    except Exception as exc:
        log_event(job_id, "STATUS_EDIT_FAILED", severity=logging.WARNING, error=redact(f"{type(exc).__name__}: {exc}")[:200])


KIE_FLAG_TTL_SECONDS = 5.0


class KieFlag:
    """Whether the Kie account is known to be out of credits (the kie_account row,
    imagegen/kie_account.py), read at most every `ttl` seconds; a database that does not answer says
    no (the admission then speaks). invalidate(): the next ask reads the row again."""

    def __init__(self, ttl: float = KIE_FLAG_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._read_at: float | None = None
        self._out = False

    def invalidate(self) -> None:
        self._read_at = None

    async def out_of_credits(self, pool) -> bool:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at > self.ttl:
            try:
                out = (await kie_account.account(pool))["out_of_credits"]
            except Exception:
                out = False
            self._read_at, self._out = now, bool(out)
        return self._out


_kie_flag = KieFlag()  # one per bot process


async def submit(
    query: CallbackQuery,
    status_message: Message,
    req: Request,
    *,
    temporal: Client,
    settings: Settings,
    jobs: JobRepository | None,
    ledger: Ledger | None = None,
    fresh_status: bool = False,
) -> bool:
    """Admit, show the status, start the workflow, answer the button. True when the generation runs
    (now or from an earlier press of the same button).

    `status_message` becomes the status message (the tapped menu, or a message just sent for "Again":
    `fresh_status`, where a refusal is written into it instead of a popup). `ledger`: the dispatcher's
    (dp["ledger"], set with CREDITS=on)."""
    chat_id, status_message_id = status_message.chat.id, status_message.message_id
    job_id = job_id_for(status_message)
    user_id = query.from_user.id
    options = req.model.clean_options(req.options)

    async def refuse(text: str) -> bool:
        if fresh_status:
            await edit_text(status_message, text)
            await query.answer()
        else:
            await query.answer(text, show_alert=True)
        return False

    if jobs is not None and await _kie_flag.out_of_credits(jobs.pool):
        # Kie's account is out of credits (imagegen/kie_account.py): every generation would fail.
        log_event(job_id, "JOB_REFUSED_KIE_CREDITS", user_id=user_id)
        return await refuse(t("status.unavailable", req.lang))

    price = generation_price(settings, req.model.key, options)
    if price and ledger is not None:
        # Told before anything starts; the workflow's reservation is what really takes the credits.
        balance = await ledger.balance(user_id)
        if balance < price:
            log_event(job_id, "JOB_REFUSED_CREDITS", user_id=user_id, price=price, balance=balance)
            return await refuse(t("credits.need", req.lang, price=price, balance=balance))

    repeated = False  # this job was admitted before: a second press of the same button
    if jobs is not None:
        # Per-user limits, checked and recorded in one step: the job row is inserted here (the
        # create_task activity's create_job finds it and returns it unchanged).
        try:
            admission = await jobs.admit_job(
                job_id=job_id, workflow_id=workflow_id_for(job_id, req.model.key), user_id=user_id, chat_id=chat_id,
                model=req.model.key, prompt=req.prompt, aspect_ratio=req.ratio, status_message_id=status_message_id,
                max_active=settings.user_max_active, max_per_minute=settings.user_max_per_minute,
                active_window_seconds=settings.max_wait_seconds + 300, options=options, lang=req.lang,
                input_files=input_records(req.images),
            )
        except Exception as exc:
            log_event(job_id, "JOB_ADMIT_FAILED", severity=logging.ERROR, error=redact(f"{type(exc).__name__}: {exc}")[:300])
            return await refuse(t("start_failed", req.lang))
        if not admission.admitted:
            log_event(job_id, "USER_LIMITED", user_id=user_id, limit=admission.outcome, active=admission.active,
                      recent=admission.recent, retry_after=round(admission.retry_after, 1))
            # A menu stays as it is: the same button works once the limit allows.
            return await refuse(limit_message(admission, settings, req.lang))
        repeated = admission.outcome == "exists"
    status_text = t("status.started", req.lang, model=req.model.title(req.lang), ratio=req.ratio)
    if not repeated:  # a repeat must not overwrite a status the running workflow already set
        await _show_status(status_message, job_id, status_text)
    inp = GenerationInput(
        job_id=job_id, user_id=user_id, chat_id=chat_id, model=req.model.key, prompt=req.prompt,
        aspect_ratio=req.ratio, status_message_id=status_message_id,
        lang=req.lang, options=options, images=list(req.images), price=price,
        **deployment_fields(settings),
    )
    try:
        # Safe to repeat; after an ambiguous failure (e.g. a timeout after the server accepted) it
        # asks the server before anything is reported as failed (imagegen.launch.ensure_started).
        outcome = await ensure_started(temporal, inp, task_queue=settings.temporal_task_queue)
    except Exception as exc:  # the server says the workflow does not exist: it really did not start
        log_event(job_id, "JOB_START_FAILED", severity=logging.ERROR, error=redact(f"{type(exc).__name__}: {exc}")[:300])
        if jobs is not None:  # free the user's slot: this request never became a generation
            try:
                await jobs.set_state(job_id, "error", error="workflow start failed")
            except Exception:
                log.exception("could not mark job %s as failed", job_id)
        await edit_text(status_message, t("start_failed", req.lang))
        await query.answer()
        return False
    if outcome == "already":
        log_event(job_id, "JOB_DUPLICATE_REQUEST", user_id=user_id)
        await query.answer(t("already_started", req.lang))
        return True
    if outcome != "started":  # "accepted": it runs; "unknown": it runs, or the sweep starts or closes it
        log_event(job_id, "JOB_START_AMBIGUOUS", severity=logging.WARNING, outcome=outcome)
    metrics.count("imagegen_generations_started", model=req.model.key)
    if repeated:  # the earlier press recorded the job but never started it (e.g. the bot restarted)
        await _show_status(status_message, job_id, status_text)
    log_event(job_id, "JOB_SUBMITTED", workflow_id=workflow_id_for(job_id, req.model.key), user_id=user_id,
              model=req.model.key, aspect_ratio=req.ratio, prompt_chars=len(req.prompt), lang=req.lang,
              **({"pictures": len(req.images)} if req.images else {}), **options)
    await query.answer()
    return True
