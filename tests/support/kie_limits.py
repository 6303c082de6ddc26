"""Kie's documented rate limits, as a knob on the Kie simulator (off by default).

    kie = LimitedKieSimulator(api_key="k")
    kie.enforce_limits = True      # createTask 20 per 10 s per account, recordInfo 10 per 1 s per key

Over a limit the request is refused the way Kie documents it: HTTP 429 with body
``{"code": 429, "msg": "Rate limited: ...", "data": null}``, and it is not queued (it does not count
against the window). Whether enforced or not, the accepted calls' times are recorded, so a test can
check the busiest window (``max_in_window``) and count the refusals (``refused``).
"""

from __future__ import annotations

import bisect
import time
from collections import deque

from aiohttp import web

from .kie_sim import KieSimulator

CREATE_LIMIT = (20, 10.0)       # Kie: at most 20 new tasks per 10 s per account
RECORD_INFO_LIMIT = (10, 1.0)   # Kie: at most 10 recordInfo requests per second per key


class SlidingWindow:
    """At most `count` accepted events in any `window` seconds."""

    def __init__(self, count: int, window: float) -> None:
        self.count, self.window = count, window
        self._recent: deque[float] = deque()

    def admit(self, now: float) -> bool:
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        if len(self._recent) >= self.count:
            return False
        self._recent.append(now)
        return True


def max_in_window(times: list[float], window: float) -> int:
    """The largest number of `times` inside any half-open interval of `window` seconds."""
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + window) - i for i, t in enumerate(ts)), default=0)


class LimitedKieSimulator(KieSimulator):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.enforce_limits = False
        self.create_limit = CREATE_LIMIT
        self.record_info_limit = RECORD_INFO_LIMIT
        self.create_times: list[float] = []        # accepted createTask requests (time.monotonic())
        self.record_info_times: list[float] = []   # accepted recordInfo requests
        self.refused = {"createTask": 0, "recordInfo": 0}
        self._windows: dict[str, SlidingWindow] = {}

    def _admit(self, endpoint: str, limit: tuple[int, float], times: list[float]) -> bool:
        now = time.monotonic()
        if self.enforce_limits:
            window = self._windows.setdefault(endpoint, SlidingWindow(*limit))
            if not window.admit(now):
                self.refused[endpoint] += 1
                return False
        times.append(now)
        return True

    def _rate_limited(self) -> web.Response:
        return self._error(429)  # HTTP 429, {"code": 429, "msg": "Rate limited: ...", "data": null}

    async def _create_task(self, request: web.Request) -> web.Response:
        if self._authorized(request) and not self._admit("createTask", self.create_limit, self.create_times):
            return self._rate_limited()
        return await super()._create_task(request)

    async def _record_info(self, request: web.Request) -> web.Response:
        if self._authorized(request) and not self._admit("recordInfo", self.record_info_limit, self.record_info_times):
            return self._rate_limited()
        return await super()._record_info(request)
