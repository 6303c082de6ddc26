"""The bot process: the Telegram conversation plus the aiohttp server for Kie callbacks and /healthz.

Polling mode (default): every process serves HTTP; only the holder of the Postgres advisory lock
polls Telegram (see leader.py). Webhook mode: Telegram POSTs updates to
``{PUBLIC_BASE_URL}/telegram/webhook`` with the ``X-Telegram-Bot-Api-Secret-Token`` header, which is
checked; any number of processes can serve.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
from aiogram import Bot, Dispatcher
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from temporalio.client import Client

from imagegen.bot.callback_api import build_http_app
from imagegen.bot.fsm_storage import PostgresStorage
from imagegen.bot.handlers import build_router
from imagegen.bot.leader import Leadership
from imagegen import metrics
from imagegen.delivery import create_bot
from imagegen.jobs import JobRepository, create_pool
from imagegen.migrate import apply_migrations
from imagegen.redact import register_settings
from imagegen.settings import Settings

log = logging.getLogger("imagegen.bot")
WEBHOOK_PATH = "/telegram/webhook"


def build_dispatcher(temporal: Client, settings: Settings, pool: asyncpg.Pool | None = None) -> Dispatcher:
    """The dispatcher; with a pool, conversation state lives in Postgres (shared by all bot processes)."""
    dp = Dispatcher(storage=PostgresStorage(pool) if pool is not None else MemoryStorage())
    dp["temporal"] = temporal
    dp["settings"] = settings
    dp["jobs"] = JobRepository(pool) if pool is not None else None
    dp.include_router(build_router())
    return dp


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def poll_until_cancelled(dp: Dispatcher, bot: Bot, *, polling_timeout: int = 10) -> None:
    """Long-poll Telegram until this task is cancelled; then stop polling for real.

    Cancelling a task that runs ``dp.start_polling`` does not stop aiogram's inner polling tasks (they
    would go on calling getUpdates next to the new leader), so on cancellation this asks the
    dispatcher to stop and waits until it has.
    """
    polling = asyncio.create_task(dp.start_polling(
        bot, handle_signals=False, close_bot_session=False, polling_timeout=polling_timeout,
        allowed_updates=dp.resolve_used_update_types()))
    try:
        await asyncio.wait({polling})  # being cancelled here leaves `polling` running: stopped below
        polling.result()
    finally:
        if not polling.done():
            try:
                await asyncio.wait_for(dp.stop_polling(), polling_timeout + 5)
            except (RuntimeError, asyncio.TimeoutError):  # not started yet, or stuck
                polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)


async def run_bot(
    settings: Settings,
    temporal: Client | None = None,
    *,
    stop: asyncio.Event | None = None,
    leader_retry_seconds: float = 3.0,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when no `stop` is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    register_settings(settings)  # its secrets are scrubbed from every log line and error text
    dsn = settings.require_database_url()
    await apply_migrations(dsn)
    if temporal is None:
        runtime = metrics.make_runtime(settings.metrics_port)
        metrics.install(runtime)
        temporal = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                        **({"runtime": runtime} if runtime else {}))
    pool = await create_pool(dsn, max_size=5)
    bot: Bot = create_bot(settings.telegram_bot_token, settings.telegram_api_base,
                          timeout=settings.telegram_timeout_seconds)
    dp = build_dispatcher(temporal, settings, pool)
    leadership = Leadership(dsn, settings.telegram_bot_token, retry_seconds=leader_retry_seconds)

    def status() -> dict:
        role = "webhook" if settings.bot_mode == "webhook" else leadership.role
        return {"mode": settings.bot_mode, "role": role}

    app = build_http_app(temporal, settings.callback_secret, status=status,
                         webhook_hmac_key=settings.kie_webhook_hmac_key)
    if settings.bot_mode == "webhook":
        SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=settings.telegram_webhook_secret).register(
            app, path=WEBHOOK_PATH
        )
    runner = await start_http(app, settings.http_host, settings.http_port)
    log.info("HTTP_STARTED host=%s port=%s mode=%s", settings.http_host, settings.http_port, settings.bot_mode)
    background: asyncio.Task | None = None
    try:
        if settings.bot_mode == "webhook":
            await bot.set_webhook(
                url=settings.public_base_url + WEBHOOK_PATH,
                secret_token=settings.telegram_webhook_secret,
                allowed_updates=dp.resolve_used_update_types(),
            )
            log.info("WEBHOOK_SET path=%s", WEBHOOK_PATH)
        else:

            async def lead() -> None:
                await bot.delete_webhook(drop_pending_updates=False)
                await poll_until_cancelled(dp, bot)

            background = asyncio.create_task(leadership.run(lead))
        await stop.wait()
    finally:
        if background is not None:
            background.cancel()
            await asyncio.gather(background, return_exceptions=True)
        await runner.cleanup()
        await bot.session.close()
        await pool.close()
        log.info("BOT_STOPPED")
