"""A process-level stack for fault tests: the simulators live in the test's event loop (as in
tests/demo.py), `worker.py` and `bot.py` run as real subprocesses configured only by environment.

    ps = ProcStack(name="two-workers", dsn=pg_dsn, temporal_address=addr)
    await ps.start()                       # simulators, callback balancer, Temporal client, pool, Bot
    w1 = await ps.start_worker()           # waits for WORKER_STARTED in its log
    b1 = await ps.start_bot()              # its own HTTP port, registered behind the balancer
    gen = await ps.start_generation()      # directly through Temporal (status message first), or
    gen = await ps.user_generation(chat)   # as a scripted Telegram user talking to the bot
    w1.kill()                              # SIGKILL; .terminate() = SIGTERM; both by pid, only ours
    await ps.stop()                        # everything still running is stopped

Kie calls back to ``PUBLIC_BASE_URL``, which is a tiny reverse proxy in the test loop (a load
balancer in front of the bot processes): it forwards to whichever registered bot answers, and
answers 502 when none does, as a real balancer would. Every process logs to
``<workdir>/<name>.log`` (workdir defaults to ``.run/faults/<stack name>-<pid>``, git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from temporalio.client import Client, WorkflowHandle

from imagegen.contracts import GenerationResult
from imagegen.delivery import create_bot
from imagegen.launch import workflow_exists
from imagegen.migrate import apply_migrations
from tests.support.chat import button
from tests.support.kie_sim import KieSimulator
from tests.support.services import connect_temporal, free_port
from tests.support.stack import reset_kie_account, start_generation_workflow
from tests.support.telegram_sim import TelegramSimulator

ROOT = Path(__file__).resolve().parent.parent.parent
RUN_DIR = ROOT / ".run"
FAST_SCHEDULE = [(2.0, 0.4), (6.0, 1.0), (15.0, 2.0)]


def schedule_text(schedule: list[tuple[float, float]]) -> str:
    return ",".join(f"{u:g}:{i:g}" for u, i in schedule)


@dataclass
class Proc:
    """One worker.py or bot.py subprocess (its own session; signalled by pid only)."""

    name: str
    kind: str  # "worker" | "bot"
    popen: subprocess.Popen
    log_path: Path
    env: dict[str, str]
    port: int | None = None  # bot HTTP port
    health_port: int | None = None  # internal /healthz, /readyz, /status (HEALTH_PORT)
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.popen.pid, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def wait(self, timeout: float = 30.0) -> int | None:
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.popen.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, needle: str) -> int:
        return self.log().count(needle)


class CallbackBalancer:
    """Forward every request to the first registered backend that accepts the connection."""

    def __init__(self) -> None:
        self.backends: list[int] = []
        self.port = free_port()
        self.forwarded = 0
        self.no_backend = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._next = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))

    async def stop(self) -> None:
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        ports = list(self.backends)
        if ports:
            self._next = (self._next + 1) % len(ports)
            ports = ports[self._next:] + ports[: self._next]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        for port in ports:
            url = f"http://127.0.0.1:{port}{request.rel_url}"
            try:
                async with self._session.request(request.method, url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    self.forwarded += 1
                    return web.Response(body=payload, status=resp.status,
                                        content_type=resp.content_type or "application/json")
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                continue  # that bot is down: try the next one
        self.no_backend += 1
        return web.json_response({"ok": False, "error": "no backend"}, status=502)


@dataclass
class Generation:
    job_id: str
    chat_id: int
    handle: WorkflowHandle | None = None
    started: float = field(default_factory=time.time)


class ProcStack:
    def __init__(self, *, name: str, dsn: str, temporal_address: str, client: Client | None = None,
                 task_queue: str | None = None, workdir: Path | None = None,
                 kie: KieSimulator | None = None, tg: TelegramSimulator | None = None,
                 poll_schedule: list[tuple[float, float]] | None = None, lease_seconds: int = 6,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.dsn = dsn
        self.temporal_address = temporal_address
        self.client = client
        self._own_client = client is None
        self.task_queue = task_queue or f"faults-{name}-{uuid.uuid4().hex[:8]}"
        # Unique per run: two test runs on one checkout must never share (or delete) each other's files.
        self.workdir = workdir or RUN_DIR / "faults" / f"{name}-{os.getpid()}"
        self.kie = kie or KieSimulator(api_key="faults-kie-key")
        self.tg = tg or TelegramSimulator(token="555000111:FAULTS-TOKEN")
        self.poll_schedule = list(poll_schedule or FAST_SCHEDULE)
        self.lease_seconds = lease_seconds
        self.extra_env = dict(extra_env or {})
        self.callback_secret = uuid.uuid4().hex
        self.balancer = CallbackBalancer()
        self.procs: list[Proc] = []
        self.pool: asyncpg.Pool | None = None
        self.bot = None
        self._counter = 0
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "ProcStack":
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.kie.start()
        await self.tg.start()
        await self.balancer.start()
        if self.client is None:
            self.client = await connect_temporal(self.temporal_address)
        await apply_migrations(self.dsn)
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=5)
        await reset_kie_account(self.pool)
        self.bot = create_bot(self.tg.token, self.tg.base_url, timeout=10)
        return self

    async def stop(self) -> None:
        """Stop everything still running (SIGTERM, then SIGKILL after 15 s). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            if await p.wait(15) is None:
                p.kill()
                await p.wait(5)
        if self.bot is not None:
            await self.bot.session.close()
        if self.pool is not None:
            self.pool.terminate()
        await self.balancer.stop()
        await self.tg.stop()
        await self.kie.stop()

    # ------------------------------------------------------------------ processes
    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "TELEGRAM_BOT_TOKEN": self.tg.token,
            "TELEGRAM_API_BASE": self.tg.base_url,
            "KIE_API_KEY": self.kie.api_key,
            "KIE_API_BASE": self.kie.base_url,
            "KIE_UPLOAD_BASE": self.kie.upload_base_url,
            "PUBLIC_BASE_URL": self.balancer.base_url,
            "CALLBACK_SECRET": self.callback_secret,
            "HTTP_HOST": "127.0.0.1",
            "DATABASE_URL": self.dsn,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_TASK_QUEUE": self.task_queue,
            "POLL_SCHEDULE": schedule_text(self.poll_schedule),
            "DELIVERY_LEASE_SECONDS": str(self.lease_seconds),
            "DOWNLOAD_TIMEOUT_SECONDS": "5",
            "ALLOW_PRIVATE_URLS": "1",  # the simulators live on 127.0.0.1
            "USER_MAX_ACTIVE": "100",
            "USER_MAX_PER_MINUTE": "100",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # Global rate limits off unless asked (extra_env / start_worker(**env)), as in stack.py.
            "KIE_CREATE_LIMIT": "off",
            "KIE_RECORD_INFO_LIMIT": "off",
            "TELEGRAM_SEND_LIMIT": "off",
        }
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def _spawn(self, kind: str, name: str, env: dict[str, str], port: int | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        env = {"HEALTH_PORT": str(free_port()), **env}
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")}
        # cwd = the workdir: a developer's .env in the checkout must not leak into the processes.
        popen = subprocess.Popen([sys.executable, str(ROOT / f"{kind}.py")], cwd=self.workdir, env={**base, **env},
                                 stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name=name, kind=kind, popen=popen, log_path=log_path, env=env, port=port,
                    health_port=int(env["HEALTH_PORT"]))
        self.procs.append(proc)
        return proc

    async def start_worker(self, name: str | None = None, *, wait: bool = True, **env: str) -> Proc:
        self._counter += 1
        proc = self._spawn("worker", name or f"worker{self._counter}", self.env(**env))
        if wait:
            await self.wait_worker_ready(proc)
        return proc

    async def wait_worker_ready(self, proc: Proc, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "WORKER_STARTED" not in proc.log():
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready after {timeout}s:\n{proc.log()[-3000:]}")
            await asyncio.sleep(0.1)

    async def start_bot(self, name: str | None = None, *, wait: bool = True, port: int | None = None,
                        balanced: bool = True, **env: str) -> Proc:
        self._counter += 1
        port = port or free_port()
        proc = self._spawn("bot", name or f"bot{self._counter}", self.env(HTTP_PORT=str(port), **env), port=port)
        if wait:
            await self.wait_bot_ready(proc)
        if balanced and port not in self.balancer.backends:
            self.balancer.backends.append(port)
        return proc

    async def bot_health(self, proc: Proc) -> dict[str, Any] | None:
        """The process's internal /status (ready flag, checks, the bot's role and counters)."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
                async with s.get(f"http://127.0.0.1:{proc.health_port}/status") as r:
                    return await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def wait_bot_ready(self, proc: Proc, timeout: float = 60.0, role: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            health = await self.bot_health(proc)
            if health and health.get("ok") and (role is None or health.get("role") == role):
                return health
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready (health={health}) after {timeout}s:\n{proc.log()[-3000:]}")
            await asyncio.sleep(0.1)

    def retire_bot(self, proc: Proc) -> None:
        """Take a bot out of the balancer (as a deploy drains it)."""
        if proc.port in self.balancer.backends:
            self.balancer.backends.remove(proc.port)

    # ------------------------------------------------------------------ generations
    def new_chat_id(self) -> int:
        return int(uuid.uuid4().int % 10**9) + 10_000

    async def start_generation(self, prompt: str = "a red fox in snow", ratio: str = "1:1",
                               chat_id: int | None = None, price: int = 0) -> Generation:
        """Start a GenerationWorkflow as the bot would (status message first), directly through Temporal
        (`price`: its cost in credits, for workers with CREDITS=on)."""
        handle, job_id, chat_id = await start_generation_workflow(
            self.client, self.bot, self.task_queue, self.poll_schedule, prompt=prompt, ratio=ratio,
            chat_id=chat_id or self.new_chat_id(), price=price)
        return Generation(job_id, chat_id, handle)

    async def user_generation(self, chat_id: int | None = None, prompt: str = "a lighthouse at dusk",
                              ratio: str = "1:1", timeout: float = 60.0, started: bool = True) -> Generation:
        """A scripted Telegram user: /start → Z-Image → prompt → ratio; returns the generation (`started`:
        once its workflow exists; False: once its job row does, for tests that hold the start back)."""
        chat_id = chat_id or self.new_chat_id()
        mid, data = await self.user_up_to_ratio(chat_id, prompt, ratio, timeout)
        self.tg.user_press_button(chat_id, mid, data)

        return await self.generation_for_chat(chat_id, timeout, started=started)

    async def generation_for_chat(self, chat_id: int, timeout: float = 60.0, started: bool = True) -> Generation:
        """The chat's generation, once its job is recorded and its workflow started (the bot inserts the
        row a moment before it starts the workflow: a handle asked for in between finds nothing)."""
        job_id = await self.wait_job_for_chat(chat_id, timeout=timeout)
        workflow_id = await self.pool.fetchval("SELECT workflow_id FROM generation_jobs WHERE id = $1", job_id)
        handle = self.client.get_workflow_handle(workflow_id, result_type=GenerationResult)
        deadline = time.monotonic() + timeout
        while started and await workflow_exists(self.client, handle.id) is not True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no workflow for job {job_id} after {timeout}s")
            await asyncio.sleep(0.1)
        return Generation(job_id, chat_id, handle)

    async def user_up_to_ratio(self, chat_id: int, prompt: str, ratio: str = "1:1",
                               timeout: float = 60.0) -> tuple[int, str | None]:
        """The scripted user's conversation up to the aspect-ratio keyboard: (message id, button data)
        of the `ratio` button, not pressed yet."""
        tg = self.tg
        tg.user_send_command(chat_id, "/start")
        mid, data = await tg.wait_for(lambda: button(self, chat_id, "Z-Image"), timeout=timeout)
        tg.user_press_button(chat_id, mid, data)
        await tg.wait_for(lambda: any("Опишите" in (m.get("text") or "") for m in tg.messages(chat_id)),
                          timeout=timeout)
        tg.user_send_text(chat_id, prompt)
        return await tg.wait_for(lambda: button(self, chat_id, ratio), timeout=timeout)

    async def wait_job_for_chat(self, chat_id: int, timeout: float = 60.0) -> str:
        """The job id of the chat's generation, once the worker has recorded it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                job_id = await self.pool.fetchval(
                    "SELECT id FROM generation_jobs WHERE chat_id = $1 ORDER BY created_at DESC LIMIT 1", chat_id)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                job_id = None
            if job_id:
                return job_id
            if time.monotonic() > deadline:
                raise TimeoutError(f"no job for chat {chat_id} after {timeout}s\n{self.tg.dump()}")
            await asyncio.sleep(0.1)

    def photos_for(self, chat_id: int) -> list:
        return [p for p in self.tg.photos if p.chat_id == chat_id]

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (pid {p.pid})\n{p.log()[-4000:]}" for p in self.procs)


