"""The capacity phase: latency at four offered loads, beside what the M/M/1 model predicts.

At 30, 50, 70 and 90 % of the pipeline's measured rate, live impressions are
sent for ``BENCH_CAPACITY_SECONDS`` (the latency phase's code, one campaign
each), after the worker has drained whatever the load before left. Every
second of the sending, ``GET /health`` is read; the last reading before the
sending ends gives the worker's own utilisation rho and the model's expected
time in the worker W = 1 / (mu - lambda) (:mod:`dmp_faust.capacity`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.latency import Latency, measure_latency
from bench.measure import GroupLag
from bench.worker import WorkerProcess

LOADS = (0.3, 0.5, 0.7, 0.9)
DRAIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LoadPoint:
    share: float  # of the pipeline's rate
    latency: Latency
    capacity: dict[str, Any]  # /health's "capacity" at the end of the sending (or {})
    drained_before_s: float  # how long the load before took to drain

    @property
    def predicted_ms(self) -> float | None:
        sojourn = self.capacity.get("expected_sojourn_s")
        return None if sojourn is None else sojourn * 1000

    @property
    def mean_ms(self) -> float:
        values = self.latency.latencies_ms
        return sum(values) / len(values) if values else float("nan")


async def measure_capacity(
    session: aiohttp.ClientSession,
    worker: WorkerProcess,
    topic: str,
    sustained_rate: float,
    seconds: float,
) -> list[LoadPoint]:
    points = []
    for share in LOADS:
        drained_s = await _drained(worker)
        readings: list[tuple[float, dict[str, Any]]] = []
        started = time.monotonic()
        reader = asyncio.create_task(_read_health(session, worker, readings))
        try:
            latency = await measure_latency(session, worker, topic, share * sustained_rate, seconds)
        finally:
            reader.cancel()
        during = [found for at, found in readings if at <= started + seconds]
        points.append(LoadPoint(share, latency, during[-1] if during else {}, drained_s))
    return points


async def _read_health(
    session: aiohttp.ClientSession, worker: WorkerProcess, readings: list[tuple[float, Any]]
) -> None:
    while True:
        try:
            body = await worker.get_json(session, "/health")
            readings.append((time.monotonic(), body.get("capacity", {})))
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(1.0)


async def _drained(worker: WorkerProcess) -> float:
    """Wait until the worker's groups have nothing left to read; how long that took."""
    started = time.monotonic()
    async with GroupLag(worker.bootstrap, worker.prefix, worker.partitions) as group:
        while any((await group.by_topic()).values()):
            if time.monotonic() - started > DRAIN_TIMEOUT_S:
                break
            await asyncio.sleep(0.5)
    return time.monotonic() - started
