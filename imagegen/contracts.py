"""Data passed between the bot, the workflow and the activities (Temporal payloads).

Plain dataclasses only: this module is imported inside the workflow sandbox. Nothing secret goes
in here, since every field lands in the workflow's event history.
"""

from __future__ import annotations

from dataclasses import dataclass, field


LEGACY_PREFIX = "zimage-"  # every id before workflow ids named their model (issue 15)


def workflow_id_for(job_id: str, model: str) -> str:
    """The Temporal workflow id of a generation: neutral and readable in the UI list
    (``gen-seedream45-<job>``). The job row keeps the id its workflow was started with."""
    return f"gen-{model}-{job_id}"


def legacy_workflow_id(job_id: str) -> str:
    """The id every generation had before ids named their model; such workflows may still run."""
    return f"{LEGACY_PREFIX}{job_id}"


def workflow_id_candidates(job_id: str, models: list[str] | tuple[str, ...]) -> list[str]:
    """Every id a workflow of `job_id` can have: one per model, then the legacy one."""
    return [workflow_id_for(job_id, m) for m in models] + [legacy_workflow_id(job_id)]


@dataclass
class InputImage:
    """One input picture of an edit: a Telegram file (a photo's largest size, or an image document)
    or the URL of an earlier result; with an earlier upload to Kie that may be reused (Again)."""

    file_id: str = ""
    file_unique_id: str = ""
    url: str = ""  # instead of a Telegram file: fetched with the download guards (imagegen.delivery)
    size: int = 0  # bytes, as Telegram announced (0: unknown)
    mime: str = ""  # as Telegram announced (documents)
    uploaded_url: str = ""  # Kie's downloadUrl of an earlier upload of this picture
    uploaded_at: float = 0.0  # Unix seconds of that upload (reused within KIE_UPLOAD_REUSE_HOURS)


@dataclass
class GenerationInput:
    job_id: str
    user_id: int
    chat_id: int
    model: str  # key in imagegen.models.MODELS
    prompt: str
    aspect_ratio: str
    status_message_id: int | None = None
    # [[until_seconds, interval_seconds], ...]: see imagegen.settings.DEFAULT_POLL_SCHEDULE
    poll_schedule: list[list[float]] = field(default_factory=lambda: [[30, 3], [120, 8], [900, 20]])
    # The user's language ("ru" | "en") for every text the worker sends; the model's extra options
    # (e.g. {"quality": "high"}), see imagegen.models. Defaults keep older payloads readable.
    lang: str = "ru"
    options: dict[str, str] = field(default_factory=dict)
    # Kinds of external call without a rate limit (Settings.direct_kinds, as the bot had them at the
    # start): their activities run on the workflow's own task queue instead of the kind's
    # rate-limited one, so the server hands them to the worker in the same round trip (eager).
    direct_kinds: list[str] = field(default_factory=list)
    # CREDITS=on: what this generation costs (imagegen/prices.py), reserved before createTask,
    # captured when delivered, released on any other ending; 0: free (credits off, older payloads).
    price: int = 0
    # An edit's input pictures (an edit model, imagegen.models): uploaded to Kie first (upload_inputs).
    images: list[InputImage] = field(default_factory=list)
    # The workflow's shape (issue 18), chosen by who starts it, so a new shape costs no patch marker and
    # no TemporalChangeVersion upsert: 0 = the shape given by the patches (every history recorded before
    # issue 18, whose input has no such field); 2 = LEAN_SHAPE; 3 = LOCAL_CREATE_SHAPE;
    # 4 = LOCAL_DELIVERY_SHAPE. Start new workflows with GENERATION_SHAPE.
    shape: int = 0


# Issue 18's lean shape: every patch up to credits-1 implied, recordInfo in a local activity (paced in
# Postgres), no "delivering" upsert. Deploy workers before bots: an older worker must not receive it.
LEAN_SHAPE = 2
# The lean shape, and createTask first tried as a local activity in the workflow's first task when Kie's
# window has a slot now (no activity task, no workflow task for its result, no "queued" timer); when it
# has none, or the attempt fails retryably, the regular createTask activity on its rate-limited queue.
# Workers first: an older worker runs shape 3 as shape 2 (and drops CreateTaskInput.task_id); rolling
# workers back below this shape while shape-3 generations run breaks their replay.
LOCAL_CREATE_SHAPE = 3
# The local-create shape, and the delivery first tried as a local activity in the workflow task that found
# the result (no activity task, no workflow task for its result); whatever that attempt cannot finish
# (lock busy, Telegram's 429 or 5xx, a slow record of an accepted picture, with its memo) goes to the
# regular delivery activity. Workers first, as for shape 3.
LOCAL_DELIVERY_SHAPE = 4
GENERATION_SHAPE = LOCAL_DELIVERY_SHAPE


@dataclass
class CreditsInput:
    """A generation's step in the credit ledger (reserve: `price`; settle: its `outcome`)."""

    job_id: str
    user_id: int
    price: int = 0
    outcome: str = ""


@dataclass
class CreditsResult:
    outcome: str  # imagegen.credits: reserved / already / insufficient / settled; captured / released / …
    balance: int = 0


@dataclass
class CallbackSignal:
    task_id: str | None
    state: str  # as the callback claimed; only a hint, recordInfo is the truth


@dataclass
class CreateTaskInput:
    job_id: str
    workflow_id: str
    user_id: int
    chat_id: int
    model: str
    prompt: str
    aspect_ratio: str
    status_message_id: int | None
    options: dict[str, str] = field(default_factory=dict)
    image_urls: list[str] = field(default_factory=list)  # an edit: Kie's URLs of the uploaded pictures
    local: bool = False  # the local attempt (LOCAL_CREATE_SHAPE): only if Kie's window has a slot now
    task_id: str = ""  # a task id the local attempt got from Kie but could not store: only store it


@dataclass
class UploadInput:
    job_id: str
    model: str
    images: list[InputImage]


@dataclass
class UploadedImage:
    """One input picture on Kie's file host (also recorded in the job row's `uploads`)."""

    index: int
    url: str
    file_name: str
    size: int
    sha256: str
    mime: str
    uploaded_at: float
    reused: bool = False  # an earlier upload (a retried attempt, or the job Again repeats) given again


@dataclass
class StatusProgress:
    """Show "generating, N s so far" on the user's status message (the workflow asks at most every 10 s)."""

    chat_id: int
    message_id: int
    lang: str
    model: str
    aspect_ratio: str
    elapsed: int


@dataclass
class PollInput:
    job_id: str
    task_id: str
    tick: int
    reason: str  # "timer" | "callback"
    progress: StatusProgress | None = None


@dataclass
class PollResult:
    state: str  # waiting/queuing/generating/success/fail, unknown/invalid, error (missed tick), rejected (account)
    result_urls: list[str]
    error: str


@dataclass
class DeliverInput:
    job_id: str
    chat_id: int
    url: str
    model: str
    aspect_ratio: str
    lang: str = "ru"
    # Set by workflows with the "lean-finish-1" patch: once delivered, the activity itself shows the
    # final "✅" status (one activity fewer per generation); the workflow falls back to `finish` when
    # it could not (status_shown False).
    show_done: bool = False
    status_message_id: int | None = None
    # LOCAL_DELIVERY_SHAPE: Telegram accepted the local attempt's picture but recording it was slow; the
    # memo (message_id, level, owner) it handed back: this attempt only records it, never sends.
    accepted: dict | None = None


@dataclass
class OutcomeInput:
    """A cancelled LOCAL_DELIVERY_SHAPE generation asks Postgres what was delivered (delivery_outcome);
    `accepted`: the memo of a picture Telegram accepted that the workflow holds (handed over by the
    local attempt), recorded first."""

    job_id: str
    accepted: dict | None = None


@dataclass
class DeliverResult:
    outcome: str  # "delivered" | "skipped" (someone else delivered it)
    level: str = ""  # "url" | "bytes" | "text"
    message_id: int | None = None
    status_shown: bool = False  # the final status is on screen (DeliverInput.show_done)


@dataclass
class FinishInput:
    job_id: str
    chat_id: int
    status_message_id: int | None
    outcome: str  # done | failed | timeout | error | undeliverable | cancelled
    detail: str = ""  # the raw cause (logs, job row, workflow result); the user gets a human reason
    lang: str = "ru"


@dataclass
class GenerationResult:
    job_id: str
    outcome: str  # done | failed | timeout | error | undeliverable
    task_id: str | None = None
    detail: str = ""
    delivery_level: str = ""


@dataclass
class QueueStatusInput:
    """The status message while a generation waits in the createTask queue ("queued") and once it
    leaves it ("started"); see imagegen/ratelimits.py."""

    job_id: str
    chat_id: int
    status_message_id: int | None
    kind: str  # "queued" | "started"
    model: str = ""
    aspect_ratio: str = ""
    lang: str = "ru"
