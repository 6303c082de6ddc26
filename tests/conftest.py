"""Shared fixtures: one real PostgreSQL and one real Temporal dev server per test session; per test,
fresh simulators (Kie.ai, Telegram Bot API), a random task queue and an in-process worker.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from imagegen import ratelimits, visibility
from imagegen.jobs import JobRepository, create_pool
from imagegen.migrate import apply_migrations
from tests.support.services import EmbeddedPostgres, temporal_cli
from tests.support.stack import Stack


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_server():
    server = await asyncio.to_thread(lambda: EmbeddedPostgres().start())
    await apply_migrations(server.dsn)
    yield server
    await asyncio.to_thread(server.close)


@pytest.fixture(scope="session")
def pg_dsn(pg_server) -> str:
    return pg_server.dsn


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(pg_dsn):
    p = await create_pool(pg_dsn, max_size=30)
    yield p
    await p.close()


@pytest.fixture
def repo(pool) -> JobRepository:
    return JobRepository(pool)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        ui=False,
        dev_server_log_level="error",
        search_attributes=visibility.ALL_KEYS,  # what the workflow upserts (imagegen/visibility.py)
        dev_server_extra_args=ratelimits.dev_server_args(),  # one partition per queue: exact rate limits
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def stack(temporal_env, pg_dsn, pool):
    """Simulators + callback endpoint + a worker on a task queue of its own."""
    s = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue=f"tq-{uuid.uuid4().hex[:10]}")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
