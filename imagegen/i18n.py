"""Translations: aiogram's gettext-based ``I18n`` over compiled catalogues in imagegen/locales.

Message ids are keys (``status.done``); each language's catalogue (``<lang>/LC_MESSAGES/messages.po``,
compiled to ``.mo`` with ``make locales``) holds the text with ``{named}`` placeholders. The bot's
handlers translate in the user's locale set by the i18n middleware; the worker passes the language
carried in the workflow input explicitly.
"""

from __future__ import annotations

from pathlib import Path

from aiogram.utils.i18n import I18n

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"
LANGS = ("ru", "en")
DEFAULT_LANG = "ru"
# Russian for these Telegram language codes (and when the code is missing), English otherwise.
RUSSIAN_SPEAKING = {"ru", "uk", "be", "kk"}

i18n = I18n(path=LOCALES_DIR, default_locale=DEFAULT_LANG, domain=DOMAIN)


def lang_for(language_code: str | None) -> str:
    """The bot's language for a Telegram ``language_code`` (an IETF tag such as ``en-US``; may be missing)."""
    if not language_code:
        return "ru"
    primary = language_code.strip().lower().replace("_", "-").split("-")[0]
    return "ru" if primary in RUSSIAN_SPEAKING or not primary else "en"


def normalize(lang: str | None) -> str:
    return lang if lang in LANGS else DEFAULT_LANG


def t(key: str, lang: str | None = None, /, **params: object) -> str:
    """The text for `key` in `lang` (default: the current locale of the update being handled)."""
    text = i18n.gettext(key, locale=normalize(lang) if lang is not None else None)
    return text.format(**params) if params else text
