"""Simulator subclasses with the few extra knobs the fault matrix needs (the shared simulators in
tests/support stay untouched).

FaultKie: records the time of every recordInfo call per task (``record_info_times``);
  record_info_latency (0)  every recordInfo answer is delayed (the state is read after the delay).
  create_latency (0)       createTask creates the task at once, then answers this many seconds later
                           (a slow Kie: the task exists, paid, before the client has its id).
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
  photo_latency (None)     (low, high): every sendPhoto takes uniform(low, high) s before Telegram
                           accepts it; ``sending`` counts the calls in progress.
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

    async def _create_task(self, request: web.Request) -> web.Response:
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
        response = await super()._record_info(request)
        task = self.tasks.get(task_id)
        self.record_info_spans.setdefault(task_id, []).append((asked, time.time(), task.state if task else ""))
        return response

    def callback_during_success_poll(self, task_id: str) -> bool:
        """True when a callback for this task was posted while the first recordInfo that answered success
        was running (whatever runs the poll: an activity or a local activity)."""
        polls = [(a, b) for a, b, state in self.record_info_spans.get(task_id, []) if state == "success"]
        return any(a <= cb.time <= b for a, b in polls[:1] for cb in self.callbacks if cb.task_id == task_id)


class FaultTelegram(TelegramSimulator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url_fetch_fails = False
        self.hold_photos: str | None = None
        self.held = 0
        self.release = asyncio.Event()
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
        mode = self.hold_photos
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
