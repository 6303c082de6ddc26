"""The bot process: aiogram long polling plus the aiohttp server for Kie callbacks."""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, Dispatcher
from aiogram.fsm.storage.memory import MemoryStorage
from aiohttp import web
from temporalio.client import Client

from imagegen.bot.callback_api import build_http_app
from imagegen.bot.handlers import build_router
from imagegen.delivery import create_bot
from imagegen.settings import Settings

log = logging.getLogger("imagegen.bot")


def build_dispatcher(temporal: Client, settings: Settings) -> Dispatcher:
    dp = Dispatcher(storage=MemoryStorage())
    dp["temporal"] = temporal
    dp["settings"] = settings
    dp.include_router(build_router())
    return dp


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_bot(settings: Settings, temporal: Client | None = None, *, handle_signals: bool = True) -> None:
    """Serve until cancelled (or SIGINT/SIGTERM when handle_signals)."""
    if temporal is None:
        temporal = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    bot: Bot = create_bot(settings.telegram_bot_token, settings.telegram_api_base)
    runner = await start_http(build_http_app(temporal, settings.callback_secret), settings.http_host, settings.http_port)
    log.info("HTTP_STARTED host=%s port=%s", settings.http_host, settings.http_port)
    dp = build_dispatcher(temporal, settings)
    try:
        await bot.delete_webhook(drop_pending_updates=False)
        await dp.start_polling(bot, handle_signals=handle_signals, close_bot_session=False)
    finally:
        await runner.cleanup()
        await bot.session.close()
