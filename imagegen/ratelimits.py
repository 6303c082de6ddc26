"""Global rate limits for Kie and Telegram, enforced by Temporal task queues.

Every kind of external call runs on an activity task queue of its own, derived from the workflow's
task queue (``<queue>-kie-create``, ``<queue>-kie-info``, ``<queue>-telegram``). Each worker polls
those queues with ``max_task_queue_activities_per_second``: the *server* enforces that rate for the
queue as a whole, however many worker processes poll it. Excess work waits in the queue.

The limits are configured as the provider documents them, ``count/seconds`` (Kie createTask
``20/10``, recordInfo ``10/1``, Telegram ``30/1``), and turned into a queue rate here. Temporal's
task-queue limiter is a token bucket per partition whose burst is ``ceil(rate)`` (at least
``matching.minTaskThrottlingBurstSize``, 1); measured on the dev server (one partition) a backlog
is dispatched at ``ceil(rate) + 1`` at once, then evenly. A sliding window of ``window`` seconds may
therefore see ``ceil(rate) + 1 + rate × window`` calls; :meth:`RateLimit.queue_rate` is the largest
rate (in steps of 0.1/s) that keeps that within ``count``: 4/s for ``10/1``, 14/s for ``30/1``. For
Kie's ``20/10`` that would be 1.7/s, a third of Kie's burst lost: createTask (``PACED``) is shaped
exactly by imagegen/pacer.py instead, and its queue rate is a ceiling (:attr:`RateLimit.ceiling_rate`).
With N partitions each gets rate/N with its own burst, and a backlog sitting in one partition is
drained at rate/N: the rate-limited queues need ONE partition
(``matching.numTaskqueueReadPartitions`` / ``...WritePartitions`` = 1 for these queues; see
``dev_server_args`` and docs/performance.md).

Since issue 18 every kind is paced exactly in Postgres by each call as well (``PACED``: createTask,
recordInfo, and the worker Bot's sends, imagegen/telegram_pacing.py); Telegram then needs no queue at
all (``PACED_ANYWHERE``: its activities run on the workflow's own queue), and its queue, like
recordInfo's, serves workflows started before.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta

KIE_CREATE = "kie-create"
KIE_INFO = "kie-info"
TELEGRAM = "telegram"
KINDS = (KIE_CREATE, KIE_INFO, TELEGRAM)
# Kinds whose every call takes a slot in the Postgres pacer (imagegen/pacer.py): createTask (Kie's
# window is refused, not queued), recordInfo (issue 18: the lean shape polls in a local activity,
# which no task-queue limiter sees; queued polls of older workflows take slots as well) and Telegram's
# sends and edits from the worker. A paced kind's queue limit is only a ceiling (Telegram's queue,
# used by workflows started before issue 18, keeps its call-counting rate: Settings.queue_rate).
PACED = frozenset({KIE_CREATE, KIE_INFO, TELEGRAM})
# Paced kinds that need no rate-limited queue at all: each call takes its slot itself, wherever it runs,
# so a generation runs their activities on its own task queue (eager dispatch; Settings.direct_kinds).
# Telegram (issue 18): every send or edit of the worker's Bot takes a slot (imagegen/telegram_pacing.py).
# createTask keeps its queue: the queue caps how many attempts wait for a slot in each process.
PACED_ANYWHERE = frozenset({TELEGRAM})
# A paced queue's server limit: this many times the provider's average rate, so that a full window's
# count is dispatched within a few seconds (20/10 → 6/s: Kie's burst of 20 in about 2 s).
PACED_CEILING = 3.0

# Bot API calls of one activity on the Telegram queue in its normal path: the delivery sends the
# picture and edits the status to "✅" itself (patch lean-finish-1). The queue's rate counts calls,
# not activities (telegram_queue_rate).
TELEGRAM_CALLS_PER_TASK = 2

# Kie answers 429 without a retry_after: "20 new tasks per 10 s" frees up within one window.
KIE_CREATE_WINDOW_SECONDS = 10.0
KIE_INFO_WINDOW_SECONDS = 1.0


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` calls in any ``window`` seconds; count 0 = no limit."""

    count: int
    window: float

    @classmethod
    def parse(cls, text: str) -> "RateLimit":
        """``"20/10"`` → RateLimit(20, 10.0); ``"off"`` → no limit. ValueError when malformed."""
        raw = text.strip().lower()
        if raw in ("0", "off", "none", "unlimited"):
            return cls(0, 1.0)
        try:
            count, window = raw.split("/")
            limit = cls(int(count), float(window))
        except ValueError:
            raise ValueError("must be 'count/seconds' (e.g. '20/10') or 'off'") from None
        if limit.count < 0 or not 0 < limit.window <= 3600:
            raise ValueError("must have count >= 0 and 0 < seconds <= 3600")
        if limit.count and limit.queue_rate is None:
            raise ValueError("is too tight for a task-queue limiter (needs a count of at least 3)")
        return limit

    @property
    def unlimited(self) -> bool:
        return self.count == 0

    @property
    def queue_rate(self) -> float | None:
        """The task-queue rate (per second) whose worst case stays within the limit; None = no limit
        (or no such rate)."""
        if self.unlimited:
            return None
        rate = math.floor(self.count / self.window * 10) / 10
        while rate > 0:
            if math.ceil(rate) + 1 + rate * self.window <= self.count + 1e-9:
                return rate
            rate = round(rate - 0.1, 1)
        return None

    @property
    def ceiling_rate(self) -> float | None:
        """The queue rate of a paced kind (PACED_CEILING × the average); None = no limit."""
        return None if self.unlimited else round(PACED_CEILING * self.count / self.window, 3)

    def paces(self, kind: str) -> bool:
        """Whether calls of `kind` under this limit go through the Postgres pacer (imagegen/pacer.py)."""
        return kind in PACED and not self.unlimited

    def rate_for(self, kind: str) -> float | None:
        """The task-queue rate for one kind of call: a ceiling for paced kinds, else the bucket fit."""
        return self.ceiling_rate if kind in PACED else self.queue_rate

    def __str__(self) -> str:
        return "off" if self.unlimited else f"{self.count}/{self.window:g}"


def worst_in_window(rate: float, window: float) -> float:
    """The most tasks a queue limited to `rate` per second dispatches within any `window` seconds."""
    return math.ceil(rate) + 1 + rate * window


def paced_worst(limit: RateLimit, window: float) -> float:
    """The most calls the pacer lets through within any `window` seconds: `count` per its own window."""
    return limit.count * math.ceil(window / limit.window - 1e-9)


def telegram_queue_rate(telegram: RateLimit, info: RateLimit) -> float | None:
    """The Telegram queue's task rate that keeps the worker's Bot API *calls* within `telegram`.

    Each task there makes up to TELEGRAM_CALLS_PER_TASK calls (the picture and its "✅"), and the
    recordInfo polls make one more each (the "🎨 generating, N s" edit, at most one per poll): their
    worst case in Telegram's window (the pacer's count, paced_worst) is set aside first. None = no limit. A delivery
    that falls back (Telegram could not fetch the URL: the bytes, then a link) makes one or two calls
    more; Telegram's 429 for those is honoured by the retry (its retry_after)."""
    if telegram.unlimited:
        return None
    reserved = 0.0 if info.unlimited else paced_worst(info, telegram.window)
    rate = math.floor(telegram.count / telegram.window * 10) / 10
    while rate > 0 and TELEGRAM_CALLS_PER_TASK * worst_in_window(rate, telegram.window) + reserved > telegram.count + 1e-9:
        rate = round(rate - 0.1, 1)
    if rate <= 0:
        raise ValueError(f"TELEGRAM_SEND_LIMIT {telegram} leaves no room for deliveries besides the progress edits of "
                         f"KIE_RECORD_INFO_LIMIT {info}")
    return rate


def queue_name(base: str, kind: str) -> str:
    """The activity task queue of one kind of external call (deterministic: used by the workflow)."""
    return f"{base}-{kind}"


def jittered(seconds: float, spread: float = 0.5) -> timedelta:
    """``seconds`` plus up to ``spread`` × seconds of random jitter, so refused calls retried after a
    limit don't come back as one herd. Activities only (random is not allowed in workflows)."""
    return timedelta(seconds=seconds * (1.0 + random.random() * spread))


def dev_server_args() -> list[str]:
    """Dynamic config for `temporal server start-dev`: one partition per task queue, so a queue's rate
    limit is one token bucket (see the module docstring)."""
    return ["--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value", "matching.numTaskqueueWritePartitions=1"]
