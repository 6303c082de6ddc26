"""Checking a prompt before it goes to Kie, and telling the tail of a split long message from a prompt.

Telegram clients split a text longer than 4096 characters into several messages sent within a second
or two. The tail must never become a generation on its own: after a prompt refused as too long, a
text within CONTINUATION_SECONDS is its continuation and is refused with it; after a prompt as long as
a split part can be (SPLIT_PART_MIN_CHARS or more), a text within that window means the prompt was
split, and both are refused.
"""

from __future__ import annotations

import unicodedata

from imagegen.i18n import t

TELEGRAM_MESSAGE_LIMIT = 4096
CONTINUATION_SECONDS = 2
SPLIT_PART_MIN_CHARS = 3 * TELEGRAM_MESSAGE_LIMIT // 4

# Characters that show nothing: spaces, and format characters such as zero-width spaces.
_INVISIBLE_CATEGORIES = ("Zs", "Zl", "Zp", "Cf", "Cc")


def prompt_problem(prompt: str | None, limit: int, lang: str | None = None) -> str | None:
    """A friendly message when the prompt cannot be sent to Kie; None when it is fine.

    Refused: empty or only invisible characters; control characters other than newline and tab
    (and unpaired surrogates); over `limit` characters."""
    if not isinstance(prompt, str) or not prompt.strip():
        return t("prompt.empty", lang)
    if all(c.isspace() or unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in prompt):
        return t("prompt.empty", lang)
    if any((unicodedata.category(c) == "Cc" and c not in "\n\t") or unicodedata.category(c) == "Cs"
           for c in prompt):
        return t("prompt.bad_chars", lang)
    if too_long(prompt, limit):
        return t("prompt.too_long", lang, length=len(prompt.strip()), limit=limit)
    return None


def too_long(prompt: str, limit: int) -> bool:
    return len(prompt.strip()) > limit


def within_window(earlier: int | None, now: int) -> bool:
    """Telegram message dates (whole seconds): `now` follows `earlier` within the continuation window."""
    return earlier is not None and 0 <= now - earlier <= CONTINUATION_SECONDS


def looks_split(prompt_chars: int | None, prompt_date: int | None, now: int) -> bool:
    """A text at `now` right after a prompt long enough to be the first part of a split message."""
    return (prompt_chars or 0) >= SPLIT_PART_MIN_CHARS and within_window(prompt_date, now)
