"""How the pipeline's rate grows with partitions and workers, as far as one machine allows.

For each layout (partitions, workers): a fresh prefix with that many
partitions, the same ``BENCH_SCALING_EVENTS`` generated events loaded onto
its raw topic, then that many fresh workers started together, timed from
the moment all of them answer ``GET /health`` 200 to the moment every event
is accounted for (the workers' counters summed) and the consumer groups'
lag is 0 on every input topic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from bench.config import BenchConfig
from bench.load import bench_events, load_events, provision
from bench.measure import Accounting, GroupLag
from bench.worker import WorkerProcess

# (partitions, workers); the first is the main run's layout at this size.
LAYOUTS: Final = ((8, 1), (4, 1), (16, 1), (8, 2))
HEALTH_TIMEOUT_S: Final = 180.0
POLL_S: Final = 0.5


@dataclass(frozen=True)
class Layout:
    partitions: int
    workers: int
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def measure_scaling(config: BenchConfig, bootstrap: str, root: Path) -> list[Layout]:
    return [
        await _one(config, bootstrap, root / f"p{partitions}w{workers}", partitions, workers)
        for partitions, workers in LAYOUTS
    ]


async def _one(
    config: BenchConfig, bootstrap: str, root: Path, partitions: int, workers: int
) -> Layout:
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    events = config.scaling_events
    root.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(provision, bootstrap, prefix, partitions, root / "provision")
    generated = bench_events(config, time.time_ns() // 1_000_000, events)
    await load_events(bootstrap, f"{prefix}.events.raw", generated)
    processes = [
        WorkerProcess(bootstrap, prefix, partitions, root / f"w{n}", root / f"w{n}.log")
        for n in range(workers)
    ]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for worker in processes:
                worker.start()
            for worker in processes:
                await worker.wait_healthy(session, HEALTH_TIMEOUT_S)
            seconds = await drain(session, processes, events, config.pipeline_timeout_s)
            return Layout(partitions, workers, events, seconds)
    finally:
        for worker in processes:
            worker.stop(timeout=30)


async def drain(
    session: aiohttp.ClientSession, workers: list[WorkerProcess], events: int, timeout_s: float
) -> float:
    """Seconds until the workers' summed counters account for ``events`` and the lag is 0."""
    started = time.monotonic()
    first = workers[0]
    async with GroupLag(first.bootstrap, first.prefix, first.partitions) as group:
        while time.monotonic() - started < timeout_s:
            total = Accounting(0, 0, 0, 0, 0)
            for worker in workers:
                worker.check_alive()
                total = total.plus(Accounting.from_metrics(await worker.metrics(session)))
            if total.balanced and total.received >= events:
                lag = await group.by_topic()
                if not any(lag.values()):
                    return time.monotonic() - started
            await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{len(workers)} workers did not drain {events} events in {timeout_s:g} s")
