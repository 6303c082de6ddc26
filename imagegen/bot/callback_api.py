"""HTTP endpoint for Kie callbacks, and /healthz.

A callback only wakes its workflow up (a signal); the workflow asks recordInfo for the truth. The
endpoint answers fast and never lets a bad request take it down.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from imagegen.callbacks import CALLBACK_PATH, token_ok
from imagegen.contracts import CallbackSignal, workflow_id_for
from imagegen.kie import extract_task_id, parse_kie_state
from imagegen.logs import log_event

MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger("imagegen.callbacks")

TEMPORAL_KEY = web.AppKey("temporal", Client)
SECRET_KEY = web.AppKey("callback_secret", str)
STATS_KEY = web.AppKey("stats", dict)
STATUS_KEY = web.AppKey("status", object)  # () -> dict, extra fields for /healthz


def _reply(status: int, **body: object) -> web.Response:
    return web.json_response({"ok": status < 400, **body}, status=status)


async def kie_callback(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    stats["received"] += 1
    job_id = request.query.get("job", "")
    token = request.query.get("token", "")
    corr = job_id[:64] or "-"
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        stats["rejected"] += 1
        log_event(corr, "CALLBACK_REJECTED", reason="body too large")
        return _reply(413, error="body too large")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        stats["rejected"] += 1
        log_event(corr, "CALLBACK_REJECTED", reason="malformed JSON", bytes=len(raw))
        return _reply(400, error="malformed JSON")
    task_id = extract_task_id(payload)
    log_event(corr, "CALLBACK_RECEIVED", task_id=task_id or "-")
    if not job_id or not token_ok(request.app[SECRET_KEY], job_id, token):
        stats["rejected"] += 1
        log_event(corr, "CALLBACK_REJECTED", reason="bad or missing job token", task_id=task_id or "-")
        return _reply(403, error="forbidden")
    state, urls, error = parse_kie_state(payload)
    log_event(corr, "CALLBACK_PARSED", task_id=task_id or "-", state=state, urls=len(urls),
              **({"error": error} if error else {}))
    handle = request.app[TEMPORAL_KEY].get_workflow_handle(workflow_id_for(job_id))
    try:
        await handle.signal("kie_callback", CallbackSignal(task_id=task_id, state=state))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            stats["unknown"] += 1
            log_event(corr, "CALLBACK_UNKNOWN", task_id=task_id or "-", reason="no running workflow")
            return _reply(200, ignored=True)
        stats["errors"] += 1
        log_event(corr, "CALLBACK_SIGNAL_FAILED", severity=logging.ERROR, error=f"{exc.status.name}: {exc.message}")
        return _reply(503, error="try again later")
    stats["signalled"] += 1
    log_event(corr, "CALLBACK_SIGNALLED", workflow_id=handle.id)
    return _reply(200)


async def healthz(request: web.Request) -> web.Response:
    return _reply(200, callbacks=request.app[STATS_KEY], **request.app[STATUS_KEY]())


def build_http_app(temporal: Client, callback_secret: str, *, status=lambda: {}) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATUS_KEY] = status
    app[TEMPORAL_KEY] = temporal
    app[SECRET_KEY] = callback_secret
    app[STATS_KEY] = {"received": 0, "signalled": 0, "rejected": 0, "unknown": 0, "errors": 0}
    app.router.add_post(CALLBACK_PATH, kie_callback)
    app.router.add_get("/healthz", healthz)
    return app
