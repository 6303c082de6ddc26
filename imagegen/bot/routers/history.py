"""/history: the user's last 10 generations, with a button to get each finished picture again."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from imagegen.bot.callback_data import HistoryResend
from imagegen.bot.keyboards import history_keyboard
from imagegen.bot.resend import resend_result
from imagegen.i18n import t
from imagegen.jobs import JobRepository, job_input_files
from imagegen.models import get_model
from imagegen.settings import Settings

HISTORY_SIZE = 10
PROMPT_EXCERPT = 60
OUTCOME_KEYS = {"delivered": "outcome.delivered", "fail": "outcome.failed", "error": "outcome.failed",
                "timeout": "outcome.timeout", "cancelled": "outcome.cancelled",
                "undeliverable": "outcome.undeliverable"}


def excerpt(prompt: str, limit: int = PROMPT_EXCERPT) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def model_title(key: str, lang: str) -> str:
    model = get_model(key)
    return model.title(lang) if model else key


def pictures_mark(job: dict) -> str:
    """" · 📎3" for an edit of three pictures, "" for a text-to-image job."""
    count = len(job_input_files(job))
    return f" · 📎{count}" if count else ""


def history_text(jobs: list[dict], lang: str) -> str:
    """At most HISTORY_SIZE short entries: well under Telegram's 4096 characters."""
    lines = [t("history.title", lang)]
    for n, job in enumerate(jobs, 1):
        lines.append(t("history.line", lang, n=n, when=job["created_at"].strftime("%d.%m %H:%M"),
                       model=model_title(job["model"], lang) + pictures_mark(job), ratio=job["aspect_ratio"],
                       outcome=t(OUTCOME_KEYS.get(job["state"], "outcome.running"), lang),
                       prompt=excerpt(job["prompt"])))
    if any(job["result_urls"] for job in jobs):
        lines.append(t("history.hint", lang))
    return "\n\n".join(lines)


async def on_history(message: Message, lang: str = "ru", jobs: JobRepository | None = None) -> None:
    recent = await jobs.recent_for_user(message.from_user.id, HISTORY_SIZE) if jobs and message.from_user else []
    if not recent:
        await message.answer(t("history.empty"))
        return
    resendable = [(n, job["id"]) for n, job in enumerate(recent, 1) if job["result_urls"]]
    await message.answer(history_text(recent, lang), reply_markup=history_keyboard(resendable, lang))


async def on_resend(query: CallbackQuery, callback_data: HistoryResend, bot: Bot, settings: Settings,
                    lang: str = "ru", jobs: JobRepository | None = None) -> None:
    job = await jobs.get_for_user(callback_data.job, query.from_user.id) if jobs else None
    if job is None or not job["result_urls"] or not isinstance(query.message, Message):
        await query.answer(t("resend.missing"), show_alert=True)
        return
    await query.answer()
    await resend_result(bot, query.message.chat.id, job["result_urls"][0], as_document=False,
                        caption=t("caption", model=model_title(job["model"], lang), ratio=job["aspect_ratio"]),
                        lang=lang, settings=settings, corr_id=job["id"])


def build() -> Router:
    router = Router(name="history")
    router.message.register(on_history, Command("history"))
    router.callback_query.register(on_resend, HistoryResend.filter())
    return router
