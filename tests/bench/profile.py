"""Where the product's time goes: part 2's burst (200 users at once, limits off) with py-spy sampling
worker.py and bot.py. `python -m tests.bench.profile`; prints the functions with the most samples
(own and total) per process; the raw collapsed stacks stay in .run/bench-profile/ (speedscope,
flamegraph.pl)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections import Counter
from pathlib import Path

from tests.bench import scenarios
from tests.bench.measure import RssSampler
from tests.support.procstack import RUN_DIR, ProcStack
from tests.support.services import EmbeddedPostgres, TemporalDevServer, connect_temporal
from tests.support.telegram_sim import TelegramSimulator


def summarize(path: Path, top: int = 25) -> str:
    own: Counter = Counter()
    total: Counter = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"== {path.stem}: {samples} samples", "-- own time"]
    lines += [f"{n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["-- total time (frame anywhere on the stack)"]
    lines += [f"{n / samples:6.1%}  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines)


async def run() -> None:
    users = int(os.environ.get("BENCH_USERS", "200"))
    workdir = RUN_DIR / "bench-profile"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pg = await asyncio.to_thread(lambda: EmbeddedPostgres().start())
    temporal = await asyncio.to_thread(lambda: TemporalDevServer().start())
    sampler = RssSampler()
    stacks: list[ProcStack] = []
    try:
        client = await connect_temporal(temporal.address)

        async def make_stack(name: str, **kwargs) -> ProcStack:
            tg = TelegramSimulator(token=f"{random.randint(10**8, 10**9)}:PROFILE-{name}")
            ps = ProcStack(name=f"profile-{name}", dsn=pg.dsn, temporal_address=temporal.address, client=client,
                           workdir=workdir / name, lease_seconds=60, tg=tg, **kwargs)
            stacks.append(ps)
            return await ps.start()

        result = await scenarios.product(make_stack, sampler, users, 3, temporal.proc.pid, profile_dir=workdir)
        print({k: result[k] for k in ("throughput", "delivered", "wall", "burst_p50", "cpu_ms")})
    finally:
        for ps in stacks:
            await ps.stop()
        await asyncio.to_thread(temporal.stop)
        await asyncio.to_thread(pg.close)
    for name in ("worker", "bot"):
        path = workdir / f"{name}.txt"
        print(summarize(path) if path.exists() else f"no profile for {name}")


if __name__ == "__main__":
    asyncio.run(run())
