"""Simulator subclasses with the few extra knobs the fault matrix needs (the shared simulators in
tests/support stay untouched).

FaultKie: records the time of every recordInfo call per task (``record_info_times``);
  record_info_latency (0)  every recordInfo answer is delayed (the state is read after the delay).
  create_latency (0)       createTask creates the task at once, then answers this many seconds later
                           (a slow Kie: the task exists, paid, before the client has its id).
  The holds pin one kind of call in flight (a process is killed meanwhile) until ``release`` is set;
  a call that comes once it is set is not held. ``held``: per kind, the calls held now.
  hold_create (None)       a marker: createTask of a prompt containing it is held *before* the task
                           exists, then answered 502 (no task: the retry creates the one task).
  hold_info (None)         a marker: recordInfo of a task whose prompt contains it is held, then answered.
  hold_uploads (False)     every file upload is held *before* it is stored, then answered 502.
FaultTelegram:
  url_fetch_fails (False)  Telegram cannot fetch any photo URL ("failed to get HTTP URL content"),
                           so delivery has to fall back to uploading the bytes (level 2).
  delivery_mode ("send")   the cell's DELIVERY_MODE (set by the fixtures; the tally records it).
  The photo knobs below act on the call that delivers the picture: sendPhoto, and editMessageMedia
  (edit mode).
  hold_photos (None)       "before": every sendPhoto is held *before* Telegram accepts it; once
                           ``release`` is set it fails (as if the connection had dropped).
                           "after": the photo is accepted (recorded in ``photos``) and then the
                           *answer* is held until ``release`` is set.
  held                     how many sendPhoto calls are currently held.
  hold_chats (None)        a set of chat ids: hold_photos acts on these chats only.
  photo_latency (None)     (low, high): every sendPhoto takes uniform(low, high) s before Telegram
                           accepts it; ``sending`` counts the calls in progress.
  hold_errors_for (set())  chat ids: an editMessageText there that shows a failure ("❌…", a final
                           status) is held until ``release`` is set, then answered 502 (not applied);
                           ``held_texts`` counts them. One that comes once ``release`` is set is not held.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from aiohttp import web

from tests.support.kie_sim import KieSimulator
from tests.support.telegram_sim import URL_FAILED, TelegramSimulator, TgError


class FaultKie(KieSimulator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record_info_times: dict[str, list[float]] = {}
        # per task: (asked at, answered at, state answered), wall clock as CallbackAttempt.time
        self.record_info_spans: dict[str, list[tuple[float, float, str]]] = {}
        self.record_info_latency = 0.0  # seconds before recordInfo reads the task's state and answers
        self.create_latency = 0.0
        self.hold_create: str | None = None
        self.hold_info: str | None = None
        self.hold_uploads = False
        self.release = asyncio.Event()
        self.held: dict[str, int] = {"createTask": 0, "recordInfo": 0, "upload": 0}

    async def _held(self, kind: str) -> bool:
        """Hold this call until ``release`` (True); False at once when it is already set."""
        if self.release.is_set():
            return False
        self.held[kind] += 1
        try:
            await self.release.wait()
        finally:
            self.held[kind] -= 1
        return True

    async def _create_task(self, request: web.Request) -> web.Response:
        if self.hold_create:
            try:
                prompt = str(((await request.json()).get("input") or {}).get("prompt", ""))
            except (ValueError, AttributeError):
                prompt = ""
            if self.hold_create in prompt and await self._held("createTask"):
                return web.Response(status=502, text="Bad Gateway")
        response = await super()._create_task(request)
        if self.create_latency:
            await asyncio.sleep(self.create_latency)
        return response

    async def _record_info(self, request: web.Request) -> web.Response:
        task_id = request.query.get("taskId", "")
        self.record_info_times.setdefault(task_id, []).append(time.monotonic())
        asked = time.time()
        if self.record_info_latency:
            await asyncio.sleep(self.record_info_latency)
        task = self.tasks.get(task_id)
        if self.hold_info and task is not None and self.hold_info in task.prompt:
            await self._held("recordInfo")
        response = await super()._record_info(request)
        task = self.tasks.get(task_id)
        self.record_info_spans.setdefault(task_id, []).append((asked, time.time(), task.state if task else ""))
        return response

    def callback_during_success_poll(self, task_id: str) -> bool:
        """True when a callback for this task was posted while the first recordInfo that answered success
        was running (whatever runs the poll: an activity or a local activity)."""
        polls = [(a, b) for a, b, state in self.record_info_spans.get(task_id, []) if state == "success"]
        return any(a <= cb.time <= b for a, b in polls[:1] for cb in self.callbacks if cb.task_id == task_id)

    async def _upload(self, request: web.Request) -> web.Response:
        if self.hold_uploads and await self._held("upload"):
            return web.Response(status=502, text="Bad Gateway")
        return await super()._upload(request)


class FaultTelegram(TelegramSimulator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url_fetch_fails = False
        self.hold_photos: str | None = None
        self.held = 0
        self.release = asyncio.Event()
        self.hold_chats: set[int] | None = None
        self.hold_errors_for: set[int] = set()
        self.held_texts = 0
        self.photo_latency: tuple[float, float] | None = None
        self.sending = 0
        self.delivery_mode = "send"
        # (method, error_code, retry_after): queued as that method's next answer once a photo is accepted
        self.after_photo_fault: tuple[str, int, int | None] | None = None

    async def _fetch(self, url: str, any_type: bool = False) -> bytes:
        if self.url_fetch_fails:
            self.url_fetches.append((url, "refused by the fault knob"))
            raise TgError(400, URL_FAILED)
        return await super()._fetch(url, any_type)

    async def _m_sendPhoto(self, p: dict, f: dict) -> Any:
        return await self._photo_call(super()._m_sendPhoto, p, f)

    async def _m_editMessageText(self, p: dict, f: dict) -> Any:
        if (self._chat_id(p) in self.hold_errors_for and str(p.get("text", "")).startswith("❌")
                and not self.release.is_set()):
            self.held_texts += 1
            try:
                await self.release.wait()
            finally:
                self.held_texts -= 1
            raise TgError(502, "Bad Gateway: the client went away before the edit was applied")
        return await super()._m_editMessageText(p, f)

    async def _m_editMessageMedia(self, p: dict, f: dict) -> Any:
        return await self._photo_call(super()._m_editMessageMedia, p, f)

    async def _photo_call(self, deliver: Any, p: dict, f: dict) -> Any:
        self.sending += 1
        try:
            return await self._held_photo(deliver, p, f)
        finally:
            self.sending -= 1

    async def _held_photo(self, deliver: Any, p: dict, f: dict) -> Any:
        if self.photo_latency:
            await asyncio.sleep(random.uniform(*self.photo_latency))
        mode = self.hold_photos if self.hold_chats is None or self._chat_id(p) in self.hold_chats else None
        if mode == "before":
            self.held += 1
            try:
                await self.release.wait()
            finally:
                self.held -= 1
            raise TgError(502, "Bad Gateway: the client went away before the photo was accepted")
        result = await deliver(p, f)
        if self.after_photo_fault:
            method, code, retry_after = self.after_photo_fault
            self.fail_next(method, code, "Too Many Requests: retry after %s" % retry_after if code == 429
                           else "injected after the photo", retry_after=retry_after)
        if mode == "after":
            self.held += 1
            try:
                await self.release.wait()
            finally:
                self.held -= 1
        return result
