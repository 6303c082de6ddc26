"""The user's status text for a generation's outcome, with a human reason in their language.

The raw cause (Kie's failMsg, an HTTP error) stays in the logs, the job row and the workflow result;
the chat only ever gets one of these: content refused, prompt invalid, an edit's picture unusable
(too big, not a JPEG/PNG/WebP, no longer available), generation failed, service busy, service
unavailable, timed out, cancelled.
"""

from __future__ import annotations

import re

from imagegen.i18n import t

_CONTENT = re.compile(r"prohibit|nsfw|sensitive|unsafe|safety|policy|inappropriate|moderat|violat", re.I)
# An edit's picture (activities/inputs.py: "input picture N: <reason>: …"; Kie: "image_urls[N]: …").
_INPUT = re.compile(r"input picture|image_urls", re.I)
_INVALID = re.compile(r"invalid|validation|\b422\b|not allowed|too long|exceeds", re.I)
_BUSY = re.compile(r"\b(429|433|455)\b|rate.?limit|too many|maintenance|busy|overload|exceeds limit", re.I)


# A workflow's outcome → the job row's state (generation_jobs.state); "done" is recorded by the delivery.
ROW_STATE = {"failed": "fail", "timeout": "timeout", "error": "error", "cancelled": "cancelled",
             "undeliverable": "undeliverable"}


def reason_key(outcome: str, detail: str = "") -> str | None:
    """The catalogue key of the final status; None when the user cannot be reached (undeliverable)."""
    if outcome == "done":
        return "status.done"
    if outcome == "timeout":
        return "status.timeout"
    if outcome == "cancelled":
        return "status.cancelled"
    if outcome == "failed":
        if (detail or "").startswith("credits:"):  # the balance was too low when the workflow reserved
            return "status.credits_low"
        if _CONTENT.search(detail or ""):
            return "status.content_refused"
        if _INPUT.search(detail or ""):
            return ("status.input_too_big" if "too_big" in detail else
                    "status.input_bad_type" if "bad_type" in detail else "status.input_gone")
        if _INVALID.search(detail or ""):
            return "status.prompt_invalid"
        return "status.failed"
    if outcome == "error":
        return "status.busy" if _BUSY.search(detail or "") else "status.unavailable"
    return None


def status_text(outcome: str, detail: str, lang: str) -> str | None:
    key = reason_key(outcome, detail)
    return t(key, lang) if key else None
