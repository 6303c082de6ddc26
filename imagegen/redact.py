"""Keep secrets out of logs and error messages.

Two layers:

* known values: :func:`register` the bot token, the Kie key, the callback secret, the webhook
  HMAC key, the Temporal API key and the database password as soon as they are used
  (``create_bot``, ``build_http_app`` and ``register_settings``
  do it); :func:`redact` replaces each with ``<redacted>``;
* shapes, for values nobody registered: Telegram bot tokens (``123456:AA…``, also inside
  ``/bot<token>/`` URL paths), ``Authorization: Bearer …`` values, and the ``token=`` query
  parameter of callback URLs.

A logging filter on the ``imagegen`` logger (every ``log_event`` line goes through it) is installed
when this module is imported; :func:`install` adds the same filter to the root handlers so that
third-party lines (aiogram, aiohttp, temporalio) are covered too.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "<redacted>"
_MIN_SECRET_LEN = 6  # shorter values would redact ordinary words

_PATTERNS = [
    # Telegram bot tokens: "<bot id>:<35 chars>", bare or inside a /bot<token>/ path.
    (re.compile(r"(?<![A-Za-z0-9])(bot)?\d{5,}:[A-Za-z0-9_-]{30,}"), lambda m: (m.group(1) or "") + REDACTED),
    (re.compile(r"(/bot)[^/\s?#]+(/)"), lambda m: m.group(1) + REDACTED + m.group(2)),
    # Authorization headers / bearer tokens.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), lambda m: m.group(1) + REDACTED),
    # Per-job callback tokens in callback URLs.
    (re.compile(r"(?i)([?&]token=)[^&\s\"']+"), lambda m: m.group(1) + REDACTED),
]

_lock = threading.Lock()
_secrets: set[str] = set()


def register(*values: str | None) -> None:
    """Remember secret values so that redact() removes them wherever they appear."""
    with _lock:
        for value in values:
            if isinstance(value, str) and len(value.strip()) >= _MIN_SECRET_LEN:
                _secrets.add(value.strip())


def register_settings(settings: Any) -> None:
    """Register every secret a Settings object carries (the DATABASE_URL password included)."""
    register(*settings.secret_values())


def redact(text: object) -> str:
    """`text` as a string with every known secret and secret-shaped value replaced."""
    out = str(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        if value in out:
            out = out.replace(value, REDACTED)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with redact() (and never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Pre-render the traceback through redact() so the handler prints the clean one.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to `logger` (default: every handler of the root logger). Idempotent."""
    if logger is not None:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        return
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


# Every log_event line goes through the "imagegen" logger itself.
install(logging.getLogger("imagegen"))
