"""The buttons under a delivered picture: Again, New prompt, Other ratio, Original (as a document),
Edit this picture (the result becomes an edit's input). For an edit, Again / New prompt / Other ratio
keep its pictures (Again and Other ratio give Kie the same uploads again while Kie keeps them)."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from temporalio.client import Client

from imagegen.bot.callback_data import ResultAction
from imagegen.bot.generation import Request, submit
from imagegen.bot.keyboards import back_keyboard, ratios_keyboard
from imagegen.bot.pictures import images_to_data
from imagegen.bot.resend import resend_result
from imagegen.bot.routers.edits import start_with
from imagegen.bot.states import Flow
from imagegen.contracts import InputImage
from imagegen.credits import Ledger
from imagegen.i18n import t
from imagegen.jobs import JobRepository, job_options
from imagegen.logs import log_event
from imagegen.models import get_model
from imagegen.settings import Settings
from imagegen.uploads import images_from_job


def result_picture(message: Message, job: dict) -> InputImage | None:
    """The delivered result as an edit's input: the photo under which ✏️ was pressed (Telegram keeps
    it), else (delivered as a link) Kie's result URL."""
    if message.photo:
        size = message.photo[-1]
        return InputImage(file_id=size.file_id, file_unique_id=size.file_unique_id, size=size.file_size or 0)
    if job["result_urls"]:
        return InputImage(url=job["result_urls"][0])
    return None


async def on_result_action(query: CallbackQuery, callback_data: ResultAction, state: FSMContext, bot: Bot,
                           temporal: Client, settings: Settings, lang: str = "ru",
                           jobs: JobRepository | None = None, ledger: Ledger | None = None) -> None:
    job = await jobs.get_for_user(callback_data.job, query.from_user.id) if jobs else None
    model = get_model(job["model"]) if job else None
    if job is None or model is None or not isinstance(query.message, Message):
        await query.answer(t("stale_button"), show_alert=True)
        return
    options = job_options(job)
    chat = query.message.chat.id
    action = callback_data.action
    images = images_from_job(job) if model.edits else []  # an edit's pictures, with their uploads
    if action == "again":  # same model, prompt and options: a new generation within the limits
        req = Request(model=model, prompt=job["prompt"], ratio=job["aspect_ratio"], lang=lang, options=options,
                      images=images)
        status = await bot.send_message(chat, t("status.started", model=model.title(lang), ratio=req.ratio))
        if await submit(query, status, req, temporal=temporal, settings=settings, jobs=jobs, ledger=ledger,
                        fresh_status=True):
            await state.clear()
    elif action == "prompt":  # same model and options, a new description
        await state.set_state(Flow.writing_prompt)
        await state.set_data({"model": model.key, "options": options,
                              **({"images": images_to_data(images)} if images else {})})
        await bot.send_message(chat, t("ask_prompt", model=model.title(lang), limit=model.max_prompt_chars),
                               reply_markup=back_keyboard(lang, "models"))
        await query.answer()
    elif action == "ratio":  # same model, prompt and options, another ratio
        await state.set_state(Flow.choosing_ratio)
        await state.set_data({"model": model.key, "options": options, "prompt": job["prompt"],
                              **({"images": images_to_data(images)} if images else {})})
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
    elif action == "edit":  # the result itself becomes the picture to edit
        picture = result_picture(query.message, job)
        if picture is None:
            await query.answer(t("edit.result_gone"), show_alert=True)
            return
        log_event(job["id"], "EDIT_OF_RESULT", user_id=query.from_user.id,
                  source="telegram" if picture.file_id else "url")
        await start_with(query.message, state, [picture], lang)
        await query.answer()
    else:
        await query.answer(t("stale_button"), show_alert=True)


def build() -> Router:
    router = Router(name="results")
    router.callback_query.register(on_result_action, ResultAction.filter())
    return router
