"""Temporal worker entry point: runs GenerationWorkflow and its activities.

One asyncpg pool, one aiogram Bot and one Kie client per process, created inside the running loop
and shared by the activities. Configuration: see README.md / .env.example.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.generation import GenerationActivities
from imagegen.delivery import create_bot
from imagegen.jobs import JobRepository, create_pool
from imagegen.kie import KieClient
from imagegen import metrics, visibility
from imagegen.logs import setup_logging
from imagegen.redact import install as install_redaction
from imagegen.migrate import apply_migrations
from imagegen.settings import Settings, SettingsError
from workflows.generation import GenerationWorkflow

log = logging.getLogger("imagegen.worker")


@asynccontextmanager
async def activity_resources(settings: Settings, dsn: str):
    """The per-process shared resources, closed on exit."""
    pool = await create_pool(dsn)
    bot = create_bot(settings.telegram_bot_token, settings.telegram_api_base, timeout=settings.telegram_timeout_seconds)
    kie = KieClient(settings.kie_api_base, settings.kie_api_key)
    try:
        yield GenerationActivities(settings=settings, repo=JobRepository(pool), kie=kie, bot=bot)
    finally:
        await kie.close()
        await bot.session.close()
        await pool.close()


async def check_search_attributes(client: Client, namespace: str) -> None:
    """The workflow upserts the attributes of imagegen/visibility.py; on a cluster that lacks one its
    workflow tasks would fail over and over. Say so at start (README, "Operator guide")."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    try:
        answer = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    except Exception as exc:  # e.g. no permission on a managed cluster: the operator knows best
        log.warning("SEARCH_ATTRIBUTES_UNCHECKED error=%s", type(exc).__name__)
        return
    known = set(answer.custom_attributes)
    missing = [name for name, _ in visibility.cli_definitions() if name not in known]
    if missing:
        raise SystemExit(
            f"worker: search attributes missing in namespace {namespace!r}: {', '.join(missing)} "
            "(register them: README, 'Search attributes')")


def build_worker(client: Client, task_queue: str, acts: GenerationActivities) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[GenerationWorkflow],
        activities=acts.all(),
        max_concurrent_activities=50,
        # Heartbeats reach the server at least every 2 s, so a cancel (UI, CLI, /cancel) reaches a
        # running delivery within seconds instead of the default 0.8 × heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=2),
        default_heartbeat_throttle_interval=timedelta(seconds=2),
        # On SIGTERM (a deploy) let in-flight deliveries finish instead of cancelling them mid-send.
        graceful_shutdown_timeout=timedelta(seconds=20),
    )


async def run(settings: Settings) -> None:
    dsn = settings.require_database_url()
    await apply_migrations(dsn)
    runtime = metrics.make_runtime(settings.metrics_port)
    metrics.install(runtime)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                  **({"runtime": runtime} if runtime else {}))
    await check_search_attributes(client, settings.temporal_namespace)
    async with activity_resources(settings, dsn) as acts:
        worker = build_worker(client, settings.temporal_task_queue, acts)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("WORKER_STARTED task_queue=%s temporal=%s", settings.temporal_task_queue, settings.temporal_address)
        async with worker:
            await stop.wait()
        log.info("WORKER_STOPPED")


def main() -> int:
    try:
        settings = Settings.from_env()
        settings.require_database_url()
    except SettingsError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, fmt=settings.log_format)
    install_redaction()  # aiogram/aiohttp/temporalio lines are scrubbed of secrets too
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
