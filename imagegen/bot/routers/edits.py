"""Editing pictures (issue 16): a photo (or an album, or image files) with a caption, or pictures and
then a text → the edit models (never Z-Image: it takes no picture) → the model's options → ratio.

Pictures gather in the conversation state: the parts of one album (one media_group_id, separate
updates handled one after another, see serial.py), and any picture sent while the bot still waits for
the description. The bot answers an album with one message, edited as its parts arrive. A picture it
cannot take (too big, not JPEG/PNG/WebP, a sticker, an animation, a non-image file) gets a clear
answer and leaves the pictures already in hand as they are; so does a picture over the most any
model takes. Pictures left without a description get one reminder (imagegen/bot/reminders.py).

`build()` goes before the text-to-image conversation (a photo is taken in any state);
`build_refusals()` after it, before the fallback.
"""

from __future__ import annotations

import time

from aiogram import Bot, F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from imagegen.bot.callback_data import Back, ModelChoice
from imagegen.bot.generation import edit_text
from imagegen.bot.keyboards import edit_models_keyboard
from imagegen.bot.pictures import Refusal, images_from_data, images_to_data, is_picture, picture_of
from imagegen.bot.prompts import prompt_problem, too_long, within_window
from imagegen.bot.routers.conversation import _next_step
from imagegen.bot.states import Flow
from imagegen.contracts import InputImage
from imagegen.i18n import t
from imagegen.logs import log_event
from imagegen.models import EDIT_MODELS, MAX_EDIT_PROMPT_CHARS, MAX_INPUT_IMAGES, get_model

EDIT_KEYS = frozenset(m.key for m in EDIT_MODELS)
# States in which a picture joins the pictures in hand whatever its album (no description yet).
GATHERING = (Flow.collecting_images.state,)
# States of an edit after its description: a picture of the same album still joins.
EDIT_STEPS = (Flow.choosing_edit_model.state, Flow.choosing_option.state, Flow.choosing_ratio.state)
EXCERPT = 200


def _excerpt(prompt: str) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1].rstrip() + "…"


async def _show(bot: Bot, chat_id: int, data: dict, text: str, markup: InlineKeyboardMarkup | None) -> int:
    """The one message about this set of pictures: edited in place as an album's parts arrive, else sent."""
    menu = data.get("menu")
    if menu:
        try:
            await bot.edit_message_text(text=text, chat_id=chat_id, message_id=menu, reply_markup=markup)
            return menu
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return menu
            # deleted, or no longer editable: a new message
    sent = await bot.send_message(chat_id, text, reply_markup=markup)
    return getattr(sent, "message_id", None)


async def _ask(bot: Bot, chat_id: int, state: FSMContext, data: dict, notes: list[str], lang: str) -> None:
    """Ask for what is missing: the description, else the model (the one message of this set)."""
    count = len(data["images"])
    data.pop("reminded", None)  # new pictures or a description: a later wait is reminded again
    if data.get("prompt"):
        await state.set_state(Flow.choosing_edit_model)
        text = t("edit.choose_model", lang, count=count, prompt=_excerpt(data["prompt"]))
        markup = edit_models_keyboard(count, lang)
    else:
        await state.set_state(Flow.collecting_images)
        text, markup = t("edit.got", lang, count=count), None
    data["menu"] = await _show(bot, chat_id, data, "\n\n".join([text, *notes]), markup)
    data["asked_at"] = int(time.time())
    await state.set_data(data)


async def on_picture(message: Message, state: FSMContext, bot: Bot, lang: str = "ru") -> None:
    """A photo or an image file, in any state: it joins the pictures in hand, or starts a new edit."""
    picture = picture_of(message)
    data = await state.get_data()
    current = await state.get_state()
    group = message.media_group_id
    joins = bool(data.get("images")) and (current in GATHERING or (
        current in EDIT_STEPS and group is not None and group == data.get("group")))
    if isinstance(picture, Refusal):  # the state is left as it is: the pictures in hand stay
        log_event(f"chat{message.chat.id}", "EDIT_PICTURE_REFUSED", reason=picture.key)
        count = len(data.get("images") or [])
        text = t(picture.key, lang, **picture.values)
        await message.answer(text + (f"\n{t('edit.kept', lang, count=count)}" if count else ""))
        return
    if not joins:
        data = {"images": [], "group": group, "messages": [], "lang": lang}
    if message.message_id in data.get("messages", []):
        return  # the same update again (a webhook redelivery)
    data["messages"] = [*data.get("messages", []), message.message_id][-2 * MAX_INPUT_IMAGES:]
    data["group"] = group or data.get("group")
    notes = []
    if len(data["images"]) >= MAX_INPUT_IMAGES:
        data["extra"] = data.get("extra", 0) + 1
    else:
        data["images"] = [*data["images"], *images_to_data([picture])]
    if data.get("extra"):
        notes.append(t("edit.too_many", lang, limit=MAX_INPUT_IMAGES, extra=data["extra"]))
    caption = (message.caption or "").strip()
    if caption and not data.get("prompt"):
        problem = prompt_problem(message.caption, MAX_EDIT_PROMPT_CHARS)
        if problem:
            notes.append(problem)
        else:
            data.update(prompt=caption, prompt_at=int(message.date.timestamp()))
    await _ask(bot, message.chat.id, state, data, notes, lang)


async def on_description(message: Message, state: FSMContext, bot: Bot, lang: str = "ru") -> None:
    """The text after the pictures: what to change (again, while the models are offered: it replaces
    the description)."""
    data = await state.get_data()
    if not data.get("images"):
        await state.clear()
        await message.answer(t("start_first"))
        return
    now = int(message.date.timestamp())
    text = message.text or ""
    if within_window(data.get("refused_at"), now):  # the rest of a message refused as too long
        data["refused_at"] = now
        await state.set_data(data)
        await message.answer(t("prompt.continuation", limit=MAX_EDIT_PROMPT_CHARS))
        return
    problem = prompt_problem(text, MAX_EDIT_PROMPT_CHARS)
    if problem:
        if too_long(text, MAX_EDIT_PROMPT_CHARS):
            data["refused_at"] = now
            await state.set_data(data)
        await message.answer(problem)
        return
    data.update(prompt=text.strip(), prompt_at=now, refused_at=None, menu=None)  # the model menu: a new message
    await _ask(bot, message.chat.id, state, data, [], lang)


async def on_edit_model(query: CallbackQuery, callback_data: ModelChoice, state: FSMContext,
                        lang: str = "ru") -> None:
    model = get_model(callback_data.key)
    data = await state.get_data()
    images = images_from_data(data)
    if (model is None or await state.get_state() != Flow.choosing_edit_model.state or not images
            or not data.get("prompt") or not isinstance(query.message, Message)):
        await query.answer(t("stale_button"), show_alert=True)
        return
    if len(images) > model.images.max_count:
        await query.answer(t("edit.model_too_many", model=model.title(lang), limit=model.images.max_count,
                             count=len(images)), show_alert=True)
        return
    if too_long(data["prompt"], model.max_prompt_chars):
        await query.answer(t("prompt.too_long", length=len(data["prompt"]), limit=model.max_prompt_chars),
                           show_alert=True)
        return
    await state.update_data(model=model.key, options={})
    text, kwargs = await _next_step(state, model, {}, lang)
    await edit_text(query.message, text, **kwargs)
    await query.answer()


async def on_edit_back(query: CallbackQuery, callback_data: Back, state: FSMContext, lang: str = "ru") -> None:
    """Back from an edit's first step after the model (its options or ratio) to the edit models; from
    a new description of an edit to its pictures. Not an edit: the conversation's own back button."""
    data = await state.get_data()
    current = await state.get_state()
    images = images_from_data(data)
    if not images or not isinstance(query.message, Message):
        raise SkipHandler()
    if callback_data.to == "prompt" and current in (Flow.choosing_option.state, Flow.choosing_ratio.state) \
            and data.get("prompt"):
        await state.set_state(Flow.choosing_edit_model)
        await state.update_data(model=None, options={})
        await edit_text(query.message, t("edit.choose_model", lang, count=len(images),
                                         prompt=_excerpt(data["prompt"])),
                        reply_markup=edit_models_keyboard(len(images), lang))
    elif callback_data.to == "models" and current == Flow.writing_prompt.state:
        await state.set_state(Flow.collecting_images)
        await state.set_data({"images": images_to_data(images), "lang": lang, "asked_at": int(time.time())})
        await edit_text(query.message, t("edit.got", lang, count=len(images)))
    else:
        raise SkipHandler()
    await query.answer()


async def start_with(message: Message, state: FSMContext, images: list[InputImage], lang: str,
                     text_key: str = "edit.ask_change") -> None:
    """Begin an edit of these pictures (a delivered result: ✏️): ask what to change."""
    await state.clear()
    await state.set_state(Flow.collecting_images)
    sent = await message.answer(t(text_key, lang, count=len(images)))
    await state.set_data({"images": images_to_data(images), "lang": lang, "menu": getattr(sent, "message_id", None),
                          "asked_at": int(time.time())})


# -- what is not a picture ------------------------------------------------------------------------

async def on_sticker(message: Message) -> None:
    await _refuse(message, "edit.sticker")


async def on_animation(message: Message) -> None:
    await _refuse(message, "edit.animated")


async def on_not_image(message: Message) -> None:
    await _refuse(message, "edit.not_image")


async def _refuse(message: Message, key: str) -> None:
    log_event(f"chat{message.chat.id}", "EDIT_PICTURE_REFUSED", reason=key)
    await message.answer(t(key))


async def on_not_text_while_gathering(message: Message, state: FSMContext) -> None:
    count = len((await state.get_data()).get("images") or [])
    await message.answer(t("edit.need_text", count=count))


def build() -> Router:
    router = Router(name="edits")
    router.message.register(on_picture, F.func(is_picture))
    router.message.register(on_description, StateFilter(Flow.collecting_images, Flow.choosing_edit_model), F.text)
    router.callback_query.register(on_edit_model, ModelChoice.filter(F.key.in_(EDIT_KEYS)))
    router.callback_query.register(on_edit_back, Back.filter(F.to.in_({"prompt", "models"})))
    return router


def build_refusals() -> Router:
    """After the conversation (which answers any non-text while it waits for a prompt)."""
    router = Router(name="edit-refusals")
    router.message.register(on_sticker, F.sticker)
    router.message.register(on_animation, F.animation | F.video | F.video_note)
    router.message.register(on_not_image, F.document)
    router.message.register(on_not_text_while_gathering, StateFilter(Flow.collecting_images))
    return router
