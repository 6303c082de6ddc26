"""In-process simulator of Kie.ai's Market jobs API, for tests and demos.

Models: "z-image", "seedream/4.5-text-to-image", "google/nano-banana" and the edit models
"google/nano-banana-edit" and "seedream/4.5-edit", each with its input checked as Kie's model page
documents it (MODEL_SPECS: required fields, prompt length, enums, booleans, the list of input picture
URLs and its maximum; an unknown input field is refused too, so a field sent under the wrong name is
caught). An edit model fetches every input URL at createTask (as Kie does): one it cannot fetch (a wrong
or expired URL, not a JPEG/PNG/WebP, over 10 MB) is refused with 422 naming the picture. The result of
an edit is a PNG whose tEXt comment lists the sha256 of its inputs (``inputs=<sha>,<sha>``), and the
task records the URLs and hashes it used (``task.input_urls``, ``task.input_sha256``).

File upload host (Kie's is separate from the API; here a second port, ``upload_base_url``):
POST /api/file-stream-upload (multipart ``file``, ``uploadPath``, optional ``fileName``; the same path and
name replace the earlier file, as Kie documents) answers ``data.downloadUrl``, served at
GET /files/<token>/<path> until ``upload_ttl`` (3 days) or ``expire_uploads()``.

    async with KieSimulator(api_key="k") as kie:      # binds 127.0.0.1:<random port>
        kie.base_url                                   # "http://127.0.0.1:PORT"

Endpoints: POST /api/v1/jobs/createTask, GET /api/v1/jobs/recordInfo?taskId=, GET /files/<taskId>.png,
GET /api/v1/chat/credit (the account's credits: ``data`` is the number).
Account knobs: credits (None = unlimited) is spent by every accepted createTask (credit_cost, 1.0);
with less left than that, createTask answers 402 "Credits insufficient", as Kie does.
Errors come as body ``{"code": N, "msg": ...}``; 401/429/500 also use that HTTP status.

Knobs (plain attributes; task knobs are snapshotted when a task is created):
  delay (0.3)            seconds from create to final state (waiting -> queuing -> generating -> end)
  fail (False), fail_msg ("Invalid prompt: prompt contains prohibited content")
  lose_callback (False)  never send the callback
  duplicate_callbacks (1), duplicates_concurrent (False), duplicate_spacing (0.05)
  callback_delay (0.0)   extra wait before the callback
  callback_retries (0), callback_retry_delay (0.1)   retries on non-2xx / connection error
  callback_shape ("documented" | "record_info")
  callback_before_create_response (False)  task finishes at once; its callback is POSTed and awaited
                         before the createTask response is returned
  webhook_hmac_key (None) if set, callbacks carry X-Webhook-Timestamp / X-Webhook-Signature
  file_mode ("ok" | "404" | "html" | "slow"), file_slow_seconds (15.0)  -- read at download time
  image_size ((64, 64)), public_url (None: result URLs use base_url)
  create_errors / record_info_errors: lists of faults popped front-first, one per request; each is an
                         int body code (401, 402, 422, 429, 433, 455, 500, 501, 505) or (http_status, body_dict)
Per-prompt overrides: "[fail]" fails the task, "[nocallback]" loses the callback, "[slow]" uses delay*10.

  upload_errors: faults for uploads, as create_errors (None: that upload goes through; "lost_answer": the
                         file is stored, then 502 is answered); upload_delays: seconds each next upload waits
                         before it is stored (popped front-first; a worker can be killed meanwhile)
Recorded state: tasks (id -> KieTask), callbacks (list[CallbackAttempt]), record_info_calls (id -> count),
downloads (id -> count), create_calls (int), uploads (filePath -> SimUpload, the files kept),
upload_calls (list[UploadCall], every upload request), input_fetches ((url, status) per fetched input). Helpers: wait_for_callbacks(n, timeout), wait_done(task_id),
make_callback_body(task_id), image_bytes(task_id).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from .images import image_type, make_png

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16")


@dataclass(frozen=True)
class ModelSpec:
    prompt_max: int
    ratio_field: str
    enums: dict[str, tuple[str, ...]]
    required: tuple[str, ...] = ("prompt",)
    booleans: tuple[str, ...] = ()
    defaults: dict[str, str] | None = None
    images: tuple[str, int] | None = None  # (field, max count) of an edit model's input picture URLs


NANO_SIZES = ("1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto")
SEEDREAM_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "2:3", "3:2", "21:9")
INPUT_MAX_BYTES = 10 * 1024 * 1024  # per input picture, both edit models
INPUT_TYPES = ("image/jpeg", "image/png", "image/webp")


# As Kie documents each model's createTask input (docs.kie.ai, the model pages).
MODEL_SPECS = {
    "z-image": ModelSpec(prompt_max=1000, ratio_field="aspect_ratio", enums={"aspect_ratio": ASPECT_RATIOS},
                         booleans=("nsfw_checker",), defaults={"aspect_ratio": "1:1"}),
    "seedream/4.5-text-to-image": ModelSpec(
        prompt_max=3000, ratio_field="aspect_ratio",
        enums={"aspect_ratio": ("1:1", "4:3", "3:4", "16:9", "9:16", "2:3", "3:2", "21:9"),
               "quality": ("basic", "high")},
        required=("prompt", "aspect_ratio", "quality"), booleans=("nsfw_checker",)),
    "google/nano-banana": ModelSpec(
        prompt_max=5000, ratio_field="image_size",
        enums={"image_size": NANO_SIZES, "output_format": ("png", "jpeg")},
        defaults={"image_size": "1:1", "output_format": "png"}),
    "google/nano-banana-edit": ModelSpec(
        prompt_max=5000, ratio_field="image_size",
        enums={"image_size": NANO_SIZES, "output_format": ("png", "jpeg")},
        required=("prompt", "image_urls"), defaults={"image_size": "1:1", "output_format": "png"},
        images=("image_urls", 10)),
    "seedream/4.5-edit": ModelSpec(
        prompt_max=3000, ratio_field="aspect_ratio",
        enums={"aspect_ratio": SEEDREAM_RATIOS, "quality": ("basic", "high")},
        required=("prompt", "image_urls", "aspect_ratio", "quality"), booleans=("nsfw_checker",),
        images=("image_urls", 14)),
}


def input_problem(model: Any, inp: Any) -> str | None:
    """Why Kie would refuse this createTask (model, input); None when it is valid."""
    spec = MODEL_SPECS.get(model) if isinstance(model, str) else None
    if spec is None:
        return "The model name you specified is not supported"
    if not isinstance(inp, dict):
        return "input is required"
    for name in spec.required:
        if inp.get(name) in (None, ""):
            return f"input.{name} is required"
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "input.prompt is required"
    if len(prompt) > spec.prompt_max:
        return f"input.prompt exceeds the maximum length of {spec.prompt_max} characters"
    for name, allowed in spec.enums.items():
        if name in inp and inp[name] not in allowed:
            return f"input.{name} must be one of {', '.join(allowed)}"
    for name in spec.booleans:
        if name in inp and not isinstance(inp[name], bool):
            return f"input.{name} must be a boolean"
    if spec.images is not None:
        name, most = spec.images
        urls = inp.get(name)
        if not isinstance(urls, list) or not urls:
            return f"input.{name} must be a non-empty list of image URLs"
        if len(urls) > most:
            return f"input.{name} accepts at most {most} images"
        if not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
            return f"input.{name} must contain http(s) URLs"
    known = {"prompt", *spec.enums, *spec.booleans, *([spec.images[0]] if spec.images else [])}
    unknown = sorted(set(inp) - known)
    if unknown:
        return f"input.{unknown[0]} is not a parameter of this model"
    return None
ERROR_MSGS = {
    401: "You do not have access permissions", 402: "Credits insufficient", 404: "Not found",
    422: "Validation error", 429: "Rate limited: too many requests, please try again later",
    433: "Sub-key usage exceeds limit", 455: "Service unavailable: system maintenance",
    500: "Server error, please try again later", 501: "Generation Failed", 505: "Feature disabled",
}
HTTP_STATUS_FOR_CODE = {401: 401, 429: 429, 500: 500}


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


@dataclass
class KieTask:
    task_id: str
    prompt: str
    aspect_ratio: str
    callback_url: str | None
    body: dict[str, Any]          # original request JSON
    created: float                # time.time()
    delay: float
    fail: bool
    fail_msg: str
    lose_callback: bool
    duplicate_callbacks: int
    duplicates_concurrent: bool
    duplicate_spacing: float
    callback_delay: float
    callback_retries: int
    callback_shape: str
    seed: int
    state: str = "waiting"
    model: str = "z-image"
    updated: float = 0.0
    completed: float | None = None
    input_urls: list[str] | None = None  # an edit: the picture URLs it used, and their sha256
    input_sha256: list[str] | None = None

    @property
    def done(self) -> bool:
        return self.state in ("success", "fail")


@dataclass
class SimUpload:
    file_path: str                # uploadPath/fileName
    data: bytes
    mime: str
    url: str                      # the downloadUrl answered
    uploaded: float               # time.time()
    writes: int = 1               # how many uploads stored this path (a repeat replaces the file)
    downloads: int = 0


@dataclass
class UploadCall:
    file_path: str
    size: int
    time: float
    status: int = 0


@dataclass
class CallbackAttempt:
    task_id: str
    url: str
    body: dict[str, Any]
    time: float
    attempt: int                  # 0 = first try, 1.. = retries
    status: int | None = None     # HTTP status, or None when the request raised
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class KieSimulator:
    def __init__(self, api_key: str = "test-kie-key", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key, self.host, self.port = api_key, host, port
        # knobs
        self.delay = 0.3
        self.fail = False
        self.fail_msg = "Invalid prompt: prompt contains prohibited content"
        self.lose_callback = False
        self.duplicate_callbacks = 1
        self.duplicates_concurrent = False
        self.duplicate_spacing = 0.05
        self.callback_delay = 0.0
        self.callback_retries = 0
        self.callback_retry_delay = 0.1
        self.callback_shape = "documented"
        self.callback_before_create_response = False
        self.webhook_hmac_key: str | None = None
        self.file_mode = "ok"
        self.file_slow_seconds = 15.0
        self.image_size = (64, 64)
        self.public_url: str | None = None
        self.create_errors: list[Any] = []
        self.credits: float | None = None  # the account's balance; None: never runs out
        self.credit_cost = 1.0
        self.credit_calls = 0
        self.record_info_errors: list[Any] = []
        self.upload_errors: list[Any] = []
        self.upload_delays: list[float] = []
        self.upload_ttl = 3 * 24 * 3600.0
        self.upload_port = 0
        self.uploads: dict[str, SimUpload] = {}
        self.upload_calls: list[UploadCall] = []
        self.input_fetches: list[tuple[str, Any]] = []
        self._upload_token = secrets.token_hex(4)
        self._upload_runner: web.AppRunner | None = None
        # recorded state
        self.tasks: dict[str, KieTask] = {}
        self.callbacks: list[CallbackAttempt] = []
        self.record_info_calls: dict[str, int] = {}
        self.downloads: dict[str, int] = {}
        self.create_calls = 0
        self._counter = 0
        self._bg: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def upload_base_url(self) -> str:
        """Kie's file upload host (KIE_UPLOAD_BASE): its own port, as Kie's is its own host."""
        return f"http://{self.host}:{self.upload_port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/jobs/createTask", self._create_task)
        app.router.add_get("/api/v1/jobs/recordInfo", self._record_info)
        app.router.add_get("/api/v1/chat/credit", self._credit)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        uploads = web.Application(client_max_size=64 * 1024 * 1024)
        uploads.router.add_post("/api/file-stream-upload", self._upload)
        uploads.router.add_get("/files/{token}/{path:.*}", self._uploaded_file)
        self._upload_runner = web.AppRunner(uploads, access_log=None, shutdown_timeout=0.5)
        await self._upload_runner.setup()
        await web.TCPSite(self._upload_runner, self.host, self.upload_port).start()
        self.upload_port = self._upload_runner.addresses[0][1]
        self._session = ClientSession(timeout=ClientTimeout(total=15))

    async def stop(self) -> None:
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()
        if self._upload_runner:
            await self._upload_runner.cleanup()

    async def __aenter__(self) -> KieSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # ------------------------------------------------------------------ helpers
    def _error(self, code: int, msg: str | None = None, http: int | None = None) -> web.Response:
        status = http if http is not None else HTTP_STATUS_FOR_CODE.get(code, 200)
        return web.json_response({"code": code, "msg": msg or ERROR_MSGS.get(code, "error"), "data": None},
                                 status=status)

    def _fault(self, queue: list[Any]) -> web.Response | None:
        if not queue:
            return None
        f = queue.pop(0)
        if f is None:  # this request goes through
            return None
        if isinstance(f, int):
            return self._error(f)
        status, body = f
        return web.json_response(body, status=status)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def _result_url(self, task_id: str) -> str:
        return f"{(self.public_url or self.base_url).rstrip('/')}/files/{task_id}.png"

    def result_json(self, task: KieTask) -> str:
        if task.state != "success":
            return ""
        return json.dumps({"resultUrls": [self._result_url(task.task_id)]})

    def image_bytes(self, task_id: str) -> bytes:
        """The exact PNG bytes served for this task (an edit's carry its inputs' sha256 in a tEXt chunk)."""
        task = self.tasks[task_id]
        text = f"inputs={','.join(task.input_sha256)}" if task.input_sha256 else None
        return make_png(*self.image_size, seed=task.seed, text=text)

    def expire_uploads(self) -> None:
        """Every file uploaded so far is past Kie's 3 days: its URL answers 404 from now on."""
        for up in self.uploads.values():
            up.uploaded -= self.upload_ttl + 1

    def upload_writes(self) -> dict[str, int]:
        """filePath -> how many uploads stored it (more than 1: an upload repeated under its name)."""
        return {path: up.writes for path, up in self.uploads.items()}

    def record_info_data(self, task_id: str) -> dict[str, Any]:
        t = self.tasks[task_id]
        failed = t.state == "fail"
        return {
            "taskId": t.task_id, "model": t.model, "state": t.state,
            "param": json.dumps(t.body), "resultJson": self.result_json(t),
            "failCode": "422" if failed else "", "failMsg": t.fail_msg if failed else "",
            "costTime": int((t.completed - t.created) * 1000) if t.completed else 0,
            "completeTime": _ms(t.completed), "createTime": _ms(t.created), "updateTime": _ms(t.updated),
        }

    def make_callback_body(self, task_id: str) -> dict[str, Any]:
        """The body Kie would POST to callBackUrl for this (finished) task, per its callback_shape."""
        t = self.tasks[task_id]
        if t.callback_shape == "record_info":
            return {"code": 200, "msg": "success", "data": self.record_info_data(task_id)}
        ok = t.state == "success"
        return {
            "code": 200 if ok else 501, "msg": "success" if ok else "Generation Failed", "taskId": task_id,
            "data": {"task_id": task_id, "callbackType": "task_completed", "state": t.state,
                     "resultJson": self.result_json(t), "failCode": "" if ok else "422",
                     "failMsg": "" if ok else t.fail_msg},
        }

    def sign(self, task_id: str, timestamp: int | None = None) -> dict[str, str]:
        """Webhook signature headers for task_id (requires webhook_hmac_key)."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        mac = hmac.new(self.webhook_hmac_key.encode(), f"{task_id}.{ts}".encode(), hashlib.sha256)  # type: ignore[union-attr]
        return {"X-Webhook-Timestamp": ts, "X-Webhook-Signature": base64.b64encode(mac.digest()).decode()}

    async def wait_for_callbacks(self, n: int, timeout: float = 5.0) -> list[CallbackAttempt]:
        """Wait until at least n callback attempts have completed (answered or errored); returns them."""
        deadline = time.monotonic() + timeout
        while len(self.callbacks) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} callbacks, got {len(self.callbacks)}: {self.callbacks}")
            await asyncio.sleep(0.01)
        return list(self.callbacks)

    async def wait_done(self, task_id: str, timeout: float = 5.0) -> KieTask:
        deadline = time.monotonic() + timeout
        while not (task_id in self.tasks and self.tasks[task_id].done):
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} not finished: {self.tasks.get(task_id)}")
            await asyncio.sleep(0.01)
        return self.tasks[task_id]

    # ------------------------------------------------------------------ handlers
    async def _credit(self, request: web.Request) -> web.Response:
        self.credit_calls += 1
        if not self._authorized(request):
            return self._error(401)
        left = 10**6 if self.credits is None else self.credits
        return web.json_response({"code": 200, "msg": "success", "data": int(left) if float(left).is_integer() else left})

    async def _create_task(self, request: web.Request) -> web.Response:
        self.create_calls += 1
        if not self._authorized(request):
            return self._error(401)
        if (fault := self._fault(self.create_errors)) is not None:
            return fault
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(422, "Invalid JSON body")
        if not isinstance(body, dict):
            return self._error(422, "Invalid JSON body")
        inp = body.get("input")
        if (problem := input_problem(body.get("model"), inp)) is not None:
            return self._error(422, problem)
        spec = MODEL_SPECS[body["model"]]
        inputs: list[tuple[str, str]] = []
        if spec.images is not None:
            for i, url in enumerate(inp[spec.images[0]]):
                data, problem = await self._fetch_input(url)
                if problem:
                    return self._error(422, f"{spec.images[0]}[{i}]: {problem}")
                inputs.append((url, hashlib.sha256(data).hexdigest()))
        prompt = inp["prompt"]
        ratio = inp.get(spec.ratio_field) or (spec.defaults or {}).get(spec.ratio_field, "")
        cb = body.get("callBackUrl")
        if cb is not None and not (isinstance(cb, str) and cb.startswith(("http://", "https://"))):
            return self._error(422, "callBackUrl must be a valid http(s) URL")
        if self.credits is not None:
            if self.credits < self.credit_cost:
                return self._error(402)
            self.credits -= self.credit_cost

        self._counter += 1
        now = time.time()
        slug = body["model"].replace("/", "-")
        task_id = f"task_{slug}_{int(now * 1000)}{self._counter:03d}_{secrets.token_hex(3)}"
        task = KieTask(
            task_id=task_id, prompt=prompt, aspect_ratio=ratio, callback_url=cb, body=body, created=now,
            delay=self.delay * (10 if "[slow]" in prompt else 1), fail=self.fail or "[fail]" in prompt,
            fail_msg=self.fail_msg, lose_callback=self.lose_callback or "[nocallback]" in prompt,
            duplicate_callbacks=self.duplicate_callbacks, duplicates_concurrent=self.duplicates_concurrent,
            duplicate_spacing=self.duplicate_spacing, callback_delay=self.callback_delay,
            callback_retries=self.callback_retries, callback_shape=self.callback_shape,
            seed=self._counter, updated=now, model=body["model"],
            input_urls=[u for u, _ in inputs] or None, input_sha256=[h for _, h in inputs] or None,
        )
        self.tasks[task_id] = task
        if self.callback_before_create_response:
            self._finish(task)
            await self._deliver_callbacks(task)
        else:
            self._spawn(self._run_task(task))
        return web.json_response({"code": 200, "msg": "success", "data": {"taskId": task_id}})

    def _set_state(self, task: KieTask, state: str) -> None:
        task.state, task.updated = state, time.time()

    def _finish(self, task: KieTask) -> None:
        self._set_state(task, "fail" if task.fail else "success")
        task.completed = task.updated

    async def _run_task(self, task: KieTask) -> None:
        for state, frac in (("queuing", 0.1), ("generating", 0.2)):
            await asyncio.sleep(task.delay * frac)
            self._set_state(task, state)
        await asyncio.sleep(task.delay * 0.7)
        self._finish(task)
        await self._deliver_callbacks(task)

    async def _deliver_callbacks(self, task: KieTask) -> None:
        if task.lose_callback or not task.callback_url:
            return
        if task.callback_delay:
            await asyncio.sleep(task.callback_delay)
        body = self.make_callback_body(task.task_id)
        n = max(task.duplicate_callbacks, 0)
        if task.duplicates_concurrent:
            await asyncio.gather(*(self._post_callback(task, body) for _ in range(n)))
            return
        for i in range(n):
            if i:
                await asyncio.sleep(task.duplicate_spacing)
            await self._post_callback(task, body)

    async def _post_callback(self, task: KieTask, body: dict[str, Any]) -> None:
        assert self._session is not None and task.callback_url
        headers = self.sign(task.task_id) if self.webhook_hmac_key else {}
        for attempt in range(task.callback_retries + 1):
            rec = CallbackAttempt(task.task_id, task.callback_url, body, time.time(), attempt)
            try:
                async with self._session.post(task.callback_url, json=body, headers=headers) as resp:
                    rec.status = resp.status
                    await resp.read()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - target down, timeout, ... must not crash the sim
                rec.error = f"{type(e).__name__}: {e}"
            self.callbacks.append(rec)  # appended once the attempt has completed (status/error known)
            if rec.ok:
                return
            await asyncio.sleep(self.callback_retry_delay)

    async def _fetch_input(self, url: str) -> tuple[bytes, str]:
        """Fetch one input picture as Kie does: (bytes, "") or (b"", why it cannot be used)."""
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=ClientTimeout(total=10)) as resp:
                self.input_fetches.append((url, resp.status))
                if resp.status != 200:
                    return b"", f"failed to download the image (HTTP {resp.status})"
                data = b""
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > INPUT_MAX_BYTES:
                        break
        except Exception as e:  # noqa: BLE001 - unreachable host, bad URL, timeout
            self.input_fetches.append((url, f"{type(e).__name__}"))
            return b"", f"failed to download the image ({type(e).__name__})"
        if len(data) > INPUT_MAX_BYTES:
            return b"", "the image exceeds 10MB"
        if image_type(data) not in INPUT_TYPES:
            return b"", "unsupported image format (jpeg, png, webp)"
        return data, ""

    # ------------------------------------------------------------------ the upload host
    async def _upload(self, request: web.Request) -> web.Response:
        call = UploadCall("", 0, time.time())
        self.upload_calls.append(call)
        if not self._authorized(request):
            call.status = 401
            return web.json_response({"success": False, "code": 401, "msg": ERROR_MSGS[401]}, status=401)
        lose_answer = bool(self.upload_errors) and self.upload_errors[0] == "lost_answer"
        if lose_answer:
            self.upload_errors.pop(0)
        elif (fault := self._fault(self.upload_errors)) is not None:
            call.status = fault.status
            return fault
        try:
            form = await request.post()
        except ValueError:
            call.status = 400
            return web.json_response({"success": False, "code": 400, "msg": "multipart body required"}, status=400)
        file, path = form.get("file"), str(form.get("uploadPath") or "").strip("/")
        if not isinstance(file, web.FileField) or not path:
            call.status = 400
            return web.json_response({"success": False, "code": 400, "msg": "file and uploadPath are required"},
                                     status=400)
        data = file.file.read()
        name = str(form.get("fileName") or "") or f"{secrets.token_hex(8)}-{file.filename or 'file'}"
        file_path = f"{path}/{name}"
        call.file_path, call.size = file_path, len(data)
        if self.upload_delays:
            await asyncio.sleep(self.upload_delays.pop(0))
        mime = image_type(data) or file.content_type or "application/octet-stream"
        url = f"{self.upload_base_url}/files/{self._upload_token}/{file_path}"
        now = time.time()
        earlier = self.uploads.get(file_path)
        self.uploads[file_path] = SimUpload(file_path, data, mime, url, now, writes=(earlier.writes + 1) if earlier else 1)
        if lose_answer:  # stored, but the client never learns it (a proxy's 502, a crash of the caller)
            call.status = 502
            return web.Response(status=502, text="Bad Gateway")
        call.status = 200
        return web.json_response({"success": True, "code": 200, "msg": "File uploaded successfully", "data": {
            "fileName": name, "filePath": file_path, "downloadUrl": url, "fileSize": len(data), "mimeType": mime,
            "uploadedAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))}})

    async def _uploaded_file(self, request: web.Request) -> web.Response:
        up = self.uploads.get(request.match_info["path"])
        if (request.match_info["token"] != self._upload_token or up is None
                or time.time() - up.uploaded > self.upload_ttl):
            return web.Response(status=404, text="Not Found")
        up.downloads += 1
        return web.Response(body=up.data, content_type=up.mime)

    async def _record_info(self, request: web.Request) -> web.Response:
        task_id = request.query.get("taskId", "")
        self.record_info_calls[task_id] = self.record_info_calls.get(task_id, 0) + 1
        if not self._authorized(request):
            return self._error(401)
        if (fault := self._fault(self.record_info_errors)) is not None:
            return fault
        if task_id not in self.tasks:
            return self._error(422, "recordInfo is null")
        return web.json_response({"code": 200, "msg": "success", "data": self.record_info_data(task_id)})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["name"].removesuffix(".png")
        self.downloads[task_id] = self.downloads.get(task_id, 0) + 1
        task = self.tasks.get(task_id)
        if task is None or task.state != "success" or self.file_mode == "404":
            return web.Response(status=404, text="<html><body>404 Not Found</body></html>", content_type="text/html")
        if self.file_mode == "html":
            return web.Response(text="<html><body>Access denied</body></html>", content_type="text/html")
        if self.file_mode == "slow":
            await asyncio.sleep(self.file_slow_seconds)
        return web.Response(body=self.image_bytes(task_id), content_type="image/png")


async def _main() -> None:
    p = argparse.ArgumentParser(description="Kie.ai jobs API simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default="test-kie-key")
    p.add_argument("--delay", type=float, default=3.0)
    args = p.parse_args()
    sim = KieSimulator(api_key=args.api_key, host=args.host, port=args.port)
    sim.delay = args.delay
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        print(f"listening on {sim.base_url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_main())
