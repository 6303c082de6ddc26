"""One log line per pipeline event, grep-able by correlation id.

Format: ``[<corr_id>] EVENT key=value ...`` (the seed's chain: JOB_CREATED, CALLBACK_RECEIVED,
CALLBACK_PARSED, POLL_TICK, DELIVER_LOCK_WIN / DELIVER_LOCK_SKIP, DELIVER_START, DELIVER_OK,
MARK_DELIVERED). The correlation id of a generation is its job id.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

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
    logger.log(severity, event_line(corr_id, event, **fields),
               extra={"corr_id": corr_id, "event": event, "fields": fields})


def _jsonable(value: object) -> object:
    from imagegen.redact import redact  # the handler's filter cleans the message; fields are cleaned here

    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(value)


class JsonFormatter(logging.Formatter):
    """LOG_FORMAT=json: one object per line: time, level, logger, corr_id, event, fields, message;
    a traceback (bugs only) goes in "exc". Lines not written by log_event carry only the message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if getattr(record, "event", None):
            out["corr_id"] = record.corr_id
            out["event"] = record.event
            out["fields"] = {k: _jsonable(v) for k, v in record.fields.items()}
        out["message"] = record.getMessage()
        if record.exc_info:
            from imagegen.redact import redact

            out["exc"] = record.exc_text or redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", stream=None, fmt: str = "text") -> None:
    """Logs on stderr (or `stream`) for the entry points: plain text, or JSON lines (fmt="json")."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log and aiogram's per-update lines are noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
