"""What operators see of a generation in the Temporal UI: search attributes and the static summary.

Sandbox-safe (only temporalio.common and the contracts): the workflow imports it to upsert the
attributes as the generation moves on; the bot uses it when it starts the workflow. The names are
fixed (saved views and scripts use them); every dev server the project starts registers them
(``dev_server_args()``), and a real cluster needs the ``temporal operator search-attribute create``
commands in the README.
"""

from __future__ import annotations

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

USER_ID = SearchAttributeKey.for_int("TelegramUserId")
CHAT_ID = SearchAttributeKey.for_int("TelegramChatId")
KIE_TASK_ID = SearchAttributeKey.for_keyword("KieTaskId")
STATE = SearchAttributeKey.for_keyword("GenerationState")
MODEL = SearchAttributeKey.for_keyword("ImageModel")
DELIVERY_LEVEL = SearchAttributeKey.for_keyword("DeliveryLevel")

ALL_KEYS = (USER_ID, CHAT_ID, KIE_TASK_ID, STATE, MODEL, DELIVERY_LEVEL)

# GenerationState values, in the order a generation moves through them (the last six are final).
STATES = ("creating", "waiting", "delivering", "delivered", "failed", "timeout", "error", "undeliverable",
          "cancelled")
# The workflow's outcome → the final GenerationState.
OUTCOME_STATE = {"done": "delivered", "failed": "failed", "timeout": "timeout", "error": "error",
                 "undeliverable": "undeliverable", "cancelled": "cancelled"}

SUMMARY_PROMPT_CHARS = 60


def _type_name(key: SearchAttributeKey) -> str:
    return "Int" if key.value_type is int else "Keyword"


def cli_definitions() -> list[tuple[str, str]]:
    """(name, type) for ``temporal operator search-attribute create --name N --type T``."""
    return [(key.name, _type_name(key)) for key in ALL_KEYS]


def dev_server_args() -> list[str]:
    """``temporal server start-dev`` arguments that register every attribute at start."""
    args: list[str] = []
    for name, kind in cli_definitions():
        args += ["--search-attribute", f"{name}={kind}"]
    return args


def initial_attributes(*, user_id: int, chat_id: int, model: str) -> TypedSearchAttributes:
    """Set by the bot when it starts the workflow: searchable from the first second."""
    return TypedSearchAttributes([
        SearchAttributePair(USER_ID, user_id),
        SearchAttributePair(CHAT_ID, chat_id),
        SearchAttributePair(MODEL, model),
        SearchAttributePair(STATE, "creating"),
    ])


def state_update(state: str) -> SearchAttributeUpdate:
    if state not in STATES:
        raise ValueError(f"unknown GenerationState {state!r}")
    return STATE.value_set(state)


def excerpt(prompt: str, limit: int = SUMMARY_PROMPT_CHARS) -> str:
    """The prompt on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(prompt.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def static_summary(*, model_title: str, aspect_ratio: str, user_id: int, prompt: str) -> str:
    """One line for the workflow list, e.g. ``Z-Image 16:9 · user 424242 · «a lighthouse…»``."""
    return f"{model_title} {aspect_ratio} · user {user_id} · «{excerpt(prompt)}»"


def static_details(*, job_id: str, model_title: str, kie_model: str, aspect_ratio: str, user_id: int,
                   chat_id: int, prompt: str, extra: dict[str, object] | None = None) -> str:
    """The full parameters (Markdown, shown in the UI's "User Metadata")."""
    lines = [
        f"**Job** `{job_id}`",
        f"**Model** {model_title} (`{kie_model}`)",
        f"**Aspect ratio** {aspect_ratio}",
        f"**User** {user_id} · **chat** {chat_id}",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"**{key}** {value}")
    lines += ["**Prompt**", "", prompt]
    return "\n".join(lines)
