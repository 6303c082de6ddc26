"""Inline keyboards, built from the model registry and the catalogues. The worker uses
result_keyboard for the buttons under a delivered picture."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from imagegen.bot.callback_data import (
    Back,
    HistoryResend,
    LangChoice,
    ModelChoice,
    OptionChoice,
    RatioChoice,
    ResultAction,
)
from imagegen.i18n import t
from imagegen.models import TEXT_MODELS, ImageModel, Option, edit_models_for

LANG_TITLES = {"ru": "🇷🇺 Русский", "en": "🇬🇧 English"}


def _rows(buttons: list[InlineKeyboardButton], width: int) -> list[list[InlineKeyboardButton]]:
    return [buttons[i:i + width] for i in range(0, len(buttons), width)]


def _back(lang: str, to: str) -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(text=t("button.back", lang), callback_data=Back(to=to).pack())]


def models_keyboard(lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=m.title(lang), callback_data=ModelChoice(key=m.key).pack())]
        for m in TEXT_MODELS
    ])


def edit_models_keyboard(count: int, lang: str) -> InlineKeyboardMarkup:
    """The models that can edit `count` pictures (never Z-Image: it takes no picture)."""
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=m.title(lang), callback_data=ModelChoice(key=m.key).pack())]
        for m in edit_models_for(count)
    ])


def back_keyboard(lang: str, to: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[_back(lang, to)])


def option_keyboard(option: Option, lang: str, back_to: str) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(text=t(f"option.{option.name}.{v}", lang),
                                    callback_data=OptionChoice(name=option.name, value=v).pack())
               for v in option.values]
    return InlineKeyboardMarkup(inline_keyboard=[*_rows(buttons, 2), _back(lang, back_to)])


def ratio_back_target(model: ImageModel) -> str:
    return "options" if model.options else "prompt"


def ratios_keyboard(model: ImageModel, lang: str) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(text=r, callback_data=RatioChoice.of(r).pack()) for r in model.aspect_ratios]
    return InlineKeyboardMarkup(inline_keyboard=[*_rows(buttons, 4), _back(lang, ratio_back_target(model))])


def result_keyboard(job_id: str, lang: str) -> InlineKeyboardMarkup:
    """Under a delivered picture: Again / New prompt / Other ratio / Original / Edit this picture."""
    def button(key: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(text=t(key, lang), callback_data=ResultAction(action=action, job=job_id).pack())

    return InlineKeyboardMarkup(inline_keyboard=[
        [button("button.again", "again"), button("button.new_prompt", "prompt")],
        [button("button.other_ratio", "ratio"), button("button.original", "orig")],
        [button("button.edit_result", "edit")],
    ])


def history_keyboard(numbered_jobs: list[tuple[int, str]], lang: str) -> InlineKeyboardMarkup | None:
    buttons = [InlineKeyboardButton(text=t("button.resend", lang, n=n), callback_data=HistoryResend(job=job).pack())
               for n, job in numbered_jobs]
    return InlineKeyboardMarkup(inline_keyboard=_rows(buttons, 5)) if buttons else None


def language_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text=title, callback_data=LangChoice(lang=code).pack()) for code, title in LANG_TITLES.items()
    ]])
