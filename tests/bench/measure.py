"""Measuring helpers of the benchmark: RSS of processes (sampled), percentiles."""

from __future__ import annotations

import asyncio
import statistics

import psutil


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


class RssSampler:
    """Samples the RSS of some processes every `interval` seconds; keeps each one's peak."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.peak: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.peak[name] = rss_mb(pid)

    def reset(self, name: str) -> None:
        self.peak[name] = rss_mb(self.pids[name])

    def now(self, name: str) -> float:
        return rss_mb(self.pids[name])

    async def _run(self) -> None:
        while True:
            for name, pid in list(self.pids.items()):
                self.peak[name] = max(self.peak.get(name, 0.0), rss_mb(pid))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# Process trees counted in every CPU split besides the parts' own processes (the bench registers the
# embedded Postgres: its backends are children of the postmaster, one per pooled connection).
TREES: dict[str, int] = {}


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (exited ones are in its children_* times)."""
    try:
        root = psutil.Process(pid)
        total = _cpu(root)
        kids = root.children(recursive=True)
    except psutil.Error:
        return 0.0
    for kid in kids:
        try:
            t = kid.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass  # exited meanwhile: counted in the parent's children_* from now on
    return total


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system, children included) each process has used so far, and each tree of TREES."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = _cpu(psutil.Process(pid))
        except psutil.Error:
            out[name] = 0.0
    for name, pid in TREES.items():
        out[name] = tree_cpu_seconds(pid)
    return out


def cpu_split(before: dict[str, float], after: dict[str, float], per: int) -> dict[str, float]:
    """CPU milliseconds per unit of work (e.g. per delivery), by process."""
    return {name: (after[name] - before[name]) * 1000 / per for name in before}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values, nearest-rank on sorted data; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def settle(pid: int, *, below_percent: float = 5.0, quiet_for: float = 2.0, timeout: float = 120.0) -> None:
    """Wait until a process has used less than `below_percent` CPU for `quiet_for` seconds."""
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet = 0.0
    while quiet < quiet_for and loop.time() < deadline:
        await asyncio.sleep(0.5)
        quiet = quiet + 0.5 if proc.cpu_percent(None) < below_percent else 0.0


# What a generation costs the server, read from its history (issue 18: measure first).
COUNTED = {
    "workflow_tasks": "EVENT_TYPE_WORKFLOW_TASK_COMPLETED",
    "activity_tasks": "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED",
    "timers": "EVENT_TYPE_TIMER_STARTED",
    "upserts": "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",
    "markers": "EVENT_TYPE_MARKER_RECORDED",
}


async def history_counts(client, workflow_ids: list[str]) -> dict[str, float]:
    """Per workflow, averaged over `workflow_ids`: workflow tasks, activity tasks, timers, search
    attribute upserts, markers (local activities and patches) and all history events."""
    from temporalio.api.enums.v1 import EventType

    totals = {k: 0 for k in (*COUNTED, "events")}
    for wid in workflow_ids:
        history = await client.get_workflow_handle(wid).fetch_history()
        names = [EventType.Name(e.event_type) for e in history.events]
        totals["events"] += len(names)
        for key, name in COUNTED.items():
            totals[key] += names.count(name)
    n = max(len(workflow_ids), 1)
    return {k: v / n for k, v in totals.items()}


def counts_text(c: dict[str, float]) -> str:
    return (f"{c['workflow_tasks']:.1f} workflow tasks, {c['activity_tasks']:.1f} activity tasks, "
            f"{c['timers']:.1f} timers, {c['upserts']:.1f} upserts, {c['markers']:.1f} markers, "
            f"{c['events']:.1f} events")


def counts_fields(c: dict[str, float]) -> str:
    """The per-generation counts as fields of the machine-readable `bench:` line."""
    return " ".join(f"{k}_per_gen={c[k]:.1f}" for k in (*COUNTED, "events"))
