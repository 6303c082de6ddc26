"""The floor on both event loops, alternated on one dev server: `python -m tests.bench.ab_floor [ROUNDS]`.

worker.py and the bench's floor worker run on the loop EVENT_LOOP names (uvloop by default,
imagegen/eventloop.py). This shows what that choice does to the floor itself, so that the throughput
ratio compares the product and the floor on the same runtime (docs/performance.md)."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.bench import scenarios
from tests.support.procstack import RUN_DIR
from tests.support.services import TemporalDevServer, connect_temporal


async def run(rounds: int) -> None:
    workdir = RUN_DIR / "bench-ab-floor"
    workdir.mkdir(parents=True, exist_ok=True)
    temporal = await asyncio.to_thread(lambda: TemporalDevServer().start())
    try:
        client = await connect_temporal(temporal.address)
        for _ in range(rounds):
            for loop in ("asyncio", "uvloop"):
                os.environ["EVENT_LOOP"] = loop  # inherited by the floor's worker process
                r = await scenarios.floor(client, temporal.address, workdir, 200, 5, temporal.proc.pid)
                cpu = " / ".join(f"{r['cpu_ms'][k]:.1f}" for k in ("server", "worker", "bench"))
                print(f"{loop:8} {r['throughput']:5.1f} workflows/s  CPU per workflow server / worker / client "
                      f"{cpu} ms", flush=True)
    finally:
        await asyncio.to_thread(temporal.stop)


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
