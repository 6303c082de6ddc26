"""The conversation: /start → model → prompt → aspect ratio → GenerationWorkflow.

One Router; state in an aiogram StatesGroup; buttons are CallbackData factories.
"""

from __future__ import annotations

import hashlib
import logging
import math
import unicodedata

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandStart, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from imagegen import texts
from imagegen.contracts import GenerationInput, workflow_id_for
from imagegen.jobs import JobRepository
from imagegen.launch import start_generation
from imagegen import metrics
from imagegen.logs import log_event
from imagegen.models import MODELS, get_model
from imagegen.redact import redact
from imagegen.settings import Settings

log = logging.getLogger("imagegen.bot")


class Flow(StatesGroup):
    choosing_model = State()
    writing_prompt = State()
    choosing_ratio = State()


class ModelChoice(CallbackData, prefix="model"):
    key: str


class RatioChoice(CallbackData, prefix="ratio"):
    ratio: str  # "16x9": ':' is CallbackData's separator

    @property
    def aspect_ratio(self) -> str:
        return self.ratio.replace("x", ":")


def models_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=m.title, callback_data=ModelChoice(key=m.key).pack())] for m in MODELS.values()
        ]
    )


def ratios_keyboard(model_key: str) -> InlineKeyboardMarkup:
    model = MODELS[model_key]
    row = [
        InlineKeyboardButton(text=r, callback_data=RatioChoice(ratio=r.replace(":", "x")).pack())
        for r in model.aspect_ratios
    ]
    return InlineKeyboardMarkup(inline_keyboard=[row])


def job_id_for(message: Message) -> str:
    """Deterministic per request (the bot's ratio-keyboard message), so a double press is one
    generation. Bot id and message date are in the key so that a new bot (message ids restart) or a
    reset chat never maps onto an old job."""
    key = f"{message.bot.id if message.bot else 0}:{message.chat.id}:{message.message_id}:{int(message.date.timestamp())}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# Characters that show nothing: spaces, and format characters such as zero-width spaces.
_INVISIBLE_CATEGORIES = ("Zs", "Zl", "Zp", "Cf", "Cc")


def prompt_problem(prompt: str | None, limit: int) -> str | None:
    """A friendly message when the prompt cannot be sent to Kie; None when it is fine.

    Refused: empty or only invisible characters; control characters other than newline and tab
    (and unpaired surrogates); over `limit` characters."""
    if not isinstance(prompt, str) or not prompt.strip():
        return texts.PROMPT_EMPTY
    if all(c.isspace() or unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in prompt):
        return texts.PROMPT_EMPTY
    if any((unicodedata.category(c) == "Cc" and c not in "\n\t") or unicodedata.category(c) == "Cs"
           for c in prompt):
        return texts.PROMPT_BAD_CHARS
    if len(prompt.strip()) > limit:
        return texts.PROMPT_TOO_LONG.format(length=len(prompt.strip()), limit=limit)
    return None


async def _edit(message: Message, text: str) -> None:
    """Edit a bot message; a repeated press that would not change it is not an error."""
    try:
        await message.edit_text(text)
    except TelegramBadRequest as exc:
        if "not modified" not in exc.message:
            raise


async def _show_status(message: Message, job_id: str, text: str) -> None:
    """The "⏳" status is cosmetic: if Telegram refuses it now (429, network), the generation still
    starts and the workflow's final edit still lands on this message."""
    try:
        await _edit(message, text)
    except Exception as exc:
        log_event(job_id, "STATUS_EDIT_FAILED", severity=logging.WARNING, error=redact(f"{type(exc).__name__}: {exc}")[:200])


async def on_start(message: Message, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(Flow.choosing_model)
    await message.answer(texts.WELCOME, reply_markup=models_keyboard())


async def on_model(query: CallbackQuery, callback_data: ModelChoice, state: FSMContext) -> None:
    model = get_model(callback_data.key)
    if model is None or not isinstance(query.message, Message):
        await query.answer(texts.STALE_BUTTON, show_alert=True)
        return
    await state.set_state(Flow.writing_prompt)
    await state.update_data(model=model.key)
    await _edit(query.message, texts.ASK_PROMPT.format(model=model.title, limit=model.max_prompt_chars))
    await query.answer()


async def on_prompt(message: Message, state: FSMContext) -> None:
    data = await state.get_data()
    model = get_model(data.get("model", ""))
    if model is None:
        await state.clear()
        await message.answer(texts.START_FIRST)
        return
    problem = prompt_problem(message.text, model.max_prompt_chars)
    if problem:
        await message.answer(problem)
        return
    await state.update_data(prompt=message.text.strip())
    await state.set_state(Flow.choosing_ratio)
    await message.answer(texts.ASK_RATIO, reply_markup=ratios_keyboard(model.key))


async def on_prompt_not_text(message: Message) -> None:
    await message.answer(texts.NEED_TEXT)


def limit_message(admission, settings: Settings) -> str:
    if admission.outcome == "too_many_recent":
        return texts.TOO_MANY_RECENT.format(limit=settings.user_max_per_minute,
                                            seconds=max(1, math.ceil(admission.retry_after)))
    return texts.TOO_MANY_ACTIVE.format(active=admission.active, limit=settings.user_max_active)


async def on_ratio(
    query: CallbackQuery,
    callback_data: RatioChoice,
    state: FSMContext,
    temporal: Client,
    settings: Settings,
    jobs: JobRepository | None = None,
) -> None:
    data = await state.get_data()
    model = get_model(data.get("model", ""))
    prompt = data.get("prompt")
    ratio = callback_data.aspect_ratio
    if model is None or not prompt or ratio not in model.aspect_ratios or not isinstance(query.message, Message):
        await query.answer(texts.STALE_BUTTON, show_alert=True)
        return
    chat_id = query.message.chat.id
    status_message_id = query.message.message_id
    job_id = job_id_for(query.message)
    user_id = query.from_user.id
    repeated = False  # this job was admitted before: a second press of the same button
    if jobs is not None:
        # Per-user limits, checked and recorded in one step: the job row is inserted here (the
        # create_task activity's create_job finds it and returns it unchanged).
        try:
            admission = await jobs.admit_job(
                job_id=job_id, workflow_id=workflow_id_for(job_id), user_id=user_id, chat_id=chat_id,
                model=model.key, prompt=prompt, aspect_ratio=ratio, status_message_id=status_message_id,
                max_active=settings.user_max_active, max_per_minute=settings.user_max_per_minute,
                active_window_seconds=settings.max_wait_seconds + 300,
            )
        except Exception as exc:
            log_event(job_id, "JOB_ADMIT_FAILED", severity=logging.ERROR, error=redact(f"{type(exc).__name__}: {exc}")[:300])
            await query.answer(texts.START_FAILED, show_alert=True)
            return
        if not admission.admitted:
            log_event(job_id, "USER_LIMITED", user_id=user_id, limit=admission.outcome, active=admission.active,
                      recent=admission.recent, retry_after=round(admission.retry_after, 1))
            # The menu stays as it is: the same button works once the limit allows.
            await query.answer(limit_message(admission, settings), show_alert=True)
            return
        repeated = admission.outcome == "exists"
    await state.clear()
    status_text = texts.STATUS_STARTED.format(model=model.title, ratio=ratio)
    if not repeated:  # a repeat must not overwrite a status the running workflow already set
        await _show_status(query.message, job_id, status_text)
    inp = GenerationInput(
        job_id=job_id,
        user_id=query.from_user.id,
        chat_id=chat_id,
        model=model.key,
        prompt=prompt,
        aspect_ratio=ratio,
        status_message_id=status_message_id,
        poll_schedule=[[u, i] for u, i in settings.poll_schedule],
    )
    try:
        await start_generation(temporal, inp, task_queue=settings.temporal_task_queue)
    except WorkflowAlreadyStartedError:
        log_event(job_id, "JOB_DUPLICATE_REQUEST", user_id=query.from_user.id)
        await query.answer(texts.ALREADY_STARTED)
        return
    except Exception as exc:
        log_event(job_id, "JOB_START_FAILED", severity=logging.ERROR, error=redact(f"{type(exc).__name__}: {exc}")[:300])
        if jobs is not None:  # free the user's slot: this request never became a generation
            try:
                await jobs.set_state(job_id, "error", error="workflow start failed")
            except Exception:
                log.exception("could not mark job %s as failed", job_id)
        await _edit(query.message, texts.START_FAILED)
        await query.answer()
        return
    metrics.count("imagegen_generations_started", model=model.key)
    if repeated:  # the earlier press recorded the job but never started it (e.g. the bot restarted)
        await _show_status(query.message, job_id, status_text)
    log_event(job_id, "JOB_SUBMITTED", workflow_id=workflow_id_for(job_id), user_id=query.from_user.id,
              model=model.key, aspect_ratio=ratio, prompt_chars=len(prompt))
    await query.answer()


async def on_ratio_stale(query: CallbackQuery) -> None:
    """A ratio button from an old menu, or pressed again after the generation started."""
    if isinstance(query.message, Message):
        job_id = job_id_for(query.message)
        log_event(job_id, "STALE_BUTTON", user_id=query.from_user.id)
    await query.answer(texts.STALE_BUTTON)


async def on_unknown_button(query: CallbackQuery) -> None:
    await query.answer(texts.STALE_BUTTON)


async def on_other_message(message: Message) -> None:
    await message.answer(texts.START_FIRST)


def build_router() -> Router:
    """A fresh Router with the conversation's handlers (order matters: specific before catch-all)."""
    router = Router(name="generation")
    router.message.register(on_start, CommandStart())
    router.message.register(on_start, Command("new"))
    router.callback_query.register(on_model, ModelChoice.filter())
    router.message.register(on_prompt, StateFilter(Flow.writing_prompt), F.text)
    router.message.register(on_prompt_not_text, StateFilter(Flow.writing_prompt))
    router.callback_query.register(on_ratio, RatioChoice.filter(), StateFilter(Flow.choosing_ratio))
    router.callback_query.register(on_ratio_stale, RatioChoice.filter())
    router.callback_query.register(on_unknown_button)
    router.message.register(on_other_message)
    return router
