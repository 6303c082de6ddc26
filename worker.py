"""Temporal worker entry point: runs GenerationWorkflow and its activities.

One asyncpg pool, one aiogram Bot and one Kie client per process, created inside the running loop
and shared by the activities. Configuration: see README.md / .env.example.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Sequence

from imagegen.lean_aiogram import defer_telegram_types

defer_telegram_types()  # first: aiogram's ~900 type validators are built on use, not at import (−100 MB)

from temporalio.client import Client  # noqa: E402
from temporalio.runtime import Runtime  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from activities.generation import GenerationActivities
from activities.kie_account import KieAccountActivities
from activities.retention import RetentionActivities
from imagegen.delivery import create_bot
from imagegen.health import Readiness, postgres_check, start_internal_server, temporal_check
from imagegen.jobs import JobRepository, create_pool
from imagegen.kie import KieClient
from imagegen import eventloop, ratelimits, visibility
from imagegen.logs import setup_logging
from imagegen.redact import install as install_redaction
from imagegen.redact import register_settings
from imagegen.migrate import apply_migrations
from imagegen import kie_account
from imagegen.retention import ensure_schedule
from imagegen.sandbox import workflow_runner
from imagegen.typehints import cache_type_hints
from imagegen.telegram_pacing import telegram_pacing
from imagegen.settings import Settings, SettingsError
from imagegen.temporal_connect import connect_process
from workflows.generation import GenerationWorkflow
from workflows.retention import RetentionWorkflow
from workflows.kie_account import KieAccountWorkflow

log = logging.getLogger("imagegen.worker")
# On SIGTERM the worker stops polling for tasks and gives running activities this long to finish
# (a delivery in progress completes instead of being cancelled mid-send). The compose worker's
# stop_grace_period exceeds it (tests/test_config_consistency.py).
GRACEFUL_SHUTDOWN_SECONDS = 20


@asynccontextmanager
async def activity_resources(settings: Settings, dsn: str):
    """The per-process shared resources, closed on exit."""
    pool = await create_pool(dsn, **settings.pool_options())
    bot = create_bot(settings.telegram_bot_token.get_secret_value(), settings.telegram_api_base,
                     timeout=settings.telegram_timeout_seconds, pacing=telegram_pacing(settings, pool))
    kie = KieClient(settings.kie_api_base, settings.kie_api_key.get_secret_value())
    acts = GenerationActivities(settings=settings, repo=JobRepository(pool), kie=kie, bot=bot)
    try:
        yield acts
    finally:
        await acts.close()
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
            "(register them: README, 'Operator guide')")


def build_workers(client: Client, task_queue: str, acts: GenerationActivities,
                  workflows: Sequence[type] = (GenerationWorkflow, RetentionWorkflow, KieAccountWorkflow)) -> list[Worker]:
    """One Worker per task queue, all in this process: the workflow queue (the generation and
    retention workflows, the retention purge), then one rate-limited activity queue per kind of
    external call (imagegen/ratelimits.py). The server enforces each queue's rate for all worker
    processes together; every worker must be given the same limits."""
    concurrency = acts.settings.worker_max_concurrent_activities
    # The workflow queue also runs every generation activity: ones scheduled there before the
    # queues were split (running workflows replay fine: the task queue is not part of determinism).
    workers = [make_worker(client, task_queue, acts.all() + RetentionActivities(acts.repo.pool).all()
                           + KieAccountActivities(acts.repo.pool, acts.kie).all(),
                           concurrency, workflows=list(workflows))]
    for kind, limit in acts.settings.rate_limits.items():
        # A paced kind waits for its Postgres time slot inside the activity: at most `count` of them
        # at once per process, so such a wait stays about one window long (imagegen/pacer.py).
        slots = min(concurrency, limit.count) if limit.paces(kind) else concurrency
        workers.append(make_worker(client, ratelimits.queue_name(task_queue, kind), acts.for_queue(kind),
                                   slots, max_task_queue_activities_per_second=acts.settings.queue_rate(kind)))
    return workers


def make_worker(client: Client, task_queue: str, activities: list, max_concurrent_activities: int = 50,
                **options) -> Worker:
    """A Worker with this project's settings (also the benchmark floor's: tests/bench/floor.py)."""
    cache_type_hints()  # payload dataclasses' type hints once per class (imagegen/typehints.py)
    return Worker(
        client,
        task_queue=task_queue,
        activities=activities,
        # Each activity holds a pooled connection for one statement at a time, so 50 activities
        # share DB_POOL_SIZE connections (docs/reliability.md, "Pools and concurrency").
        max_concurrent_activities=max_concurrent_activities,
        # Heartbeats reach the server at least every 2 s, so a cancel (UI, CLI, /cancel) reaches a
        # running delivery within seconds instead of the default 0.8 × heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=2),
        default_heartbeat_throttle_interval=timedelta(seconds=2),
        graceful_shutdown_timeout=timedelta(seconds=GRACEFUL_SHUTDOWN_SECONDS),
        # The stock sandbox without its exec per payload, modules imported once (imagegen/sandbox.py).
        workflow_runner=workflow_runner(),
        **options,
    )


def _limits_text(settings: Settings) -> str:
    return ",".join(f"{kind}:{limit}@{settings.queue_rate(kind) or 'unlimited'}/s"
                    for kind, limit in settings.rate_limits.items())


async def run(settings: Settings, *, runtime: Runtime | None = None) -> None:
    """Serve until SIGINT/SIGTERM. The internal health port answers from the start (alive, ready
    once Postgres and Temporal answer); Temporal is retried with backoff until it is reachable."""
    dsn = settings.require_database_url()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    readiness = Readiness()
    health = await start_internal_server(settings.http_host, settings.health_port, readiness)
    try:
        await apply_migrations(dsn)
        client = await connect_process(settings, runtime=runtime, stop=stop)
        if client is None:
            log.info("WORKER_STOPPED before Temporal answered")
            return
        await check_search_attributes(client, settings.temporal_namespace)
        async with activity_resources(settings, dsn) as acts:
            readiness.checks.update(postgres=postgres_check(acts.repo.pool), temporal=temporal_check(client))
            await ensure_schedule(client, settings.temporal_task_queue, settings.retention_days)
            if settings.kie_balance_every_minutes > 0:
                await kie_account.ensure_schedule(client, settings.temporal_task_queue,
                                                  settings.kie_balance_every_minutes, settings.kie_credits_warn_below)
            workers = build_workers(client, settings.temporal_task_queue, acts)
            async with AsyncExitStack() as running:
                for worker in workers:
                    await running.enter_async_context(worker)
                log.info("WORKER_STARTED task_queue=%s temporal=%s limits=%s loop=%s", settings.temporal_task_queue,
                         settings.temporal_address, _limits_text(settings), eventloop.name())
                await stop.wait()
                readiness.draining = True
                log.info("WORKER_STOPPING graceful_shutdown=%ss", GRACEFUL_SHUTDOWN_SECONDS)
            log.info("WORKER_STOPPED")
    finally:
        if health is not None:
            await health.cleanup()


def main() -> int:
    try:
        settings = Settings.from_env()
        settings.require_database_url()
    except SettingsError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    register_settings(settings)
    setup_logging(settings.log_level, fmt=settings.log_format)
    install_redaction()  # aiogram/aiohttp/temporalio lines are scrubbed of secrets too
    eventloop.run(run(settings), settings.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
