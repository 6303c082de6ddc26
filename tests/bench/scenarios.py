"""The benchmark's scenarios, each on its own task queue and simulators, against the real worker.py
and bot.py (tests/support/procstack.py) on one Temporal dev server and one embedded Postgres."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from tests.bench.floor import FloorWorkflow
from tests.bench.measure import RssSampler, cpu_seconds, cpu_split, history_counts, median, pct, settle
from tests.support.kie_limits import LimitedKieSimulator
from tests.support.procstack import ROOT, ProcStack

DEFAULT_SCHEDULE = [(30.0, 3.0), (120.0, 8.0), (900.0, 20.0)]  # today's POLL_SCHEDULE (Kie's guidance)
LIMITS_OFF = {"KIE_CREATE_LIMIT": "off", "KIE_RECORD_INFO_LIMIT": "off", "TELEGRAM_SEND_LIMIT": "off"}
LIMITS_DEFAULT = {"KIE_CREATE_LIMIT": "20/10", "KIE_RECORD_INFO_LIMIT": "10/1", "TELEGRAM_SEND_LIMIT": "30/1"}
# Limits on but far above the load: createTask on its rate-limited queue, every call through the Postgres pacer.
# (Telegram counts its calls: two per delivery plus the recordInfo progress edits, issue 19.)
LIMITS_HIGH = {"KIE_CREATE_LIMIT": "1000/1", "KIE_RECORD_INFO_LIMIT": "1000/1", "TELEGRAM_SEND_LIMIT": "3000/1"}
KIE_WINDOW = (20, 10.0)  # Kie: 20 createTask per 10 s
WORKFLOW_CACHE = 1000  # the Python SDK's default max_cached_workflows (worker.py keeps it)


class BenchKie(LimitedKieSimulator):
    """Kie simulator that can hold every task until released (the scale part), and posts at most
    `callback_concurrency` callbacks at a time (as a real sender would, instead of 5,000 sockets)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.release = asyncio.Event()
        self.callback_concurrency = 100
        self._sem: asyncio.Semaphore | None = None

    async def _run_task(self, task) -> None:
        if self.hold:
            await self.release.wait()
        await super()._run_task(task)

    async def _post_callback(self, task, body) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.callback_concurrency)
        async with self._sem:
            await super()._post_callback(task, body)


@dataclass
class Users:
    """Scripted Telegram users who went through the conversation up to the ratio keyboard."""

    ps: ProcStack
    buttons: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # chat → ratio button
    pressed: dict[int, float] = field(default_factory=dict)  # chat → time.time() of the press

    async def prepare(self, n: int, concurrency: int = 20) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            chat = self.ps.new_chat_id()
            async with sem:
                self.buttons[chat] = await self.ps.user_up_to_ratio(chat, prompt=f"bench chat {chat}", timeout=120)

        await asyncio.gather(*(one() for _ in range(n)))

    def press_all(self) -> float:
        start = time.time()
        for chat, (mid, data) in self.buttons.items():
            self.pressed[chat] = time.time()
            self.ps.tg.user_press_button(chat, mid, data)
        return start

    async def wait_photos(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len({p.chat_id for p in self.ps.tg.photos if p.chat_id in self.buttons}) >= len(self.buttons):
                return True
            await asyncio.sleep(0.1)
        return False


async def per_generation(ps: ProcStack, chats: set[int], sample: int = 40) -> dict[str, float]:
    """History counts (workflow tasks, activity tasks, timers, upserts, markers, events) averaged over up
    to `sample` of these chats' generations."""
    rows = await ps.pool.fetch("SELECT workflow_id FROM generation_jobs WHERE chat_id = ANY($1::bigint[]) "
                               "AND workflow_id IS NOT NULL ORDER BY created_at LIMIT $2", list(chats), sample)
    return await history_counts(ps.client, [r["workflow_id"] for r in rows])


def chat_of_task(kie: LimitedKieSimulator) -> dict[str, int]:
    return {tid: int(t.prompt.rsplit(" ", 1)[1]) for tid, t in kie.tasks.items() if t.prompt.startswith("bench chat ")}


def callback_to_photo(ps: ProcStack, chats: set[int]) -> list[float]:
    """Per delivered chat: first photo time − first callback time of its Kie task (seconds)."""
    cb_time: dict[int, float] = {}
    chat_by_task = chat_of_task(ps.kie)
    for attempt in ps.kie.callbacks:
        chat = chat_by_task.get(attempt.task_id)
        if chat is not None and chat not in cb_time:
            cb_time[chat] = attempt.time
    photo_time: dict[int, float] = {}
    for p in ps.tg.photos:
        photo_time.setdefault(p.chat_id, p.time)
    return [photo_time[c] - cb_time[c] for c in chats if c in photo_time and c in cb_time]


def delivery_counts(ps: ProcStack, chats: set[int]) -> tuple[int, int]:
    """(chats with a photo, duplicate photos)."""
    per_chat: dict[int, int] = {}
    for p in ps.tg.photos:
        if p.chat_id in chats:
            per_chat[p.chat_id] = per_chat.get(p.chat_id, 0) + 1
    return len(per_chat), sum(n - 1 for n in per_chat.values())


async def failed_generations(ps: ProcStack, chats: set[int]) -> int:
    rows = await ps.pool.fetch("SELECT chat_id, state FROM generation_jobs WHERE chat_id = ANY($1::bigint[])",
                               list(chats))
    return sum(1 for r in rows if r["state"] != "delivered") + (len(chats) - len(rows))


# ---------------------------------------------------------------------------------------- floor
async def floor(client: Client, address: str, workdir: Path, n: int, runs: int, server_pid: int) -> dict:
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    log = workdir / "floor-worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench.floor", address, queue], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while "WORKER_STARTED" not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"floor worker exited:\n{log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)

        async def one(signal_when_ready: bool) -> float:
            """Signal sent → the second activity ran (as the product's Kie callback → sendPhoto)."""
            handle = await client.start_workflow(FloorWorkflow.run, id=f"floor-{uuid.uuid4().hex}", task_queue=queue)
            if signal_when_ready:
                while not await handle.query(FloorWorkflow.ready):
                    await asyncio.sleep(0.01)
            sent = time.time()
            await handle.signal(FloorWorkflow.go)
            return await handle.result() - sent

        for _ in range(5):  # warm-up
            await one(True)
        latencies = [await one(True) for _ in range(runs)]
        await settle(proc.pid)
        pids = {"server": server_pid, "worker": proc.pid, "bench": os.getpid()}
        cpu = cpu_seconds(pids)
        start = time.perf_counter()
        await asyncio.gather(*(one(False) for _ in range(n)))
        wall = time.perf_counter() - start
        return {"throughput": n / wall, "wall": wall, "latency_p50": median(latencies) * 1000,
                "cpu_ms": cpu_split(cpu, cpu_seconds(pids), n)}
    finally:
        proc.terminate()
        proc.wait(20)


# -------------------------------------------------------------------------------------- product
def profile(pid: int, out: Path) -> subprocess.Popen:
    """py-spy (a dev dependency) sampling one process, idle threads left out, raw collapsed stacks."""
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def product(make_stack, sampler: RssSampler, n: int, runs: int, server_pid: int,
                  profile_dir: Path | None = None) -> dict:
    """Parts 2 and 6: idle RSS, concurrency-1 latency, then n users at once, Kie's limits lifted.
    With `profile_dir`, py-spy samples worker.py and bot.py during the burst (tests/bench/profile.py)."""
    kie = BenchKie(api_key="bench-kie-key")
    ps: ProcStack = await make_stack("product", kie=kie, poll_schedule=DEFAULT_SCHEDULE, extra_env=LIMITS_OFF)
    worker = await ps.start_worker("worker")
    bot = await ps.start_bot("bot")
    sampler.watch("worker", worker.pid)
    sampler.watch("bot", bot.pid)
    await settle(worker.pid)
    await settle(bot.pid)
    await asyncio.sleep(3)
    out = {"idle_worker": sampler.now("worker"), "idle_bot": sampler.now("bot")}

    # Concurrency 1: one user at a time; press → photo and Kie callback → sendPhoto.
    press_to_photo = []
    single = set()
    for _ in range(runs):
        chat, start = await one_generation(ps)
        single.add(chat)
        press_to_photo.append(next(p.time for p in ps.tg.photos if p.chat_id == chat) - start)
    lat1 = callback_to_photo(ps, single)
    out.update(c1_p50=median(lat1) * 1000, c1_p95=pct(lat1, 95) * 1000, c1_p99=pct(lat1, 99) * 1000,
               press_to_photo_p50=median(press_to_photo))

    # n users at once.
    users = Users(ps)
    await users.prepare(n)
    await settle(worker.pid)
    sampler.reset("worker")
    sampler.reset("bot")
    spies = [profile(proc.pid, profile_dir / f"{proc.name}.txt") for proc in (worker, bot)] if profile_dir else []
    pids = {"server": server_pid, "worker": worker.pid, "bot": bot.pid, "bench": os.getpid()}
    cpu = cpu_seconds(pids)
    start = users.press_all()
    ok = await users.wait_photos(600)
    cpu_ms = cpu_split(cpu, cpu_seconds(pids), n)
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
        spy.wait(30)
    chats = set(users.buttons)
    photos = [p.time for p in ps.tg.photos if p.chat_id in chats]
    wall = (max(photos) - start) if photos else float("nan")
    lat = callback_to_photo(ps, chats)
    delivered, dups = delivery_counts(ps, chats)
    chat_by_task = chat_of_task(kie)
    polls = sum(c for tid, c in kie.record_info_calls.items() if chat_by_task.get(tid) in chats)
    out.update(all_delivered=ok, delivered=delivered, duplicates=dups, wall=wall, throughput=delivered / wall,
               burst_p50=median(lat) * 1000, burst_p95=pct(lat, 95) * 1000, burst_p99=pct(lat, 99) * 1000,
               polls_per_gen=polls / max(delivered, 1), peak_worker=sampler.peak["worker"], cpu_ms=cpu_ms,
               peak_bot=sampler.peak["bot"], counts=await per_generation(ps, chats))
    await ps.stop()
    return out


async def one_generation(ps: ProcStack) -> tuple[int, float]:
    """One scripted user from /start to the photo: (their chat, when they tapped the ratio)."""
    users = Users(ps)
    await users.prepare(1)
    start = users.press_all()
    if not await users.wait_photos(60):
        raise RuntimeError(f"a single generation was not delivered\n{ps.logs()}")
    return next(iter(users.buttons)), start


async def press_all_at_once(ps: ProcStack, n: int, timeout: float,
                            before_press=None) -> tuple[set[int], float, bool]:
    """Real worker.py and bot.py on `ps`, n scripted users brought up to the ratio keyboard, then every
    tap at once: (their chats, first tap → last photo in seconds, all delivered in time).
    `before_press(worker, bot)` runs just before the taps (to start measuring)."""
    worker = await ps.start_worker("worker")
    bot = await ps.start_bot("bot")
    users = Users(ps)
    await users.prepare(n)
    await settle(worker.pid)
    if before_press is not None:
        await before_press(worker, bot)
    start = users.press_all()
    ok = await users.wait_photos(timeout)
    chats = set(users.buttons)
    photos = [p.time for p in ps.tg.photos if p.chat_id in chats]
    return chats, (max(photos) - start) if photos else float("nan"), ok


WARM_UP = 5  # generations through part 2b's fresh processes before its burst is measured


async def product_on_limited_queues(make_stack, n: int, server_pid: int) -> dict:
    """Part 2b: the same n users at once, with the three limits on but far above the load: what the
    pipeline costs in the shape production runs it (no eager dispatch, createTask through the pacer)."""
    ps: ProcStack = await make_stack("queues", kie=BenchKie(api_key="bench-kie-key"), poll_schedule=DEFAULT_SCHEDULE,
                                     extra_env=LIMITS_HIGH)
    pids = {"server": server_pid}
    cpu: dict[str, float] = {}

    async def measure_from_here(worker, bot) -> None:
        # Warm, as the floor is measured (5 + 20 workflows before its burst) and as part 2 is (its 20
        # sequential generations): a fresh worker.py builds each Telegram type on first use
        # (imagegen/lean_aiogram.py), once per process, which py-spy put at a sixth of a cold burst.
        for _ in range(WARM_UP):
            await one_generation(ps)
        await settle(worker.pid)
        pids.update(worker=worker.pid, bot=bot.pid, bench=os.getpid())
        cpu.update(cpu_seconds(pids))

    chats, wall, ok = await press_all_at_once(ps, n, 600, before_press=measure_from_here)
    delivered, dups = delivery_counts(ps, chats)
    cpu_ms = cpu_split(cpu, cpu_seconds(pids), max(delivered, 1))
    counts = await per_generation(ps, chats)
    await ps.stop()
    return dict(all_delivered=ok, delivered=delivered, duplicates=dups, wall=wall, throughput=delivered / wall,
                cpu_ms=cpu_ms, counts=counts)


# ------------------------------------------------------------------------- burst under Kie limits
async def burst_limited(make_stack, n: int, single_latency: float) -> dict:
    """Part 4: n users at once against a Kie simulator enforcing Kie's limits; default worker limits."""
    kie = BenchKie(api_key="bench-kie-key")
    kie.enforce_limits = True
    ps: ProcStack = await make_stack("burst", kie=kie, poll_schedule=DEFAULT_SCHEDULE, extra_env=LIMITS_DEFAULT)
    chats, wall, ok = await press_all_at_once(ps, n, 900)
    delivered, dups = delivery_counts(ps, chats)
    count, window = KIE_WINDOW
    theoretical = (n - 1) // count * window + single_latency  # the n-th createTask, then one generation
    tg_429 = sum(1 for c in ps.tg.calls if c.status == 429)
    queued = sum(1 for c in ps.tg.calls_of("editMessageText") if "очеред" in str(c.params.get("text", "")))
    out = dict(all_delivered=ok, delivered=delivered, duplicates=dups, lost=len(chats) - delivered,
               failures=await failed_generations(ps, chats), kie_429_create=kie.refused["createTask"],
               kie_429_info=kie.refused["recordInfo"], telegram_429=tg_429, wall=wall, theoretical=theoretical,
               wall_ratio=wall / theoretical, told_queued=queued)
    await ps.stop()
    return out


# ----------------------------------------------------------------------------------------- scale
async def scale(make_stack, sampler: RssSampler, n: int) -> dict:
    """Part 5: n generations waiting for their callbacks at once on one worker, then all callbacks."""
    kie = BenchKie(api_key="bench-kie-key")
    kie.hold = True
    # Long polling interval: the waiting generations only wait (no recordInfo until the callbacks).
    ps: ProcStack = await make_stack("scale", kie=kie, poll_schedule=[(1800.0, 900.0)], extra_env=LIMITS_OFF)
    worker = await ps.start_worker("worker")
    await ps.start_bot("bot")
    sampler.watch("scale-worker", worker.pid)
    await settle(worker.pid)
    idle = sampler.now("scale-worker")
    sampler.reset("scale-worker")
    sem = asyncio.Semaphore(50)
    chats: set[int] = set()

    async def start_one() -> None:
        chat = ps.new_chat_id()
        chats.add(chat)
        async with sem:
            await ps.start_generation(prompt=f"bench chat {chat}", chat_id=chat)

    started = time.perf_counter()
    await asyncio.gather(*(start_one() for _ in range(n)))
    while len(kie.tasks) < n:
        await asyncio.sleep(0.5)
        if time.perf_counter() - started > 1200:
            raise RuntimeError(f"only {len(kie.tasks)} of {n} tasks created")
    ramp = time.perf_counter() - started
    await settle(worker.pid, quiet_for=3.0)
    waiting_rss = sampler.now("scale-worker")
    waiting_peak = sampler.peak["scale-worker"]
    released = time.time()
    kie.release.set()
    deadline = time.monotonic() + 1200
    while len({p.chat_id for p in ps.tg.photos} & chats) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    delivered, dups = delivery_counts(ps, chats)
    photos = [p.time for p in ps.tg.photos if p.chat_id in chats]
    drain = (max(photos) - released) if photos else float("nan")
    out = dict(n=n, ramp=ramp, idle=idle, waiting_rss=waiting_rss, peak_waiting=waiting_peak,
               peak=sampler.peak["scale-worker"], per_gen_kb=(waiting_rss - idle) * 1024 / n,
               cached=min(n, WORKFLOW_CACHE), per_cached_kb=(waiting_rss - idle) * 1024 / min(n, WORKFLOW_CACHE),
               delivered=delivered, duplicates=dups, drain=drain)
    await ps.stop()
    return out
