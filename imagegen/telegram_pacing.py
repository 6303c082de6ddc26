"""Telegram's send limit, exact across worker processes: every send or edit takes a Postgres slot.

Telegram lets a bot send about 30 messages a second (TELEGRAM_SEND_LIMIT, ``30/1``). Until issue 18
the worker kept it with a rate-limited Temporal queue for the Telegram activities, whose token
bucket had to be set to 4 activities a second to stay inside the window in the worst case
(docs/performance.md), and which costs every delivery a trip through the server's matching (no
eager dispatch). Now each Bot API call that sends or edits a message takes a slot of the same
sliding window in Postgres as createTask and recordInfo (imagegen/pacer.py) before it goes out, as
an aiogram request middleware of the worker's Bot: the deliveries, the status edits and the polls'
"generating" edits alike, from every worker process together, whatever queue or local activity
makes them. So the Telegram activities run on the workflow's own queue (``Settings.direct_kinds``).

A slot further than ``max_wait`` away is not taken: the call fails as Telegram's own flood control
would (``TelegramRetryAfter`` with the remaining wait), which every caller already honours (the
delivery and the final status retry after it; a cosmetic edit is skipped). ``getFile`` and the other
reading methods are not counted. The bot process's own conversation messages are not paced here
(their pace is the users').
"""

from __future__ import annotations

import asyncio
import math

from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter

from imagegen import metrics
from imagegen.pacer import Pacer
from imagegen.ratelimits import TELEGRAM

# Bot API methods that count against the send limit.
PACED_PREFIXES = ("send", "edit", "copy", "forward")
# The longest a call waits for its slot (a backlog of about 150 calls at 30/1); beyond, a RetryAfter.
MAX_WAIT_SECONDS = 5.0


def is_paced(api_method: str) -> bool:
    return api_method.startswith(PACED_PREFIXES)


class PacingMiddleware(BaseRequestMiddleware):
    def __init__(self, pacer: Pacer, max_wait: float = MAX_WAIT_SECONDS) -> None:
        self.pacer, self.max_wait = pacer, max_wait

    async def __call__(self, make_request, bot, method):
        if is_paced(getattr(method, "__api_method__", "")):
            taken, delay = await self.pacer.reserve(self.max_wait)
            if not taken:
                metrics.count("imagegen_telegram_paced", outcome="refused")
                raise TelegramRetryAfter(method=method, message="paced: the send window is full",
                                         retry_after=max(1, math.ceil(delay - self.max_wait)))
            if delay > 0.01:
                metrics.count("imagegen_telegram_paced", outcome="waited")
                await asyncio.sleep(delay)
        return await make_request(bot, method)


def telegram_pacing(settings, pool) -> PacingMiddleware | None:
    """The worker Bot's pacer for TELEGRAM_SEND_LIMIT (None when it is `off`)."""
    limit = settings.telegram_send_limit
    return PacingMiddleware(Pacer(pool, TELEGRAM, limit)) if limit.paces(TELEGRAM) else None
