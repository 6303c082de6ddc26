"""The bot process: the Telegram conversation plus the aiohttp server for Kie callbacks, /healthz and
/readyz (imagegen.health; counters only on the internal HEALTH_PORT).

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
from temporalio.runtime import Runtime

from imagegen import eventloop
from imagegen.bot import db_outage
from imagegen.bot.callback_api import STATS_KEY, build_http_app
from imagegen.bot.fsm_storage import PostgresStorage
from imagegen.bot.gate import UpdateGate
from imagegen.bot.handlers import build_router
from imagegen.bot.leader import Leadership
from imagegen.bot.locale import UserLocaleMiddleware
from imagegen.bot.menu import publish_commands
from imagegen.bot.reminders import run_reminders
from imagegen.bot.serial import PerKeyIsolation
from imagegen.bot.sweep import run_sweeper
from imagegen.delivery import create_bot
from imagegen.health import Readiness, add_public_routes, postgres_check, start_internal_server, temporal_check
from imagegen.jobs import JobRepository, create_pool
from imagegen.migrate import apply_migrations
from imagegen.redact import register_settings
from imagegen.settings import Settings
from imagegen.temporal_connect import connect_process
from imagegen.credits import Ledger
from imagegen.users import UserRepository

log = logging.getLogger("imagegen.bot")
WEBHOOK_PATH = "/telegram/webhook"
# On SIGTERM: how long in-flight webhook requests and updates in hand get to finish. The compose
# bot's stop_grace_period exceeds it (tests/test_config_consistency.py).
DRAIN_SECONDS = 15.0


def build_dispatcher(temporal: Client, settings: Settings, pool: asyncpg.Pool | None = None) -> Dispatcher:
    """The dispatcher; with a pool, conversation state lives in Postgres (shared by all bot processes)."""
    dp = Dispatcher(storage=PostgresStorage(pool) if pool is not None else MemoryStorage(),
                    events_isolation=PerKeyIsolation())  # one user's updates in order
    dp["temporal"] = temporal
    dp["settings"] = settings
    dp["jobs"] = JobRepository(pool) if pool is not None else None
    dp["users"] = users = UserRepository(pool) if pool is not None else None
    dp["ledger"] = Ledger(pool, free_credits=settings.free_credits) if pool is not None and settings.credits else None
    UserLocaleMiddleware(users).setup(dp)  # the user's language on every event (data["lang"])
    dp.include_router(build_router(credits=settings.credits))
    dp.startup.register(publish_commands)  # the translated command menu, when polling starts
    db_outage.install(dp)
    return dp


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app`; its cleanup() finishes requests in progress for up to DRAIN_SECONDS."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=DRAIN_SECONDS)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def poll_until_cancelled(dp: Dispatcher, bot: Bot, *, polling_timeout: int = 10,
                               concurrency: int | None = None) -> None:
    """Long-poll Telegram until this task is cancelled; then stop polling for real.

    Cancelling a task that runs ``dp.start_polling`` does not stop aiogram's inner polling tasks (they
    would go on calling getUpdates next to the new leader), so on cancellation this asks the
    dispatcher to stop and waits until it has.
    """
    polling = asyncio.create_task(dp.start_polling(
        bot, handle_signals=False, close_bot_session=False, polling_timeout=polling_timeout,
        allowed_updates=dp.resolve_used_update_types(), tasks_concurrency_limit=concurrency))
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
    runtime: Runtime | None = None,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when no `stop` is given).

    Start: the internal health port first (alive, not ready), migrations, Temporal (retried with
    backoff), then the public HTTP server and Telegram. Stop: unready at once, stop taking updates
    (polling stops / the webhook is drained), finish the updates in hand (DRAIN_SECONDS at most).
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    register_settings(settings)  # its secrets are scrubbed from every log line and error text
    dsn = settings.require_database_url()
    readiness = Readiness()
    leadership: Leadership | None = None
    stats: dict = {}

    def process_status() -> dict:  # internal /status only
        role = "starting" if leadership is None else "webhook" if settings.bot_mode == "webhook" else leadership.role
        return {"mode": settings.bot_mode, "role": role, "callbacks": stats}

    internal = await start_internal_server(settings.http_host, settings.health_port, readiness, process_status)
    runner = pool = bot = None
    background: asyncio.Task | None = None
    sweeper: asyncio.Task | None = None
    reminders: asyncio.Task | None = None
    try:
        await apply_migrations(dsn)
        if temporal is None:
            temporal = await connect_process(settings, runtime=runtime, stop=stop)
            if temporal is None:
                return  # SIGTERM before Temporal answered (the finally below logs BOT_STOPPED)
        pool = await create_pool(dsn, **settings.pool_options())
        bot = create_bot(settings.telegram_bot_token.get_secret_value(), settings.telegram_api_base,
                         timeout=settings.telegram_timeout_seconds)
        dp = build_dispatcher(temporal, settings, pool)
        gate = UpdateGate(settings.bot_max_concurrent_updates)
        dp.update.outer_middleware(gate)
        leadership = Leadership(dsn, settings.telegram_bot_token.get_secret_value(),
                                retry_seconds=leader_retry_seconds)
        hmac_key = settings.kie_webhook_hmac_key
        app = build_http_app(temporal, settings.callback_secret.get_secret_value(),
                             webhook_hmac_key=hmac_key.get_secret_value() if hmac_key else None)
        add_public_routes(app, readiness)
        stats = app[STATS_KEY]
        webhook_secret = settings.telegram_webhook_secret
        if settings.bot_mode == "webhook":
            # In the request (not in the background): a stopping server finishes what it took.
            SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=webhook_secret.get_secret_value(),
                                 handle_in_background=False).register(app, path=WEBHOOK_PATH)
        runner = await start_http(app, settings.http_host, settings.http_port)
        readiness.checks.update(postgres=postgres_check(pool), temporal=temporal_check(temporal))
        # Requests admitted but never started (a crash between the two): started or closed here.
        sweeper = asyncio.create_task(run_sweeper(temporal, JobRepository(pool), bot, settings,
                                                  every=settings.unstarted_sweep_seconds,
                                                  grace_seconds=settings.unstarted_sweep_seconds))
        reminders = asyncio.create_task(run_reminders(pool, bot))  # pictures left without a description
        log.info("HTTP_STARTED host=%s port=%s mode=%s loop=%s", settings.http_host, settings.http_port,
                 settings.bot_mode, eventloop.name())
        if settings.bot_mode == "webhook":
            await bot.set_webhook(
                url=settings.public_base_url + WEBHOOK_PATH,
                secret_token=webhook_secret.get_secret_value(),
                allowed_updates=dp.resolve_used_update_types(),
            )
            log.info("WEBHOOK_SET path=%s", WEBHOOK_PATH)
            await publish_commands(bot, settings)
        else:

            async def lead() -> None:
                await bot.delete_webhook(drop_pending_updates=False)
                await poll_until_cancelled(dp, bot, concurrency=settings.bot_max_concurrent_updates)

            background = asyncio.create_task(leadership.run(lead))
        await stop.wait()
        readiness.draining = True
        log.info("BOT_STOPPING in_hand=%d", gate.in_hand)
        if background is not None:  # polling: stop taking updates
            background.cancel()
            await asyncio.gather(background, return_exceptions=True)
            background = None
        if runner is not None:  # webhook and callbacks: stop accepting, finish requests in progress
            await runner.cleanup()
            runner = None
        if not await gate.drain(DRAIN_SECONDS):
            log.warning("BOT_DRAIN_TIMEOUT in_hand=%d", gate.in_hand)
    finally:
        readiness.draining = True
        for task in (background, sweeper, reminders):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        if bot is not None:
            await bot.session.close()
        if pool is not None:
            await pool.close()
        if internal is not None:
            await internal.cleanup()
        log.info("BOT_STOPPED")
