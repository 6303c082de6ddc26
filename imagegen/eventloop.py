"""The event loop worker.py and bot.py run on: uvloop (libuv) unless ``EVENT_LOOP=asyncio``.

Both processes are I/O loops (Temporal's core, aiohttp to Kie and Telegram, asyncpg, the callback
endpoint); uvloop runs the same coroutines with less CPU per socket operation (docs/performance.md,
issue 18). ``EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or on a platform without
uvloop's wheel: a missing uvloop falls back to it, logged by the startup line's ``loop=``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory for "uvloop" (None, asyncio's default loop, when it is not installed);
    None for "asyncio". `choice` as EVENT_LOOP spells it (any case)."""
    choice = choice.strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise ValueError(f"event loop must be 'uvloop' or 'asyncio', not {choice!r}")
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = "uvloop") -> T:
    """asyncio.run(main) on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def name() -> str:
    """The running loop's kind ("uvloop" or "asyncio"), for a process's startup log line."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
