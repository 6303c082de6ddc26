"""Every inline button's data, as aiogram CallbackData factories (each packs to ≤ 64 bytes)."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class ModelChoice(CallbackData, prefix="model"):
    key: str


class OptionChoice(CallbackData, prefix="opt"):
    name: str
    value: str


class RatioChoice(CallbackData, prefix="ratio"):
    ratio: str  # "16x9": ':' is CallbackData's separator

    @classmethod
    def of(cls, aspect_ratio: str) -> RatioChoice:
        return cls(ratio=aspect_ratio.replace(":", "x"))

    @property
    def aspect_ratio(self) -> str:
        return self.ratio.replace("x", ":")


class Back(CallbackData, prefix="back"):
    to: str  # "models" | "prompt" | "options"


class ResultAction(CallbackData, prefix="res"):
    action: str  # "again" | "prompt" | "ratio" | "orig"
    job: str


class HistoryResend(CallbackData, prefix="hist"):
    job: str


class LangChoice(CallbackData, prefix="lang"):
    lang: str
