"""One log line per pipeline event, grep-able by correlation id.

Format: ``[<corr_id>] EVENT key=value ...`` (the seed's chain: JOB_CREATED, CALLBACK_RECEIVED,
CALLBACK_PARSED, POLL_TICK, DELIVER_LOCK_WIN / DELIVER_LOCK_SKIP, DELIVER_START, DELIVER_OK,
MARK_DELIVERED). The correlation id of a generation is its job id.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("imagegen")


def _fmt(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text) or '"' in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def event_line(corr_id: str, event: str, **fields: object) -> str:
    parts = [f"[{corr_id}]", event] + [f"{k}={_fmt(v)}" for k, v in fields.items()]
    return " ".join(parts)


def log_event(corr_id: str, event: str, *, severity: int = logging.INFO, **fields: object) -> None:
    logger.log(severity, event_line(corr_id, event, **fields))


def setup_logging(level: str = "INFO", stream=None) -> None:
    """Plain-text logs on stderr (or `stream`) for the entry points."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log and aiogram's per-update lines are noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
