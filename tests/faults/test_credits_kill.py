"""Fault matrix, credits (CREDITS=on): worker.py SIGKILLed while each activity of a priced generation
is in flight, a second worker takes over. Every generation ends (one picture when delivered), the
user's balance is right (the price spent when delivered, unchanged otherwise) and the ledger has
exactly one reserve and one capture-or-release entry per generation (docs/reliability.md, "Credits").

What pins each activity (the held call never completes for the killed worker; the retry is not held):

    credits_reserve  the test holds the users' credit_accounts rows FOR UPDATE (Postgres row locks)
    upload_inputs    an edit (started through bot.py, which prices it): Kie's file upload is held
    create_task      Kie's createTask is held before the task exists (FaultKie.hold_create)
    poll_task        Kie's recordInfo is held (FaultKie.hold_info)
    deliver          Telegram holds sendPhoto before accepting it, for these chats only
    credits_settle   delivered, then the capture waits for the users' rows, locked after the reserve
    finish           Kie fails the task (released), then the final "❌" edit is held

and, for the two ledger steps, the other side of their write ("… written"): the rows are locked as
above, then the killed worker's link to Temporal is held (a TCP proxy) and the rows let go — the
entry is committed, the activity's completion never reaches Temporal, and the retry finds the key.

One kill pins them all, each cell for its own K generations: a killed attempt is retried only
once its timeout has passed (30 s for the ledger steps, recordInfo and finish, 60 s for createTask,
the heartbeat timeout for upload and delivery), so seven kills would take about four minutes a run;
one takes about one createTask timeout. Each cell is still its own test, on its own generations.
It runs in one delivery mode (the first of FAULTS_MODES): the ledger does not depend on it, and the
kill mid-delivery in both modes is tests/faults/test_processes.py.

Found by it (fixed): after "credits_settle written" the balance and the ledger were right, but the
workflow's `status` query (and current details) still said credits "reserved": the retried settle
answers "already", which GenerationWorkflow._credit_step now counts as settled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType

from imagegen.credits import Ledger
from imagegen.settings import DEFAULT_LEASE_SECONDS
from tests.faults.matrix import MODES, N, Gen, assert_exactly_one, assert_none_delivered, gens_from, tally
from tests.support.histories import activity_types
from tests.support.images import make_png
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
FREE = 3
K = min(N, 4)  # generations per activity
# Waits up to 60 s for Kie: a recordInfo retried after its 30-s timeout still finds the result.
SCHEDULE = [(2.0, 0.4), (6.0, 1.0), (60.0, 2.0)]
# A cell: the activity in flight at the kill ("… written": its ledger entry committed, not yet reported).
CELLS = ("credits_reserve", "credits_reserve written", "upload_inputs", "create_task", "poll_task", "deliver",
         "credits_settle", "credits_settle written", "finish")
LOCKED = ("credits_reserve", "credits_reserve written", "credits_settle", "credits_settle written")
# `finish` runs for an ending other than delivered (a delivery shows its own "✅"): a Kie failure here.
EXPECT = {c: "fail" if c == "finish" else "delivered" for c in CELLS}
PRICE = {c: 2 if c == "upload_inputs" else 1 for c in CELLS}  # Nano Banana Edit costs 2, Z-Image 1
PROMPT = {"create_task": "a fox [hold-create]", "poll_task": "a fox [hold-info]", "finish": "a fox [fail]"}
# The workflow's status query keeps "reserved" when the settle's retry answers "already" (its entry was
# written by the killed attempt): the ledger is right, the status is not (workflows/generation.py,
# _credit_step, counts only "captured"/"released" as settled).
_RUNS: dict[str, Any] = {}  # mode → {cell: record}, or the exception the shared run raised


async def until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def lock_rows(dsn: str, users: list[int]) -> asyncpg.Connection:
    """A connection holding these users' credit_accounts rows FOR UPDATE until it is closed."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1 FROM credit_accounts WHERE user_id = ANY($1::bigint[]) FOR UPDATE", users)
    return conn


async def blocked_by(pool, conn: asyncpg.Connection) -> int:
    """How many backends wait for a lock `conn` holds (asked outside its transaction, which would see
    pg_stat_activity as it was when the transaction first looked)."""
    return await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                               conn.get_server_pid())


async def last_attempt(gen: Gen, activity: str) -> int:
    """The highest attempt of `activity` in the workflow's history (2 and more: it was retried). A local
    activity (the lean shape's recordInfo, issue 18) runs inside a workflow task: a killed one is run
    again by the retried workflow task, so its attempt is that workflow task's."""
    history = await gen.handle.fetch_history()
    events = history.events
    if f"{activity} (local)" in activity_types(history):
        return 1 + sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT for e in events)
    names = {e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name for e in events
             if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    return max((e.activity_task_started_event_attributes.attempt for e in events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                and names.get(e.activity_task_started_event_attributes.scheduled_event_id) == activity), default=0)


async def entries_of(pool, jobs: list[str], kind: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM credit_entries WHERE kind = $1 AND job_id = ANY($2::text[])",
                               kind, jobs)


async def ledger_figures(ledger: Ledger, gens: list[Gen], cell: str) -> dict[str, Any]:
    rows = await ledger.pool.fetch("SELECT job_id, kind FROM credit_entries WHERE job_id = ANY($1::text[])",
                                   [g.job_id for g in gens])
    entries = Counter(",".join(sorted(r["kind"] for r in rows if r["job_id"] == g.job_id)) for g in gens)
    delivered = EXPECT[cell] == "delivered"
    want = FREE - PRICE[cell] if delivered else FREE
    balances = [await ledger.balance(g.chat_id) for g in gens]
    activity = cell.split()[0]
    return {"entries": dict(entries), "ledger_right": entries["capture,reserve" if delivered else "release,reserve"],
            "balances": dict(Counter(balances)), "balance_right": balances.count(want),
            "retried": sum([await last_attempt(g, activity) >= 2 for g in gens]),
            "status_credits": dict(Counter([(await g.handle.query("status"))["credits"] for g in gens]))}


async def kill_during_every_activity(ps) -> dict[str, dict[str, Any]]:
    ledger = Ledger(ps.pool, free_credits=FREE)
    chats = {c: [ps.new_chat_id() for _ in range(K)] for c in CELLS}
    ps.kie.delay = 1.0
    ps.kie.hold_create, ps.kie.hold_info, ps.kie.hold_uploads = PROMPT["create_task"], PROMPT["poll_task"], True
    ps.tg.hold_photos, ps.tg.hold_chats = "before", set(chats["deliver"])
    ps.tg.hold_errors_for = set(chats["finish"])
    host, port = ps.temporal_address.rsplit(":", 1)
    link = await TcpProxy(host, int(port)).start()  # the killed worker's way to Temporal
    w1, _ = await asyncio.gather(ps.start_worker("worker-killed", TEMPORAL_ADDRESS=link.address), ps.start_bot())
    locks: dict[str, asyncpg.Connection] = {}
    try:
        for cell in ("credits_reserve", "credits_reserve written"):
            for user in chats[cell]:
                await ledger.balance(user)  # the account exists, so its row can be locked
            locks[cell] = await lock_rows(ps.dsn, chats[cell])

        async def direct(cell: str) -> list[Gen]:
            return gens_from(await asyncio.gather(*(
                ps.start_generation(prompt=PROMPT.get(cell, "a fox"), chat_id=c, price=PRICE[cell])
                for c in chats[cell])))

        async def edits() -> list[Gen]:  # the bot's own path: photo with a caption, model, ratio
            for i, c in enumerate(chats["upload_inputs"]):
                ps.tg.user_send_photo(c, caption="сделай зиму", image=make_png(24, 24, seed=90 + i))
            await asyncio.gather(*(ps.tg.user_presses(c, "Nano Banana Edit", "auto", timeout=60)
                                   for c in chats["upload_inputs"]))
            return gens_from(await asyncio.gather(*(ps.generation_for_chat(c) for c in chats["upload_inputs"])))

        gens = dict(zip(CELLS, await asyncio.gather(*(edits() if c == "upload_inputs" else direct(c) for c in CELLS))))
        jobs = {c: [g.job_id for g in gens[c]] for c in CELLS}
        for cell in ("credits_settle", "credits_settle written"):  # reserved: lock them before their delivery ends
            await until(lambda: is_k(entries_of(ps.pool, jobs[cell], "reserve")), 30, f"{cell}: reservations")
            locks[cell] = await lock_rows(ps.dsn, chats[cell])

        async def pinned() -> dict[str, int]:
            return {**{c: await blocked_by(ps.pool, locks[c]) for c in LOCKED},
                    "upload_inputs": ps.kie.held["upload"], "create_task": ps.kie.held["createTask"],
                    "poll_task": ps.kie.held["recordInfo"], "deliver": ps.tg.held, "finish": ps.tg.held_texts}

        async def all_pinned() -> bool:
            return all(v == K for v in (await pinned()).values())

        try:
            await until(all_pinned, 45, "every activity in flight")
        except TimeoutError:
            raise AssertionError(f"not every activity is in flight: {await pinned()}\n{ps.logs()}") from None
        at_kill = await pinned()
        link.hold("up")  # from now on nothing the worker reports reaches Temporal
        for cell, kind in (("credits_reserve written", "reserve"), ("credits_settle written", "capture")):
            await locks.pop(cell).close()
            await until(lambda: is_k(entries_of(ps.pool, jobs[cell], kind)), 20, f"{cell}: entries")
        w1.kill()
        await w1.wait(10)
        t_kill = time.monotonic()
    finally:  # the rows and the held calls go free: the killed worker's calls are answered to nobody
        for conn in locks.values():
            await conn.close()
        await link.stop()
        ps.tg.hold_photos = None
        ps.kie.release.set()
        ps.tg.release.set()
    await ps.start_worker("worker-retry")

    async def one(cell: str) -> dict[str, Any]:
        async def extra() -> dict[str, Any]:
            own = {"kie_tasks": sum(t.prompt == PROMPT[cell] for t in ps.kie.tasks.values())} if cell in PROMPT else {}
            return {"pinned_at_kill": at_kill[cell], "price": PRICE[cell], **own,
                    **await ledger_figures(ledger, gens[cell], cell)}
        return await tally("worker SIGKILL, credits on", f"during {cell}", gens[cell], ps.tg, ps.dsn,
                           started=t_kill, expect=EXPECT[cell], timeout=150, extra=extra)

    return dict(zip(CELLS, await asyncio.gather(*(one(c) for c in CELLS))))


async def is_k(count) -> bool:
    return await count == K


@pytest.mark.parametrize("mode", MODES[:1])
@pytest.mark.parametrize("cell", CELLS)
async def test_worker_sigkill_during_an_activity_leaves_the_balance_right(procstack, mode, cell):
    run = _RUNS.get(mode)
    if run is None:  # the first of these tests runs the one kill for all of them
        ps = await procstack("credits-kill", lease_seconds=DEFAULT_LEASE_SECONDS, poll_schedule=SCHEDULE,
                             # 4K of the killed worker's connections wait for the test's row locks
                             extra_env={"CREDITS": "on", "FREE_CREDITS": str(FREE), "DB_POOL_SIZE": str(4 * K + 10)})
        try:
            run = _RUNS[mode] = await kill_during_every_activity(ps)
        except Exception as exc:
            _RUNS[mode] = exc
            raise
    if isinstance(run, Exception):
        pytest.fail(f"the shared kill failed: {run!r}")
    rec = run[cell]
    if EXPECT[cell] == "delivered":
        assert_exactly_one(rec)
    else:
        assert_none_delivered(rec, "fail")
    e = rec["extra"]
    assert e["pinned_at_kill"] == K, e  # in flight in the killed worker
    assert e["retried"] == K, e  # and retried by the other one
    assert e["ledger_right"] == K and e["balance_right"] == K, e
    assert e.get("kie_tasks", K) == K, e  # one Kie task each (createTask was held before the task existed)
    settled = "captured" if EXPECT[cell] == "delivered" else "released"
    assert e["status_credits"] == {settled: K}, e
