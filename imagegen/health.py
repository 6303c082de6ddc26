"""Liveness and readiness of the bot and the worker.

* ``GET /healthz`` — liveness: the process serves HTTP. ``{"ok": true}``, nothing else.
* ``GET /readyz`` — readiness: Postgres answers ``SELECT 1`` and the Temporal frontend answers
  GetSystemInfo, each within CHECK_TIMEOUT_SECONDS, and the process is not draining (SIGTERM).
  200 ``{"ok": true}`` or 503 ``{"ok": false}``; results are cached for CACHE_SECONDS, so a flood of
  probes costs at most one check of each dependency per second.
* ``GET /status`` — internal only: which check failed and the process's own status (the bot's role
  and callback counters).

The bot's public HTTP server gets /healthz and /readyz (:func:`add_public_routes`). Both processes
can serve all three on the internal ``HEALTH_PORT`` (:func:`start_internal_server`), which is never
published: counters and internals stay off the public port.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any, Awaitable, Callable

import asyncpg
from aiohttp import web
from temporalio.client import Client

from imagegen.redact import redact

CHECK_TIMEOUT_SECONDS = 2.0
CACHE_SECONDS = 1.0
Check = Callable[[], Awaitable[None]]  # raises when the dependency is not usable


def postgres_check(pool: asyncpg.Pool, timeout: float = CHECK_TIMEOUT_SECONDS) -> Check:
    async def check() -> None:
        async with asyncio.timeout(timeout):
            await pool.fetchval("SELECT 1")
    return check


def temporal_check(client: Client, timeout: float = CHECK_TIMEOUT_SECONDS) -> Check:
    """The frontend answers GetSystemInfo (allowed for any client, Temporal Cloud included)."""
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    async def check() -> None:
        async with asyncio.timeout(timeout):
            await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=timedelta(seconds=timeout))
    return check


class Readiness:
    """Runs the named checks (concurrently, cached briefly); `draining` makes the process unready."""

    def __init__(self, checks: dict[str, Check] | None = None, *, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.checks: dict[str, Check] = dict(checks or {})
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.draining = False
        self._last: tuple[float, dict[str, str]] | None = None
        self._lock = asyncio.Lock()

    async def results(self) -> dict[str, str]:
        """{check name: "ok" or the error}; "starting" when no check is registered yet."""
        async with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last[0] < self.cache_seconds:
                return self._last[1]
            names = list(self.checks)
            outcomes = await asyncio.gather(*(self.checks[n]() for n in names), return_exceptions=True)
            results = {n: "ok" if o is None else _describe(o) for n, o in zip(names, outcomes)}
            if not results:
                results = {"process": "starting"}
            self._last = (now, results)
            return results

    async def ready(self) -> bool:
        results = await self.results()
        return not self.draining and all(v == "ok" for v in results.values())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return " ".join(redact(f"{type(exc).__name__}: {exc}").split())[:200] or type(exc).__name__


READINESS_KEY = web.AppKey("readiness", Readiness)
STATUS_KEY = web.AppKey("process_status", object)  # () -> dict


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    ok = await request.app[READINESS_KEY].ready()
    return web.json_response({"ok": ok}, status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    readiness = request.app[READINESS_KEY]
    ready = await readiness.ready()
    body: dict[str, Any] = {"ok": ready, "draining": readiness.draining, "checks": await readiness.results()}
    body.update(request.app[STATUS_KEY]())
    return web.json_response(body, status=200 if ready else 503)


def add_public_routes(app: web.Application, readiness: Readiness) -> None:
    """/healthz and /readyz, minimal: for load balancers and orchestrators on the public port."""
    app[READINESS_KEY] = readiness
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def build_internal_app(readiness: Readiness, process_status: Callable[[], dict] = dict) -> web.Application:
    app = web.Application()
    add_public_routes(app, readiness)
    app[STATUS_KEY] = process_status
    app.router.add_get("/status", status)
    return app


async def start_internal_server(host: str, port: int, readiness: Readiness,
                                process_status: Callable[[], dict] = dict) -> web.AppRunner | None:
    """Serve /healthz, /readyz and /status on `port` (None when the port is 0, i.e. off)."""
    if not port:
        return None
    runner = web.AppRunner(build_internal_app(readiness, process_status), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
