"""Kie.ai Market jobs API: the client (createTask, recordInfo) and the unified state parser.

The parser reads recordInfo answers and callbacks alike (their shapes differ, see
shared/reference/kie-api.md) and never raises: bad input gives state ``invalid`` with a reason.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple

import aiohttp

from imagegen import metrics

KNOWN_STATES = ("waiting", "queuing", "generating", "success", "fail")

# Body codes Kie documents. Retryable: worth asking again later; the rest need a human or a new input.
RETRYABLE_CODES = {429, 433, 455, 500, 502, 503, 504}
# Not the user's fault and not going away by itself: the operator must act (key, credits, feature).
ACCOUNT_CODES = {401, 402, 505}
CODE_MEANINGS = {
    401: "unauthorized",
    402: "insufficient credits",
    404: "not found",
    422: "validation error",
    429: "rate limited",
    433: "sub-key over limit",
    455: "service maintenance",
    500: "server error",
    501: "generation failed",
    505: "feature disabled",
}


class KieState(NamedTuple):
    state: str  # one of KNOWN_STATES, or "unknown" (unrecognised state) / "invalid" (unreadable payload)
    result_urls: list[str]
    error: str  # failMsg, or why the payload could not be read; "" when fine


MAX_TASK_ID_CHARS = 200


def task_id_candidates(payload: Any) -> list[str]:
    """Every task id a payload carries (``taskId``, ``data.taskId``, ``data.task_id``), in that order,
    stripped, without duplicates; values that are not strings or ints, or are empty or too long, are skipped."""
    if not isinstance(payload, dict):
        return []
    raw = [payload.get("taskId")]
    data = payload.get("data")
    if isinstance(data, dict):
        raw += [data.get("taskId"), data.get("task_id")]
    out: list[str] = []
    for value in raw:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value).strip()
            if text and len(text) <= MAX_TASK_ID_CHARS and text not in out:
                out.append(text)
    return out


def extract_task_id(payload: Any) -> str | None:
    """Task id from ``taskId``, ``data.taskId`` or ``data.task_id``; None when absent."""
    candidates = task_id_candidates(payload)
    return candidates[0] if candidates else None


def _message(obj: dict) -> str:
    for key in ("msg", "message"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _result_urls(raw: Any) -> tuple[list[str], str]:
    """Parse resultJson (a JSON string; tolerate a dict, "" and invalid JSON) → (urls, problem)."""
    if raw is None or raw == "":
        return [], "resultJson empty"
    obj = raw
    if isinstance(raw, str):
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            return [], "resultJson is not valid JSON"
    if not isinstance(obj, dict):
        return [], "resultJson is not an object"
    urls = obj.get("resultUrls")
    if not isinstance(urls, list):
        return [], "resultJson has no resultUrls list"
    good = [u.strip() for u in urls if isinstance(u, str) and u.strip().lower().startswith(("http://", "https://"))]
    if not good:
        return [], "resultUrls has no http(s) URL"
    return good, ""


def parse_kie_state(payload: Any) -> KieState:
    """(state, result_urls, error) from a recordInfo answer or a callback body. Never raises."""
    try:
        return _parse(payload)
    except Exception as exc:  # defensive: a parser bug must not take a handler down
        return KieState("invalid", [], f"parser error: {type(exc).__name__}")


def _parse(payload: Any) -> KieState:
    if not isinstance(payload, dict):
        return KieState("invalid", [], f"payload is {type(payload).__name__}, not an object")
    code = payload.get("code")
    data = payload.get("data")
    if not isinstance(data, dict):
        detail = _message(payload)
        return KieState("invalid", [], f"no data object (code={code} msg={detail or '-'})")

    raw_state = data.get("state")
    if isinstance(raw_state, str) and raw_state.strip():
        state = raw_state.strip().lower()
    elif code == 501:
        state = "fail"
    elif code == 200 and data.get("callbackType") == "task_completed":
        state = "success"  # documented callback shape without a state: a completion notice
    else:
        return KieState("invalid", [], f"no state (code={code})")

    if state not in KNOWN_STATES:
        return KieState("unknown", [], f"unrecognised state {raw_state!r}")

    if state == "fail":
        fail_code = data.get("failCode")
        fail_msg = data.get("failMsg") or _message(payload) or "generation failed"
        error = f"{fail_msg} (failCode {fail_code})" if fail_code not in (None, "") else str(fail_msg)
        return KieState("fail", [], error)

    if state == "success":
        urls, problem = _result_urls(data.get("resultJson"))
        return KieState("success", urls, problem)

    return KieState(state, [], "")


class KieError(Exception):
    """An unsuccessful Kie.ai call. `retryable` says whether asking again later can help."""

    def __init__(self, code: int | None, message: str, *, retryable: bool, http_status: int | None = None):
        self.code = code
        self.message = message
        self.retryable = retryable
        self.http_status = http_status
        meaning = CODE_MEANINGS.get(code or 0, "")
        super().__init__(f"Kie.ai error {code}{' ' + meaning if meaning else ''}: {message}")


class KieClient:
    """Thin aiohttp client. Checks the HTTP status *and* the body code of every answer."""

    def __init__(self, api_base: str, api_key: str, *, timeout: float = 30.0, session: aiohttp.ClientSession | None = None):
        self._base = api_base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout = timeout  # the longest any one call may take (a caller may ask for less)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        """One API call; counted in imagegen_kie_calls_total{endpoint,status} (body code, or "network")."""
        endpoint = path.rsplit("/", 1)[-1]
        try:
            body = await self._request(method, path, **kwargs)
        except KieError as exc:
            metrics.count("imagegen_kie_calls", endpoint=endpoint, status=exc.code or "network")
            raise
        metrics.count("imagegen_kie_calls", endpoint=endpoint, status=200)
        return body

    async def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> dict:
        session = await self._get_session()
        if timeout is not None:  # the caller's budget (an activity attempt's remaining time), never more than ours
            kwargs["timeout"] = aiohttp.ClientTimeout(total=max(min(timeout, self.timeout), 0.1))
        try:
            async with session.request(method, self._base + path, headers=self._headers, **kwargs) as resp:
                status = resp.status
                text = await resp.text(errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise KieError(None, f"network error: {type(exc).__name__}: {exc}", retryable=True) from exc
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            retryable = status >= 500 or status == 429
            raise KieError(status, f"HTTP {status} with a non-JSON body", retryable=retryable, http_status=status)
        code = body.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = status
        if status != 200 or code != 200:
            effective = code if code != 200 else status
            retryable = effective in RETRYABLE_CODES or status >= 500 or status == 429
            raise KieError(effective, _message(body) or f"HTTP {status}", retryable=retryable, http_status=status)
        return body

    async def create_task(self, request: dict[str, Any], *, timeout: float | None = None) -> str:
        """createTask with the whole body (``model``, ``input``, ``callBackUrl``): see ImageModel.kie_request.
        `timeout`: at most this long (seconds; default the client's)."""
        body = await self._call("POST", "/api/v1/jobs/createTask", json=request, timeout=timeout)
        task_id = extract_task_id(body)
        if not task_id:
            raise KieError(200, "createTask answered without a taskId", retryable=True, http_status=200)
        return task_id

    async def credit(self) -> float:
        """The account's remaining credits (``GET /api/v1/chat/credit``: ``data`` is the number)."""
        body = await self._call("GET", "/api/v1/chat/credit")
        data = body.get("data")
        if isinstance(data, dict):  # tolerate {"credits": n}
            data = data.get("credits", data.get("balance"))
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise KieError(200, "credit answered without a number", retryable=True, http_status=200)
        return float(data)

    async def record_info(self, task_id: str, *, timeout: float | None = None) -> dict:
        """The raw recordInfo answer; read it with parse_kie_state."""
        return await self._call("GET", "/api/v1/jobs/recordInfo", params={"taskId": task_id}, timeout=timeout)
