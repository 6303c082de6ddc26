"""The dialog: model → prompt → extra options (from the model registry) → ratio → generation.

Every inline step has a back button; a button that does not belong to the current step gets a polite
toast (see fallback.py). The tail of a long text split by Telegram never becomes a prompt on its own
(imagegen.bot.prompts)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from temporalio.client import Client

from imagegen.bot.callback_data import Back, ModelChoice, OptionChoice, RatioChoice
from imagegen.bot.generation import Request, edit_text, submit
from imagegen.bot.keyboards import back_keyboard, models_keyboard, option_keyboard, ratios_keyboard
from imagegen.bot.pictures import images_from_data
from imagegen.bot.prompts import looks_split, prompt_problem, too_long, within_window
from imagegen.bot.states import Flow
from imagegen.credits import Ledger
from imagegen.i18n import t
from imagegen.jobs import JobRepository
from imagegen.models import ImageModel, get_model
from imagegen.settings import Settings

PROMPT_STATES = (Flow.writing_prompt, Flow.choosing_option, Flow.choosing_ratio)


async def _stale(query: CallbackQuery) -> None:
    await query.answer(t("stale_button"), show_alert=True)


def _ask_prompt(model: ImageModel, lang: str) -> tuple[str, dict]:
    return (t("ask_prompt", lang, model=model.title(lang), limit=model.max_prompt_chars),
            {"reply_markup": back_keyboard(lang, "models")})


async def _next_step(state: FSMContext, model: ImageModel, options: dict[str, str], lang: str) -> tuple[str, dict]:
    """The next extra option the model asks for, else the ratio: (text, send kwargs); sets the state."""
    option = model.next_option(options)
    if option is not None:
        await state.set_state(Flow.choosing_option)
        back_to = "options" if options else "prompt"
        return t(f"option.{option.name}", lang), {"reply_markup": option_keyboard(option, lang, back_to)}
    await state.set_state(Flow.choosing_ratio)
    return t("ask_ratio", lang), {"reply_markup": ratios_keyboard(model, lang)}


async def on_model(query: CallbackQuery, callback_data: ModelChoice, state: FSMContext, lang: str = "ru") -> None:
    """Choosing a model (re)starts the dialog from that menu, in any state."""
    model = get_model(callback_data.key)
    if model is None or not isinstance(query.message, Message):
        await _stale(query)
        return
    await state.set_state(Flow.writing_prompt)
    await state.set_data({"model": model.key, "options": {}})
    text, kwargs = _ask_prompt(model, lang)
    await edit_text(query.message, text, **kwargs)
    await query.answer()


async def on_text(message: Message, state: FSMContext, lang: str = "ru") -> None:
    """A text while a prompt is expected (or, in a later step, a new prompt)."""
    data = await state.get_data()
    model = get_model(data.get("model"))
    if model is None:
        await state.clear()
        await message.answer(t("start_first"))
        return
    now = int(message.date.timestamp())
    text = message.text or ""
    limit = model.max_prompt_chars
    if await state.get_state() != Flow.writing_prompt.state and looks_split(data.get("prompt_chars"), data.get("prompt_at"), now):
        # The accepted prompt was the first part of a split message: neither part is used.
        await state.set_state(Flow.writing_prompt)
        await state.set_data({"model": model.key, "options": data.get("options") or {}, "refused_at": now,
                              **({"images": data["images"]} if data.get("images") else {})})  # an edit's pictures
        await message.answer(t("prompt.split", limit=limit))
        return
    if within_window(data.get("refused_at"), now):  # the rest of a message refused as too long
        await state.update_data(refused_at=now)
        await message.answer(t("prompt.continuation", limit=limit))
        return
    problem = prompt_problem(text, limit)
    if problem:
        if too_long(text, limit):
            await state.update_data(refused_at=now)
        await message.answer(problem)
        return
    options = data.get("options") or {}
    await state.update_data(prompt=text.strip(), prompt_chars=len(text), prompt_at=now, refused_at=None)
    reply, kwargs = await _next_step(state, model, options, lang)
    await message.answer(reply, **kwargs)


async def on_not_text(message: Message) -> None:
    await message.answer(t("prompt.need_text"))


async def on_option(query: CallbackQuery, callback_data: OptionChoice, state: FSMContext, lang: str = "ru") -> None:
    data = await state.get_data()
    model = get_model(data.get("model"))
    options = dict(data.get("options") or {})
    option = model.next_option(options) if model else None
    if (option is None or option.name != callback_data.name or callback_data.value not in option.values
            or not data.get("prompt") or not isinstance(query.message, Message)):
        await _stale(query)
        return
    options[option.name] = callback_data.value
    await state.update_data(options=options)
    text, kwargs = await _next_step(state, model, options, lang)
    await edit_text(query.message, text, **kwargs)
    await query.answer()


async def on_ratio(query: CallbackQuery, callback_data: RatioChoice, state: FSMContext, temporal: Client,
                   settings: Settings, lang: str = "ru", jobs: JobRepository | None = None,
                   ledger: Ledger | None = None) -> None:
    data = await state.get_data()
    model = get_model(data.get("model"))
    prompt = data.get("prompt")
    ratio = callback_data.aspect_ratio
    if model is None or not prompt or ratio not in model.aspect_ratios or not isinstance(query.message, Message):
        await _stale(query)
        return
    images = images_from_data(data)
    if model.edits != bool(images):  # an edit model needs its pictures, a text model takes none
        await _stale(query)
        return
    req = Request(model=model, prompt=prompt, ratio=ratio, lang=lang, options=data.get("options") or {},
                  images=images)
    if await submit(query, query.message, req, temporal=temporal, settings=settings, jobs=jobs, ledger=ledger):
        await state.clear()


async def on_back(query: CallbackQuery, callback_data: Back, state: FSMContext, lang: str = "ru") -> None:
    """Back one step. Only from the step the button belongs to; otherwise the button is stale."""
    current = await state.get_state()
    data = await state.get_data()
    model = get_model(data.get("model"))
    if not isinstance(query.message, Message) or model is None and callback_data.to != "models":
        await _stale(query)
        return
    if callback_data.to == "models" and current == Flow.writing_prompt.state:
        await state.set_state(Flow.choosing_model)
        await state.set_data({})
        await edit_text(query.message, t("welcome"), reply_markup=models_keyboard(lang))
    elif callback_data.to == "prompt" and current in (Flow.choosing_option.state, Flow.choosing_ratio.state):
        await state.set_state(Flow.writing_prompt)
        await state.set_data({"model": model.key, "options": {}})
        text, kwargs = _ask_prompt(model, lang)
        await edit_text(query.message, text, **kwargs)
    elif callback_data.to == "options" and current in (Flow.choosing_option.state, Flow.choosing_ratio.state):
        await state.update_data(options={})
        text, kwargs = await _next_step(state, model, {}, lang)
        await edit_text(query.message, text, **kwargs)
    else:
        await _stale(query)
        return
    await query.answer()


def build() -> Router:
    router = Router(name="conversation")
    router.callback_query.register(on_model, ModelChoice.filter())
    router.message.register(on_text, StateFilter(*PROMPT_STATES), F.text)
    router.message.register(on_not_text, StateFilter(Flow.writing_prompt))
    router.callback_query.register(on_option, OptionChoice.filter(), StateFilter(Flow.choosing_option))
    router.callback_query.register(on_ratio, RatioChoice.filter(), StateFilter(Flow.choosing_ratio))
    router.callback_query.register(on_back, Back.filter())
    return router
