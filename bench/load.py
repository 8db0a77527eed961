"""Create the app's topics, then load the raw topic as fast as the producer goes.

The events come from the generator's pure core (:func:`generate_events`): the
same realistic mix ``make demo`` sends (page views, impressions, clicks,
conversions, identifies, ~1 % invalid over every collector reason, ~1 %
duplicates, ~2 % crawlers), event times from 2021-03-01 advancing 1 ms per
event. They are appended to aiokafka batch builders, one per partition, and
each full batch is handed over with ``send_batch``: no per-event future, no
per-event await. The Kafka record timestamp is left to the producer's clock:
a 2021 record timestamp would let the broker delete the topic's segments by
retention at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from bench.config import PROJECT, BenchConfig
from dmp_faust.generator import Generated, MixConfig, generate_events

START_MS: Final = 1_614_556_800_000  # 2021-03-01T00:00:00Z
STEP_MS: Final = 1.0
BATCH_BYTES: Final = 512 * 1024  # below the broker's 1 MiB message.max.bytes


@dataclass(frozen=True)
class LoadResult:
    events: int
    total_bytes: int
    seconds: float
    kinds: dict[str, int]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def mean_bytes(self) -> float:
        return self.total_bytes / self.events


def provision(bootstrap: str, prefix: str, partitions: int, data_dir: Path) -> None:
    """Create every topic and changelog of the app, as a worker would before starting.

    Runs in a child process: :mod:`dmp_faust.app` reads its settings when it is imported.
    """
    env = {
        **os.environ,
        "DMP_KAFKA_BOOTSTRAP": bootstrap,
        "DMP_TOPIC_PREFIX": prefix,
        "DMP_PARTITIONS": str(partitions),
        "DMP_DATA_DIR": str(data_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.provision"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise RuntimeError(f"provisioning topics failed:\n{done.stdout}{done.stderr}")


def bench_events(config: BenchConfig, now_ms: int, count: int | None = None) -> Iterable[Generated]:
    """``count`` (default ``BENCH_EVENTS``) events of the run's mix, from its seed."""
    mix = MixConfig(campaigns=config.campaigns, users=config.profiles)
    rng = random.Random(config.seed)
    return generate_events(rng, count or config.events, START_MS, STEP_MS, mix, now_ms)


def audience_events(count: int, ts_ms: int) -> Iterable[Generated]:
    """One page view each from ``count`` visitors never seen before: ``count`` new profiles."""
    for n in range(count):
        visitor = f"aud-{n:07d}"
        value = msgspec.json.encode(
            {
                "event_id": f"{visitor}-1",
                "type": "page_view",
                "timestamp": ts_ms,
                "anonymous_id": visitor,
                "url": f"https://news.example/topic{n % 50}/a{n}",
            }
        )
        yield Generated(visitor.encode(), value, "valid")


async def load_events(bootstrap: str, topic: str, events: Iterable[Generated]) -> LoadResult:
    # Just after the topic is created, a partition's leader may still be taking over and
    # refuse the first batches (NotLeaderForPartition); the sender retries them, and a
    # batch that finally fails still raises below. Its warning for each retry is noise here.
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=50,
        max_batch_size=BATCH_BYTES,
        max_request_size=4 * BATCH_BYTES,
        request_timeout_ms=120_000,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        started = time.monotonic()
        sink = _BatchSink(producer, topic, partitions)
        for item in events:
            await sink.append(item)
        await sink.close()
        seconds = time.monotonic() - started
    finally:
        await producer.stop()
    return LoadResult(sink.count, sink.total_bytes, seconds, dict(sink.kinds))


class _BatchSink:
    """One open batch per partition; a full one is sent and a new one begun."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: list[int]) -> None:
        self._producer, self._topic, self._partitions = producer, topic, partitions
        self._partitioner = DefaultPartitioner()
        self._open: dict[int, Any] = {}
        self._sent: list[asyncio.Future[Any]] = []
        self.count, self.total_bytes, self.kinds = 0, 0, Counter[str]()

    async def append(self, item: Generated) -> None:
        partition = self._partitioner(item.key, self._partitions, self._partitions)
        batch = self._open.get(partition)
        if batch is None or batch.append(timestamp=None, key=item.key, value=item.value) is None:
            if batch is not None:
                await self._send(partition, batch)
            batch = self._open[partition] = self._producer.create_batch()
            if batch.append(timestamp=None, key=item.key, value=item.value) is None:
                raise RuntimeError(f"a {len(item.value)}-byte event does not fit a batch")
        self.count += 1
        self.total_bytes += len(item.value)
        self.kinds[item.kind] += 1

    async def close(self) -> None:
        for partition, batch in self._open.items():
            await self._send(partition, batch)
        self._open.clear()
        await asyncio.gather(*self._sent)  # raises the first delivery error

    async def _send(self, partition: int, batch: Any) -> None:
        batch.close()
        future = await self._producer.send_batch(batch, self._topic, partition=partition)
        self._sent.append(future)
