"""Counting and recording for the fault matrix.

Every cell ends with :func:`tally`: it reads the Telegram simulator's record (photos, link
messages, user-facing error messages) and Postgres (``generation_jobs``), counts per generation,
prints a one-line summary, appends a JSON record to the results file (env ``FAULTS_RESULTS``,
default ``.run/faults-results.jsonl``) and returns the record; the test then asserts on it. The
record is written before any assertion, so a failing cell still shows up in the matrix.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from contextlib import asynccontextmanager
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import asyncpg
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError

from tests.support.procstack import RUN_DIR
from tests.support.services import EmbeddedPostgres, free_port

from imagegen.i18n import t

ROOT = Path(__file__).resolve().parent.parent.parent
TERMINAL_STATES = {"delivered", "fail", "timeout", "error", "undeliverable"}
RESULT_LINK_PREFIX = t("result_link", "ru").split("{")[0]
ERROR_PREFIXES = ("❌", "⌛")
# DELIVERY_MODE of the cells (env FAULTS_MODES, default both): every cell runs once per mode.
MODES = [m.strip() for m in os.environ.get("FAULTS_MODES", "send,edit").split(",") if m.strip()]
PHOTO_METHOD = {"send": "sendPhoto", "edit": "editMessageMedia"}  # the call that delivers the picture


def mode_of(tg: Any) -> str:
    return getattr(tg, "delivery_mode", "send")


def photo_method(tg: Any) -> str:
    return PHOTO_METHOD[mode_of(tg)]


def trade_off(tg: Any, exposed: int) -> int:
    """Duplicates a cell may show: the no-idempotency-key window exists for sendPhoto only; an edit
    repeated after a crash lands on the same message (0 repeated pictures)."""
    return exposed if mode_of(tg) == "send" else 0


SUMMARIES: list[str] = []  # printed at the end of the session (conftest's terminal summary)


def results_path() -> Path:
    return Path(os.environ.get("FAULTS_RESULTS") or ROOT / ".run" / "faults-results.jsonl")


@dataclass
class Gen:
    job_id: str
    chat_id: int
    handle: WorkflowHandle | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def gens_from(items: Iterable[Any]) -> list[Gen]:
    """Stack.start_generation tuples (handle, job_id, chat_id) or ProcStack Generations → Gen."""
    out = []
    for item in items:
        if isinstance(item, tuple):
            handle, job_id, chat_id = item
            out.append(Gen(job_id, chat_id, handle))
        else:
            out.append(Gen(item.job_id, item.chat_id, item.handle))
    return out


async def wait_results(gens: list[Gen], timeout: float) -> dict[str, Any]:
    """job_id → GenerationResult, or a string saying why there is none. Survives a Temporal restart."""
    deadline = time.monotonic() + timeout

    async def one(g: Gen) -> Any:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "unfinished"
            try:
                return await asyncio.wait_for(g.handle.result(), remaining)
            except asyncio.TimeoutError:
                return "unfinished"
            except WorkflowFailureError as exc:
                return f"workflow failed: {exc.cause or exc}"
            except RPCError:
                await asyncio.sleep(0.5)  # the server is restarting: ask again

    values = await asyncio.gather(*(one(g) for g in gens))
    return {g.job_id: v for g, v in zip(gens, values)}


async def job_rows(dsn: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Fresh connection each time (the pool may hold connections of a restarted server)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            break
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
    try:
        rows = await conn.fetch("SELECT * FROM generation_jobs WHERE id = ANY($1::text[])", job_ids)
    finally:
        await conn.close()
    return {r["id"]: dict(r) for r in rows}


def result_messages(tg: Any, chat_id: int) -> list[tuple[str, int]]:
    """The distinct messages that carry a result in the chat: photos (sent, or edited into a message:
    editing the same message again is still one picture), and link messages (fallback level 3)."""
    out: dict[int, str] = {}
    for p in tg.photos:
        if p.chat_id == chat_id:
            out.setdefault(p.message_id, "photo")
    for c in tg.calls_of("sendMessage") + tg.calls_of("editMessageText") + tg.calls_of("editMessageCaption"):
        text = str(c.params.get("text", c.params.get("caption", "")))
        if c.status == 200 and int(c.params.get("chat_id", 0)) == chat_id and text.startswith(RESULT_LINK_PREFIX):
            out.setdefault(c.response["result"]["message_id"], "link")
    return [(kind, mid) for mid, kind in out.items()]


def done_notices(tg: Any, chat_id: int) -> int:
    """The "✅ Готово ↑" notifications accepted for this chat (edit mode sends one after the edit)."""
    return sum(1 for c in tg.calls_of("sendMessage") if c.status == 200 and int(c.params.get("chat_id", 0)) == chat_id
               and c.params.get("text") == t("notice.done", "ru"))


def user_error_messages(tg: Any, chat_id: int) -> int:
    """User-facing error texts accepted by Telegram for this chat (sent or edited in)."""
    n = 0
    for c in tg.calls:
        if c.method in ("sendMessage", "editMessageText") and c.status == 200 \
                and int(c.params.get("chat_id", 0) or 0) == chat_id \
                and str(c.params.get("text", "")).startswith(ERROR_PREFIXES):
            n += 1
    return n


def telegram_calls(tg: Any, method: str, chat_ids: set[int] | None = None) -> int:
    return sum(1 for c in tg.calls_of(method)
               if chat_ids is None or int(c.params.get("chat_id", 0) or 0) in chat_ids)


async def tally(cell: str, variant: str, gens: list[Gen], tg: Any, dsn: str, *, started: float,
                expect: str = "delivered", timeout: float = 90.0, extra: Any = None,
                results: dict[str, Any] | None = None, settle: float = 0.5, note: str = "") -> dict[str, Any]:
    """Wait for every workflow, count, record. `expect`: delivered | fail | timeout | undeliverable.
    `extra`: a dict, or a callable (sync or async) giving one, called once the workflows are done.
    `note`: why duplicates are expected here (a documented trade-off, or a known bug), for the table."""
    if results is None:
        results = await wait_results(gens, timeout)
    seconds = time.monotonic() - started
    await asyncio.sleep(settle)  # let a straggling duplicate (if any) land before counting
    if callable(extra):
        extra = extra()
        if asyncio.iscoroutine(extra):
            extra = await extra
    rows = await job_rows(dsn, [g.job_id for g in gens])
    per_gen = []
    for g in gens:
        msgs = result_messages(tg, g.chat_id)
        row = rows.get(g.job_id)
        res = results.get(g.job_id)
        outcome = getattr(res, "outcome", None) or str(res)
        state = row["state"] if row else "missing"
        ids = {mid for _, mid in msgs}
        db_ok = (row is not None and row["delivered_at"] is not None and row["delivered_message_id"] in ids) \
            if expect == "delivered" else (row is not None and row["delivered_at"] is None)
        terminal = hasattr(res, "outcome") and state in TERMINAL_STATES
        got_result = len(msgs) >= 1 if expect == "delivered" else len(msgs) == 0
        per_gen.append(dict(job=g.job_id, chat=g.chat_id, msgs=len(msgs), photos=sum(k == "photo" for k, _ in msgs),
                            notices=done_notices(tg, g.chat_id),
                            state=state, outcome=outcome, db_ok=db_ok, terminal=terminal,
                            lost=not (terminal and got_result and state == expect),
                            errors=user_error_messages(tg, g.chat_id)))
    record = {
        "cell": cell,
        "variant": variant,
        "mode": mode_of(tg),
        "n": len(gens),
        "expect": expect,
        "photos": sum(p["photos"] for p in per_gen),
        "results_delivered": sum(p["msgs"] for p in per_gen),
        "duplicates": sum(max(0, p["msgs"] - 1) for p in per_gen),
        "notices": sum(p["notices"] for p in per_gen),
        "notice_repeats": sum(max(0, p["notices"] - 1) for p in per_gen),
        "lost": sum(p["lost"] for p in per_gen),
        "db_mismatch": sum(not p["db_ok"] for p in per_gen),
        "states": dict(Counter(p["state"] for p in per_gen)),
        "outcomes": dict(Counter(p["outcome"] for p in per_gen)),
        "completed": sum(hasattr(results.get(g.job_id), "outcome") for g in gens),
        "user_errors": dict(Counter(p["errors"] for p in per_gen)),
        "seconds": round(seconds, 1),
        "extra": extra or {},
        "note": note,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "problems": [p for p in per_gen if p["lost"] or not p["db_ok"] or p["msgs"] > 1][:5],
    }
    write_record(record)
    return record


def write_record(record: dict[str, Any]) -> None:
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    extra = " ".join(f"{k}={v}" for k, v in record["extra"].items())
    line = (f"FAULTS {record['cell']} [{record['variant']}] mode={record.get('mode', 'send')} N={record['n']} "
            f"results={record['results_delivered']} photos={record['photos']} duplicates={record['duplicates']} "
            f"notices={record.get('notices', 0)} notice_repeats={record.get('notice_repeats', 0)} "
            f"lost={record['lost']} db_mismatch={record['db_mismatch']} states={record['states']} "
            f"completed={record['completed']}/{record['n']} {extra} seconds={record['seconds']}")
    SUMMARIES.append(line)
    print(line, flush=True)


def assert_exactly_one(record: dict[str, Any], *, allowed_duplicates: int = 0) -> None:
    """Every generation: workflow completed, exactly one result in the chat, Postgres agrees."""
    detail = json.dumps(record, ensure_ascii=False, default=str)
    assert record["completed"] == record["n"], f"workflows not completed: {detail}"
    assert record["lost"] == 0, f"generations lost: {detail}"
    assert record["db_mismatch"] == 0, f"Postgres disagrees with Telegram: {detail}"
    assert record["duplicates"] <= allowed_duplicates, f"duplicates: {detail}"
    assert record["states"] == {"delivered": record["n"]}, detail


def assert_none_delivered(record: dict[str, Any], state: str, *, errors_per_user: int = 1) -> None:
    """Every generation ended in `state`, no result in any chat, and the user was told exactly once."""
    detail = json.dumps(record, ensure_ascii=False, default=str)
    assert record["completed"] == record["n"], detail
    assert record["results_delivered"] == 0, detail
    assert record["lost"] == 0, detail
    assert record["states"] == {state: record["n"]}, detail
    assert record["user_errors"] == {errors_per_user: record["n"]}, detail


N = int(os.environ.get("FAULTS_N", "20"))


async def launch(stack: Any, n: int = N, **kwargs: Any) -> list[Gen]:
    """Start n generations concurrently (Stack or ProcStack.start_generation)."""
    return gens_from(await asyncio.gather(*(stack.start_generation(**kwargs) for _ in range(n))))


async def statuses(gens: list[Gen]) -> list[dict[str, Any]]:
    """The workflows' `status` query (callbacks seen, polls made), for the extra counts."""
    return list(await asyncio.gather(*(g.handle.query("status") for g in gens)))


def status_texts(tg: Any, gens: list[Gen]) -> Counter:
    """How each generation's status message ended: "done" (the status text, or in edit mode the
    picture's caption / the link carrying it), "❌", "⌛" or "-" (none of those)."""
    out: Counter = Counter()
    for g in gens:
        found = [m.get("text") or m.get("caption") or "" for m in tg.messages(g.chat_id)]
        if any(t("status.done", "ru") in text for text in found):
            out["done"] += 1
        else:
            out[next((text[:1] for text in found if text.startswith(ERROR_PREFIXES)), "-")] += 1
    return out


def fresh_dir(name: str) -> Path:
    """A data directory of this run's own (never shared with a concurrent run on the same checkout)."""
    path = RUN_DIR / "faults" / f"{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@asynccontextmanager
async def own_postgres(name: str):
    """A Postgres of the test's own (fresh data directory, free port), which it may stop and start
    again on the same port and data; closed at the end."""
    data = fresh_dir(f"{name}-data")
    pg = await asyncio.to_thread(lambda: EmbeddedPostgres(port=free_port(), data_dir=str(data)).start())
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.close)


def stop_postgres(pg) -> None:
    """Fast shutdown (SIGINT: clients are disconnected), waited for."""
    pg.proc.send_signal(signal.SIGINT)
    pg.proc.wait(30)
