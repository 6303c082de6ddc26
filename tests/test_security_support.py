"""(No tests here.) Helpers shared by the tests/test_security_*.py files: a recording stand-in for the Temporal client,
an in-process callback server, and request builders."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from temporalio.service import RPCError, RPCStatusCode

from imagegen.bot.app import start_http
from imagegen.bot.callback_api import STATS_KEY, build_http_app
from imagegen.callbacks import CALLBACK_PATH, callback_token
from imagegen.contracts import workflow_id_for
from tests.support.services import free_port

SECRET = "unit-callback-secret"
HMAC_KEY = "unit-webhook-hmac-key"


@dataclass
class FakeTemporal:
    """Records every signal. Jobs whose workflow id is in `missing` answer NOT_FOUND like Temporal."""

    signals: list[tuple[str, str, Any]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)

    def get_workflow_handle(self, workflow_id: str) -> "FakeHandle":
        return FakeHandle(self, workflow_id)


@dataclass
class FakeHandle:
    client: FakeTemporal
    id: str

    async def signal(self, name: str, arg: Any, **_: Any) -> None:  # rpc_timeout etc.
        if self.id in self.client.missing:
            raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
        self.client.signals.append((self.id, name, arg))


def sign(key: str, task_id: str, ts: int | None = None) -> dict[str, str]:
    ts_s = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(key.encode(), f"{task_id}.{ts_s}".encode(), hashlib.sha256).digest()
    return {"X-Webhook-Timestamp": ts_s, "X-Webhook-Signature": base64.b64encode(mac).decode()}


def callback_path(job_id: str, secret: str = SECRET, token: str | None = None,
                  workflow_id: str | None = "default") -> str:
    """The path Kie is given (imagegen.callbacks.callback_url): by default naming the Z-Image
    workflow of the job; workflow_id=None leaves `wf` out, as URLs made before issue 15 did."""
    tok = callback_token(secret, job_id) if token is None else token
    fields = {"job": job_id}
    if workflow_id is not None:
        fields["wf"] = workflow_id_for(job_id, "zimage") if workflow_id == "default" else workflow_id
    fields["token"] = tok
    return f"{CALLBACK_PATH}?{urlencode(fields)}"


def documented_body(task_id: str, url: str = "https://attacker.example/evil.png") -> dict[str, Any]:
    return {"code": 200, "msg": "success", "taskId": task_id,
            "data": {"task_id": task_id, "callbackType": "task_completed", "state": "success",
                     "resultJson": '{"resultUrls": ["%s"]}' % url}}


class CallbackServer:
    """build_http_app served on a free loopback port, with a recording FakeTemporal (or a real client)."""

    def __init__(self, temporal: Any = None, *, secret: str = SECRET, hmac_key: str | None = None,
                 port: int | None = None, **kw: Any):
        self.temporal = temporal if temporal is not None else FakeTemporal()
        self.app = build_http_app(self.temporal, secret, webhook_hmac_key=hmac_key, **kw)
        self.port = port or free_port()
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> dict[str, Any]:
        return self.app[STATS_KEY]

    async def __aenter__(self) -> "CallbackServer":
        self.runner = await start_http(self.app, "127.0.0.1", self.port)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.session:
            await self.session.close()
        if self.runner:
            await self.runner.cleanup()

    async def post(self, path: str, *, data: bytes | None = None, json_body: Any = None,
                   headers: dict[str, str] | None = None, content_type: str | None = "application/json"
                   ) -> tuple[int, Any]:
        assert self.session is not None
        hdrs = dict(headers or {})
        if json_body is not None:
            import json as _json
            data = _json.dumps(json_body).encode()
        if content_type is not None:
            hdrs.setdefault("Content-Type", content_type)
        async with self.session.post(self.base + path, data=data if data is not None else b"", headers=hdrs) as resp:
            text = await resp.text()
            try:
                import json as _json
                body = _json.loads(text)
            except ValueError:
                body = text
            return resp.status, body
