"""End-to-end latency of live events: producer send → visible in ``GET /campaigns/{id}/stats``.

With the worker caught up, impressions of one campaign of their own, with the
current wall-clock time as event time, are produced at a steady rate (half
the measured pipeline rate) onto the raw topic, one ``send`` each (no
linger). Meanwhile the campaign's statistics are read every 50 ms over the few
minutes the events fall in. The i-th event sent counts as visible at the
first read that returned at least i impressions (events take different
partitions through the pipeline, so which one arrived is not known; the
count is); its latency is that read's response time minus the time its
``send`` was called. So the figure includes the producer, three Kafka hops
(raw → valid → by_campaign), the agents, the table write and up to one
polling interval plus one HTTP round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from dataclasses import dataclass
from typing import Final

import aiohttp
import msgspec
from aiokafka import AIOKafkaProducer

from bench.measure import Accounting
from bench.worker import WorkerProcess

POLL_S: Final = 0.05
SEND_TICK_S: Final = 0.005
GRACE_S: Final = 60.0  # how long to wait for the last events after sending stopped
MINUTE_MS: Final = 60_000
USER_AGENT: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


@dataclass(frozen=True)
class Latency:
    campaign_id: str
    rate: float
    sent: int
    latencies_ms: list[float]
    during: Accounting  # what /metrics counted while the phase ran (a difference)

    @property
    def missing(self) -> int:
        return self.sent - len(self.latencies_ms)

    def percentile(self, share: float) -> float:
        return percentile(self.latencies_ms, share)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(share * len(ordered))))
    return ordered[rank - 1]


def latency_event(campaign_id: str, index: int, now_ms: int) -> tuple[bytes, bytes]:
    """One valid, non-bot impression of ``campaign_id`` at ``now_ms`` (~300 bytes)."""
    anonymous_id = f"bench-{index % 1000:04d}.{now_ms // 1000}"
    event = {
        "event_id": str(uuid.uuid4()),
        "type": "impression",
        "timestamp": now_ms,
        "anonymous_id": anonymous_id,
        "campaign_id": campaign_id,
        "ad_id": f"{campaign_id}-a",
        "user_agent": USER_AGENT,
        "ip": "203.0.113.7",
    }
    return anonymous_id.encode(), msgspec.json.encode(event)


async def measure_latency(
    session: aiohttp.ClientSession,
    worker: WorkerProcess,
    topic: str,
    rate: float,
    seconds: float,
) -> Latency:
    campaign_id = f"bench-latency-{uuid.uuid4().hex[:8]}"
    start_ms = time.time_ns() // 1_000_000
    from_ms = start_ms // MINUTE_MS * MINUTE_MS
    to_ms = (start_ms + int((seconds + GRACE_S) * 1000)) // MINUTE_MS * MINUTE_MS + MINUTE_MS
    path = f"/campaigns/{campaign_id}/stats?from={from_ms}&to={to_ms}"
    sent: list[float] = []
    visible: list[float] = []
    finished = asyncio.Event()
    before = Accounting.from_metrics(await worker.metrics(session))
    watcher = asyncio.create_task(_watch(session, worker, path, sent, visible, finished))
    try:
        await _send_paced(worker.bootstrap, topic, campaign_id, rate, seconds, sent)
        finished.set()
        await asyncio.wait_for(asyncio.shield(watcher), GRACE_S)
    except TimeoutError:
        pass  # events never seen are reported as missing
    finally:
        watcher.cancel()
    during = Accounting.from_metrics(await worker.metrics(session)).minus(before)
    latencies = [(v - s) * 1000 for s, v in zip(sent, visible, strict=False)]
    return Latency(campaign_id, rate, len(sent), latencies, during)


async def _send_paced(
    bootstrap: str, topic: str, campaign_id: str, rate: float, seconds: float, sent: list[float]
) -> None:
    """Send ``rate`` events a second for ``seconds``, appending each send time to ``sent``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    try:
        total = max(1, int(rate * seconds))
        started = time.monotonic()
        while len(sent) < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while len(sent) < due:
                key, value = latency_event(campaign_id, len(sent), time.time_ns() // 1_000_000)
                sent.append(time.monotonic())
                await producer.send(topic, value, key=key)
            await asyncio.sleep(SEND_TICK_S)
        await producer.flush()
    finally:
        await producer.stop()


async def _watch(
    session: aiohttp.ClientSession,
    worker: WorkerProcess,
    path: str,
    sent: list[float],
    visible: list[float],
    finished: asyncio.Event,
) -> None:
    """Read the campaign's impressions every 50 ms; mark events visible as the count grows."""
    while not (finished.is_set() and len(visible) >= len(sent)):
        worker.check_alive()
        with contextlib.suppress(aiohttp.ClientError):  # a read that failed is retried
            body = await worker.get_json(session, path)
            seen_at = time.monotonic()
            count = min(int(body["totals"]["impressions"]), len(sent))
            visible.extend([seen_at] * (count - len(visible)))
        await asyncio.sleep(POLL_S)
