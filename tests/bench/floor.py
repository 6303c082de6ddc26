"""The floor: a bare workflow (activity → wait for a signal → activity), no database, no HTTP, run by
a worker process with the same Worker settings as worker.py. `python -m tests.bench.floor ADDRESS QUEUE`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client


@activity.defn(name="floor_step")
async def floor_step(n: int) -> float:
    """Returns when it ran (wall clock): the second one's time ends "signal → completion"."""
    return time.time()


@workflow.defn(name="FloorWorkflow")
class FloorWorkflow:
    def __init__(self) -> None:
        self._go = False
        self._started = False

    @workflow.signal
    def go(self) -> None:
        self._go = True

    @workflow.query
    def ready(self) -> bool:
        return self._started

    @workflow.run
    async def run(self) -> float:
        await workflow.execute_activity(floor_step, 0, start_to_close_timeout=timedelta(seconds=30))
        self._started = True
        await workflow.wait_condition(lambda: self._go)
        return await workflow.execute_activity(floor_step, 1, start_to_close_timeout=timedelta(seconds=30))


async def _main(address: str, task_queue: str) -> None:
    from worker import make_worker  # the same Worker settings as worker.py's
    # The classes of the importable module, not of __main__ (the sandbox imports a workflow's module by name).
    from tests.bench.floor import FloorWorkflow, floor_step

    client = await Client.connect(address)
    worker = make_worker(client, task_queue, [floor_step], workflows=[FloorWorkflow])
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with worker:
        print("WORKER_STARTED", flush=True)
        await stop.wait()


if __name__ == "__main__":
    import os

    from imagegen import eventloop

    # worker.py's loop (EVENT_LOOP; the floor needs none of worker.py's other settings)
    eventloop.run(_main(sys.argv[1], sys.argv[2]), os.environ.get("EVENT_LOOP", "uvloop"))
