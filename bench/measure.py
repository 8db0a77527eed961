"""Throughput figures: the ceiling (a bare decoding consumer), the pipeline, recovery.

Ceiling: one ``AIOKafkaConsumer`` with every raw partition assigned reads the
topic from the start with large ``getmany`` calls and decodes each value with
``msgspec.json.Decoder().decode`` (what ``validate_bytes`` does first), and
nothing else: the most a single Python process gets out of this topic.

Pipeline: a fresh worker is timed from its first ``GET /health`` 200 to the
moment every event is accounted for in every stage: ``received`` equals
``invalid + duplicate + bot + accepted`` equals N on ``/metrics``, and the
consumer groups ``{prefix}-intake`` (the raw topic) and ``{prefix}`` (Faust's)
have committed the end offset of every partition of every topic the app
reads. Faust commits about every 2.8 s, so the drained time includes up to
one commit interval; nothing is subtracted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import astuple, dataclass
from typing import Final

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.worker import WorkerProcess

# Every topic the app reads, by consumer group (suffix of the prefix): the groups'
# lag on these is the backlog. The raw topic is read by the intake's own group.
INPUT_TOPICS: Final = {
    "-intake": ("events.raw",),
    "": ("events.valid", "events.by_campaign", "profiles.in", "segments.deltas"),
}
POLL_S: Final = 0.5
PROGRESS_S: Final = 10.0
_DECODE_ERRORS: Final = (msgspec.MsgspecError, RecursionError, UnicodeDecodeError)


@dataclass(frozen=True)
class Ceiling:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def measure_ceiling(bootstrap: str, topic: str, partitions: int) -> Ceiling:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 2**20,
        fetch_max_bytes=64 * 2**20,
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        started = time.monotonic()
        count = await _decode_until(consumer, ends)
        return Ceiling(count, time.monotonic() - started)
    finally:
        await consumer.stop()


async def _decode_until(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> int:
    decode = msgspec.json.Decoder().decode
    remaining = {tp for tp, end in ends.items() if end > 0}
    count = 0
    while remaining:
        batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
        for tp, records in batches.items():
            for record in records:
                try:  # noqa: SIM105 (contextlib.suppress costs more per record)
                    decode(record.value)
                except _DECODE_ERRORS:
                    pass
            count += len(records)
            if records and records[-1].offset + 1 >= ends[tp]:
                remaining.discard(tp)
    return count


@dataclass(frozen=True)
class Accounting:
    """The contract's accounting, from one scrape of ``/metrics``."""

    received: int
    invalid: int
    duplicate: int
    bot: int
    accepted: int

    @classmethod
    def from_metrics(cls, samples: dict[str, float]) -> Accounting:
        def total(name: str) -> int:
            return int(samples.get(f"dmp_events_{name}_total", 0))

        return cls(*(total(n) for n in ("received", "invalid", "duplicate", "bot", "accepted")))

    def plus(self, other: Accounting) -> Accounting:
        return Accounting(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def minus(self, earlier: Accounting) -> Accounting:
        return Accounting(*(a - b for a, b in zip(astuple(self), astuple(earlier), strict=True)))

    @property
    def balanced(self) -> bool:
        return self.received == self.invalid + self.duplicate + self.bot + self.accepted


@dataclass(frozen=True)
class Pipeline:
    events: int
    accounted_s: float  # ready → received == N == invalid + duplicate + bot + accepted
    drained_s: float  # ready → that, and the group's lag 0 on every input topic
    accounting: Accounting

    @property
    def rate(self) -> float:
        return self.events / self.drained_s


class GroupLag:
    """The consumer groups' lag (end offset minus committed offset) on the app's input topics."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        self._groups = {
            f"{prefix}{suffix}": [
                TopicPartition(f"{prefix}.{name}", p) for name in names for p in range(partitions)
            ]
            for suffix, names in INPUT_TOPICS.items()
        }
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> GroupLag:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def by_topic(self) -> dict[str, int]:
        lag: dict[str, int] = {}
        for group, partitions in self._groups.items():
            committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
            ends = await self._consumer.end_offsets(partitions)
            for tp, end in ends.items():
                done = committed[tp].offset if tp in committed else -1
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - max(done, 0))
        return lag


async def measure_pipeline(
    session: aiohttp.ClientSession,
    worker: WorkerProcess,
    events: int,
    ready_at: float,
    timeout_s: float,
    stall_s: float,
) -> Pipeline:
    """Poll ``/metrics`` and the group's lag every 0.5 s until both say "all done"."""
    accounted_at: float | None = None
    watch = _Progress(ready_at, stall_s)
    async with GroupLag(worker.bootstrap, worker.prefix, worker.partitions) as group:
        while True:
            worker.check_alive()
            accounting = Accounting.from_metrics(await worker.metrics(session))
            lag = await group.by_topic()
            now = time.monotonic()
            done = accounting.balanced and accounting.received >= events
            if done and accounted_at is None:
                accounted_at = now
            if accounted_at is not None and done and not any(lag.values()):
                return Pipeline(events, accounted_at - ready_at, now - ready_at, accounting)
            watch.update(now, accounting, lag, timeout_s)
            await asyncio.sleep(POLL_S)


class _Progress:
    """A progress line every 10 s on stderr; raises on timeout or when nothing moves."""

    def __init__(self, ready_at: float, stall_s: float) -> None:
        self._ready_at, self._stall_s = ready_at, stall_s
        self._last: tuple[int, int] | None = None
        self._moved_at = self._shown_at = ready_at

    def update(
        self, now: float, accounting: Accounting, lag: dict[str, int], timeout_s: float
    ) -> None:
        signature = (accounting.received, sum(lag.values()))
        if signature != self._last:
            self._last, self._moved_at = signature, now
        elapsed = now - self._ready_at
        if now - self._shown_at >= PROGRESS_S:
            self._shown_at = now
            backlog = ", ".join(f"{t.split('.', 1)[1]} {n}" for t, n in lag.items() if n)
            print(
                f"bench:   {elapsed:6.0f} s  received {accounting.received}  "
                f"({accounting.received / elapsed:.0f} ev/s)  lag: {backlog or 'none'}",
                file=sys.stderr,
                flush=True,
            )
        if elapsed > timeout_s:
            raise TimeoutError(
                f"pipeline not drained after {timeout_s:g} s: {accounting}, lag {lag}"
            )
        if now - self._moved_at > self._stall_s:
            raise TimeoutError(f"pipeline stalled for {self._stall_s:g} s: {accounting}, lag {lag}")


async def measure_recovery(
    session: aiohttp.ClientSession, worker: WorkerProcess, timeout_s: float
) -> float:
    """``kill -9`` the worker, start it again on the same data directory and port;
    seconds from the restart to its first ``GET /health`` 200."""
    worker.kill()
    began = time.monotonic()
    worker.start()
    return await worker.wait_healthy(session, timeout_s) - began
