"""The buttons under a delivered picture: Again, New prompt, Other ratio, Original (as a document)."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from temporalio.client import Client

from imagegen.bot.callback_data import ResultAction
from imagegen.bot.generation import Request, submit
from imagegen.bot.keyboards import back_keyboard, ratios_keyboard
from imagegen.bot.resend import resend_result
from imagegen.bot.states import Flow
from imagegen.i18n import t
from imagegen.jobs import JobRepository, job_options
from imagegen.models import get_model
from imagegen.settings import Settings


async def on_result_action(query: CallbackQuery, callback_data: ResultAction, state: FSMContext, bot: Bot,
                           temporal: Client, settings: Settings, lang: str = "ru",
                           jobs: JobRepository | None = None) -> None:
    job = await jobs.get_for_user(callback_data.job, query.from_user.id) if jobs else None
    model = get_model(job["model"]) if job else None
    if job is None or model is None or not isinstance(query.message, Message):
        await query.answer(t("stale_button"), show_alert=True)
        return
    options = job_options(job)
    chat = query.message.chat.id
    action = callback_data.action
    if action == "again":  # same model, prompt and options: a new generation within the limits
        req = Request(model=model, prompt=job["prompt"], ratio=job["aspect_ratio"], lang=lang, options=options)
        status = await bot.send_message(chat, t("status.started", model=model.title(lang), ratio=req.ratio))
        if await submit(query, status, req, temporal=temporal, settings=settings, jobs=jobs, fresh_status=True):
            await state.clear()
    elif action == "prompt":  # same model and options, a new description
        await state.set_state(Flow.writing_prompt)
        await state.set_data({"model": model.key, "options": options})
        await bot.send_message(chat, t("ask_prompt", model=model.title(lang), limit=model.max_prompt_chars),
                               reply_markup=back_keyboard(lang, "models"))
        await query.answer()
    elif action == "ratio":  # same model, prompt and options, another ratio
        await state.set_state(Flow.choosing_ratio)
        await state.set_data({"model": model.key, "options": options, "prompt": job["prompt"]})
        await bot.send_message(chat, t("ask_ratio"), reply_markup=ratios_keyboard(model, lang))
        await query.answer()
    elif action == "orig":
        if not job["result_urls"]:
            await query.answer(t("resend.missing"), show_alert=True)
            return
        await query.answer()
        await resend_result(bot, chat, job["result_urls"][0], as_document=True,
                            caption=t("caption", model=model.title(lang), ratio=job["aspect_ratio"]),
                            lang=lang, settings=settings, corr_id=job["id"])
    else:
        await query.answer(t("stale_button"), show_alert=True)


def build() -> Router:
    router = Router(name="results")
    router.callback_query.register(on_result_action, ResultAction.filter())
    return router
