"""/start (/new), /help, /cancel and unknown commands: in every state, a command is never a prompt."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import Message
from temporalio.client import Client

from imagegen.bot.keyboards import models_keyboard
from imagegen.bot.states import Flow
from imagegen.i18n import t
from imagegen.jobs import JobRepository
from imagegen.logs import log_event
from imagegen.models import EDIT_MODELS, TEXT_MODELS
from imagegen.redact import redact
from imagegen.settings import Settings


async def on_start(message: Message, state: FSMContext, lang: str = "ru") -> None:
    await state.clear()
    await state.set_state(Flow.choosing_model)
    await message.answer(t("welcome"), reply_markup=models_keyboard(lang))


async def on_help(message: Message, lang: str = "ru", settings: Settings | None = None) -> None:
    await message.answer(t(
        "help", models=", ".join(m.title(lang) for m in TEXT_MODELS),
        edit_models=", ".join(f"{m.title(lang)} (≤ {m.images.max_count})" for m in EDIT_MODELS),
        active=settings.user_max_active if settings else 2, per_minute=settings.user_max_per_minute if settings else 5,
    ))


async def on_cancel(message: Message, state: FSMContext, temporal: Client | None = None,
                    jobs: JobRepository | None = None, settings: Settings | None = None) -> None:
    """Abandon the dialog; cancel the user's running generations through Temporal. The workflow ends
    Canceled and edits its status message to "🚫 …" (told once; nothing is sent after)."""
    await state.clear()
    stopped = 0
    if jobs is not None and temporal is not None and message.from_user is not None:
        window = settings.max_wait_seconds + 300 if settings else 3600.0
        for job in await jobs.running_for_user(message.from_user.id, window):
            try:
                await temporal.get_workflow_handle(job["workflow_id"]).cancel()
                stopped += 1
                log_event(job["id"], "CANCEL_REQUESTED", user_id=message.from_user.id)
            except Exception as exc:  # finished meanwhile, or Temporal unreachable
                log_event(job["id"], "CANCEL_FAILED", severity=logging.WARNING,
                          error=redact(f"{type(exc).__name__}: {exc}")[:200])
    await message.answer(t("cancel.generation" if stopped else "cancel.dialog"))


async def on_unknown_command(message: Message) -> None:
    command = (message.text or "").split()[0][:40]
    await message.answer(t("prompt.is_command", command=command))


def build() -> Router:
    router = Router(name="commands")
    router.message.register(on_start, CommandStart())
    router.message.register(on_start, Command("new"))
    router.message.register(on_help, Command("help"))
    router.message.register(on_cancel, Command("cancel"))
    return router


def build_unknown() -> Router:
    """Registered after every router that handles a command: what is left is unknown."""
    router = Router(name="unknown-commands")
    router.message.register(on_unknown_command, F.text.startswith("/"))
    return router
