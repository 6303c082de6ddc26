"""Fixtures of the fault matrix.

mode         the DELIVERY_MODE of the cell: every cell runs once per mode of FAULTS_MODES (send,edit).
fstack       the in-process pipeline (tests/support/stack.py) with the fault simulators of
             tests/faults/sims.py and a short Telegram client timeout.
procstack    a factory of process-level stacks (tests/support/procstack.py) on the session's
             Postgres and Temporal; everything it started is stopped after the test.
temporal_address  the session Temporal dev server's address (for subprocesses).
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

import pytest
import pytest_asyncio

from tests.faults.matrix import MODES, SUMMARIES, results_path
from tests.faults.sims import FaultKie, FaultTelegram
from tests.support.procstack import ProcStack
from tests.support.stack import Stack

TELEGRAM_TIMEOUT = 3.0  # the in-process worker's aiogram timeout, so that "Telegram hangs" cells are quick


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest_asyncio.fixture
async def fstack(temporal_env, pg_dsn, pool, mode):
    s = Stack(client=temporal_env.client, pool=pool, dsn=pg_dsn, task_queue=f"faults-{uuid.uuid4().hex[:10]}",
              delivery_mode=mode)
    s.kie = FaultKie(api_key="test-kie-key")
    s.tg = FaultTelegram(token=s.tg.token)
    s.tg.delivery_mode = mode
    await s.start()
    s.bot.session.timeout = TELEGRAM_TIMEOUT
    try:
        yield s
    finally:
        s.tg.release.set()
        await s.stop()


@pytest.fixture
def temporal_address(temporal_env) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest_asyncio.fixture
async def procstack(temporal_env, temporal_address, pg_dsn, mode):
    made: list[ProcStack] = []

    async def make(name: str, *, dsn: str | None = None, address: str | None = None, **kwargs) -> ProcStack:
        kwargs.setdefault("kie", FaultKie(api_key="faults-kie-key"))
        # A bot token of its own: the polling singleton's advisory lock is keyed by it.
        kwargs.setdefault("tg", FaultTelegram(token=f"{random.randint(10**8, 10**9)}:FAULTS-{name}"))
        kwargs["tg"].delivery_mode = mode
        kwargs["extra_env"] = {"DELIVERY_MODE": mode, **kwargs.get("extra_env", {})}
        client = None if address else temporal_env.client
        ps = ProcStack(name=name, dsn=dsn or pg_dsn, temporal_address=address or temporal_address, client=client,
                       **kwargs)
        made.append(ps)
        await ps.start()
        return ps

    yield make
    for ps in made:
        ps.tg.release.set()
        await ps.stop()


_SESSION = {"tests": 0, "passed": 0, "failed": 0, "xfailed": 0, "seconds": 0.0}


def pytest_runtest_logreport(report):
    if "faults" not in report.keywords:
        return
    _SESSION["seconds"] += report.duration
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _SESSION["tests"] += 1
        if hasattr(report, "wasxfail"):
            _SESSION["xfailed"] += 1
        elif report.outcome == "passed":
            _SESSION["passed"] += 1
        elif report.outcome == "failed":
            _SESSION["failed"] += 1


def pytest_sessionfinish(session, exitstatus):
    if not SUMMARIES:
        return
    record = {"session": True, **_SESSION, "seconds": round(_SESSION["seconds"], 1), "cpus": os.cpu_count(),
              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if SUMMARIES:
        terminalreporter.section("fault matrix")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"fault tests: {_SESSION['tests']} ({_SESSION['passed']} passed, {_SESSION['xfailed']} xfailed, "
            f"{_SESSION['failed']} failed) in {_SESSION['seconds']:.0f} s")
        terminalreporter.write_line(f"(records appended to {results_path()}; "
                                    f"table: python -m tests.faults.report {results_path()})")
