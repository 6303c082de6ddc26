"""HTTP endpoint for Kie callbacks (the bot adds /healthz and /readyz, see imagegen.health).

A callback only wakes its workflow up (a signal); the workflow asks recordInfo for the truth, so a
forged body can never choose what a user receives. Before anything is signalled, a request must
pass, in this order (the first failure answers, is logged with its reason and counted):

1. the per-job token in the callback URL (``?job=…&token=…``, see imagegen.callbacks) → else 403;
2. a JSON content type → else 400; a body of at most MAX_BODY_BYTES → else 413;
3. a JSON object carrying a task id (``taskId``, ``data.taskId`` or ``data.task_id``) → else 400;
4. when Kie's webhook HMAC key is configured: ``X-Webhook-Timestamp`` within
   SIGNATURE_WINDOW_SECONDS of now and ``X-Webhook-Signature`` =
   base64(HMAC-SHA256(key, "<task_id>.<timestamp>")), compared in constant time → else 401.

Rejections carry no detail (``{"ok": false}``). A callback for a job with no running workflow is
answered 200 (so Kie stops retrying) and logged. Nothing a client sends can raise out of the
handler: an unexpected error is logged and answered 500, and the server keeps serving.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
import logging
import re
import time
from typing import Callable

from aiohttp import web
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from imagegen import metrics, redact
from imagegen.callbacks import CALLBACK_PATH, token_ok
from imagegen.contracts import CallbackSignal, workflow_id_candidates
from imagegen.kie import parse_kie_state, task_id_candidates
from imagegen.logs import log_event
from imagegen.models import MODELS

MAX_BODY_BYTES = 64 * 1024
SIGNATURE_WINDOW_SECONDS = 300
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
log = logging.getLogger("imagegen.callbacks")

TEMPORAL_KEY = web.AppKey("temporal", Client)
SECRET_KEY = web.AppKey("callback_secret", str)
HMAC_KEY = web.AppKey("webhook_hmac_key", object)  # str | None
CLOCK_KEY = web.AppKey("clock", object)  # () -> float, Unix seconds
STATS_KEY = web.AppKey("stats", dict)

_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _clean(value: object, limit: int = 64) -> str:
    """An attacker-supplied value made safe for one log field (no spaces, newlines or escapes)."""
    text = str(value)[:limit]
    return _SAFE.sub("?", text) or "-"


class Rejected(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _reply(status: int, **body: object) -> web.Response:
    return web.json_response({"ok": status < 400, **body}, status=status)


def kie_signature(key: str, task_id: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key, "<task_id>.<timestamp>")), as Kie signs callbacks."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def verify_signature(key: str, candidates: list[str], timestamp: str | None, signature: str | None,
                     now: float) -> str:
    """The task id the signature covers; raises Rejected(401) when it covers none of them."""
    if not timestamp or not signature:
        raise Rejected(401, "signature headers missing")
    ts = timestamp.strip()
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
        raise Rejected(401, "signature timestamp malformed")
    if abs(now - int(ts)) > SIGNATURE_WINDOW_SECONDS:
        raise Rejected(401, "signature timestamp outside the window")
    given = signature.strip().encode("utf-8", "replace")
    matched = None
    for task_id in candidates:  # compare against every candidate: no early exit on a match
        if hmac.compare_digest(kie_signature(key, task_id, ts).encode(), given) and matched is None:
            matched = task_id
    if matched is None:
        raise Rejected(401, "signature mismatch")
    return matched


def _is_json_type(content_type: str) -> bool:
    ctype = content_type.lower()
    return ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))


async def _authenticate(request: web.Request, job_id: str) -> tuple[dict, str]:
    """(payload, task id) of an authentic, well-formed callback; raises Rejected otherwise."""
    if not job_id or len(job_id) > 128 or not token_ok(request.app[SECRET_KEY], job_id, request.query.get("token", "")):
        raise Rejected(403, "bad or missing job token")
    if not _is_json_type(request.content_type):
        raise Rejected(400, "content type is not JSON")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Rejected(413, "body too large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Rejected(413, "body too large") from None
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Rejected(400, "malformed JSON") from None
    if not isinstance(payload, dict):
        raise Rejected(400, "JSON is not an object")
    candidates = task_id_candidates(payload)
    if not candidates:
        raise Rejected(400, "no task id")
    key = request.app[HMAC_KEY]
    if key:
        task_id = verify_signature(key, candidates, request.headers.get(TIMESTAMP_HEADER),
                                   request.headers.get(SIGNATURE_HEADER), request.app[CLOCK_KEY]())
    else:
        task_id = candidates[0]
    return payload, task_id


def _reject(stats: dict, corr: str, status: int, reason: str, **fields: object) -> web.Response:
    stats["rejected"] += 1
    reasons = stats["rejected_reasons"]
    reasons[reason] = reasons.get(reason, 0) + 1
    metrics.count("imagegen_callbacks", verdict=f"rejected_{reason}")
    log_event(corr, "CALLBACK_REJECTED", severity=logging.WARNING, status=status, reason=reason, **fields)
    if status in (401, 403, 404):
        return _reply(status)  # no detail for authentication failures
    return _reply(status, error={400: "bad request", 413: "body too large"}.get(status, "rejected"))


def _workflow_ids(job_id: str, named: str) -> list[str]:
    """The ids to signal, in order: the one the callback URL names (only if it is one of the job's:
    the token authenticates the job, not the id), then every other id a workflow of the job can
    have. A URL without one was made before ids named their model: its workflow is most likely
    ``zimage-<job>``, so that one goes first."""
    ids = workflow_id_candidates(job_id, list(MODELS))
    if named in ids:
        return [named] + [i for i in ids if i != named]
    return ids[-1:] + ids[:-1]


async def kie_callback(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    stats["received"] += 1
    job_id = request.query.get("job", "")
    corr = _clean(job_id)
    try:
        try:
            payload, task_id = await _authenticate(request, job_id)
        except Rejected as rej:
            return _reject(stats, corr, rej.status, rej.reason, peer=_clean(request.remote or "-"))
        state, urls, error = parse_kie_state(payload)
        log_event(corr, "CALLBACK_RECEIVED", task_id=_clean(task_id, 100))
        log_event(corr, "CALLBACK_PARSED", task_id=_clean(task_id, 100), state=_clean(state, 20), urls=len(urls),
                  **({"error": error[:200]} if error else {}))
        if not request.app[THROTTLE_KEY].allow(job_id):
            # Kie calls back once or a few times; more is a replay or a flood. Every signal is an
            # event in the workflow's history, so they are capped per job (the workflow polls anyway).
            stats["throttled"] += 1
            metrics.count("imagegen_callbacks", verdict="throttled")
            log_event(corr, "CALLBACK_THROTTLED", task_id=_clean(task_id, 100))
            return _reply(429, error="too many callbacks for this job")
        signal = CallbackSignal(task_id=task_id, state=state)
        handle = None
        try:
            for workflow_id in _workflow_ids(job_id, request.query.get("wf", "")):
                handle = request.app[TEMPORAL_KEY].get_workflow_handle(workflow_id)
                try:
                    await handle.signal("kie_callback", signal, rpc_timeout=SIGNAL_RPC_TIMEOUT)
                    break
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
            else:
                stats["unknown"] += 1
                metrics.count("imagegen_callbacks", verdict="unknown")
                log_event(corr, "CALLBACK_UNKNOWN", task_id=_clean(task_id, 100), reason="no running workflow")
                return _reply(200, ignored=True)
        except RPCError as exc:
            stats["errors"] += 1
            metrics.count("imagegen_callbacks", verdict="signal_failed")
            log_event(corr, "CALLBACK_SIGNAL_FAILED", severity=logging.ERROR,
                      error=redact.redact(f"{exc.status.name}: {exc.message}")[:300])
            return _reply(503, error="try again later")
        stats["signalled"] += 1
        metrics.count("imagegen_callbacks", verdict="signalled")
        log_event(corr, "CALLBACK_SIGNALLED", workflow_id=handle.id)
        return _reply(200)
    except Exception as exc:  # never let one request take the endpoint down
        stats["errors"] += 1
        metrics.count("imagegen_callbacks", verdict="error")
        log_event(corr, "CALLBACK_ERROR", severity=logging.ERROR, error=redact.redact(f"{type(exc).__name__}: {exc}")[:300])
        return _reply(500, error="internal error")


class SignalThrottle:
    """At most `limit` signals per job per `window` seconds, in this process (memory bounded)."""

    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_jobs: int = 10_000):
        self.limit, self.window, self.clock, self.max_jobs = limit, window, clock, max_jobs
        self._seen: dict[str, list[float]] = {}

    def allow(self, job_id: str) -> bool:
        now = self.clock()
        recent = [t for t in self._seen.get(job_id, ()) if now - t < self.window]
        if len(recent) >= self.limit:
            self._seen[job_id] = recent
            return False
        recent.append(now)
        self._seen[job_id] = recent
        if len(self._seen) > self.max_jobs:  # forget jobs with nothing recent
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < self.window}
        return True


SIGNAL_RPC_TIMEOUT = timedelta(seconds=5)  # answer Kie fast (503) while Temporal is unreachable
THROTTLE_KEY = web.AppKey("throttle", object)


def build_http_app(
    temporal: Client,
    callback_secret: str,
    *,
    webhook_hmac_key: str | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The callback application; its counters are ``app[STATS_KEY]`` (the bot serves them on the
    internal /status). Pass `webhook_hmac_key` (KIE_WEBHOOK_HMAC_KEY) to verify Kie's callback
    signatures; without it a warning is logged once, here, at start-up."""
    redact.register(callback_secret, webhook_hmac_key)
    if not webhook_hmac_key:
        log.warning("CALLBACK_SIGNATURES_OFF KIE_WEBHOOK_HMAC_KEY is not set: Kie callbacks are checked by "
                    "their per-job URL token only (set it when the Kie account has a webhook HMAC key)")
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[TEMPORAL_KEY] = temporal
    app[SECRET_KEY] = callback_secret
    app[HMAC_KEY] = webhook_hmac_key or None
    app[CLOCK_KEY] = clock
    app[STATS_KEY] = {"received": 0, "signalled": 0, "rejected": 0, "unknown": 0, "errors": 0, "throttled": 0,
                      "rejected_reasons": {}}
    app[THROTTLE_KEY] = SignalThrottle()
    app.router.add_post(CALLBACK_PATH, kie_callback)
    return app
