"""Count every Bot API call by method and result: imagegen_telegram_calls_total{method,status}.

An aiogram request middleware, so the bot's conversation calls and the worker's deliveries are
counted alike. status: "ok", the Bot API error code (400, 403, 404, 429, 5xx) or "network".
"""

from __future__ import annotations

from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from imagegen import metrics

_STATUS = (
    (TelegramRetryAfter, "429"),
    (TelegramEntityTooLarge, "413"),
    (TelegramBadRequest, "400"),
    (TelegramUnauthorizedError, "401"),
    (TelegramForbiddenError, "403"),
    (TelegramNotFound, "404"),
    (TelegramConflictError, "409"),
    (TelegramServerError, "5xx"),
    (TelegramNetworkError, "network"),
)


def status_of(exc: BaseException) -> str:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return "error"


class CountingMiddleware(BaseRequestMiddleware):
    async def __call__(self, make_request, bot, method):
        name = type(method).__name__
        try:
            response = await make_request(bot, method)
        except Exception as exc:
            metrics.count("imagegen_telegram_calls", method=name, status=status_of(exc))
            raise
        metrics.count("imagegen_telegram_calls", method=name, status="ok")
        return response
