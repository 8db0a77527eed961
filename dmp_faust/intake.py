"""Reading the raw topic below Faust: one aiokafka consumer, whole fetches at a time.

The raw topic holds one event per record, so Faust's per-record machinery (a
thread hop, the conductor, a stream event, sensors, an ack) would cost more
than validating the event. :class:`Intake` reads it the way a plain Kafka
consumer does (``getmany``), in a consumer group of its own
(``<app id>-intake``), and hands each fetch to a handler, which returns once
everything it sent has been acknowledged. The offsets of handled fetches are
committed every second, and before a rebalance takes partitions away or the
worker stops (at-least-once: a crash reads the last second's fetches again).

The handler keeps per-partition state, the partition's stream time; it is
committed as the offset's metadata, in the same request as the offset, so a
partition's next owner resumes with exactly the stream time that goes with
the offset it resumes from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service

from dmp_faust.settings import Settings
from dmp_faust.stages import crashes

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 1.0
INTAKES: list[Intake] = []  # every intake created, for dmp_stage_lag (agents/lag.py)

Records = dict[TopicPartition, list[Any]]  # a fetch: aiokafka ConsumerRecords by partition
# Called with a fetch and the stream times of its partitions (None: unknown yet);
# returns the partitions' new stream times once all it sent was acknowledged.
Handler = Callable[[Records, dict[int, int | None]], Awaitable[dict[int, int]]]


def encode_state(stream_time: int | None) -> str:
    return "" if stream_time is None else str(stream_time)


def decode_state(metadata: str | None) -> int | None:
    return int(metadata) if metadata and metadata.isdigit() else None


class Intake(Service):
    """Consumes ``topic`` in fetches of at most ``max_records`` and runs ``handler`` on each."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        handler: Handler,
        max_records: int,
        stage: str = "intake",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stage = stage  # its name in /health
        self.settings = settings
        self.topic = topic
        self.handler = handler
        self.max_records = max_records
        self.group_id = f"{settings.app_id}-intake"
        self._stream_times: dict[int, int | None] = {}
        self._handled: dict[TopicPartition, int] = {}  # next offset, not committed yet
        self._next: dict[TopicPartition, int] = {}  # next offset, committed or not
        self._commit_due = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        # Held from a fetch's handling to its bookkeeping; a rebalance waits for it.
        self._busy = asyncio.Lock()
        INTAKES.append(self)

    def _client_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.kafka_bootstrap, **self.settings.kafka_auth()}

    async def on_start(self) -> None:
        session_ms = self.settings.session_timeout_s * 1000
        self._consumer = AIOKafkaConsumer(
            **self._client_options(),
            group_id=self.group_id,
            client_id=f"{self.group_id}-{self.settings.web_port}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 3),
            isolation_level=self.settings.isolation_level,
        )
        self._consumer.subscribe([self.topic], listener=_CommitFirst(self))
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            async with self._busy:
                await self.commit()
            await self._consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.should_stop:
            fetch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            async with self._busy:
                if fetch:
                    try:
                        await self._handle(fetch)
                    except Exception as exc:  # the service crashes, for good: /health says so
                        crashes.record(self.stage, exc, fatal=True)
                        raise
                if time.monotonic() >= self._commit_due:
                    await self.commit()

    async def _handle(self, fetch: Records) -> None:
        await self._load_stream_times(
            [tp for tp in fetch if tp.partition not in self._stream_times]
        )
        known = {tp.partition: self._stream_times.get(tp.partition) for tp in fetch}
        self._stream_times.update(await self.handler(fetch, known))
        for tp, records in fetch.items():
            self._handled[tp] = self._next[tp] = records[-1].offset + 1

    async def commit(self) -> None:
        """Commit the handled offsets, each with its partition's stream time."""
        self._commit_due = time.monotonic() + COMMIT_EVERY_S
        if not self._handled or self._consumer is None:
            return
        offsets = {
            tp: (offset, encode_state(self._stream_times.get(tp.partition)))
            for tp, offset in self._handled.items()
        }
        self._handled = {}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on without us (e.g. our session expired): the partitions'
            # new owner reads these fetches again, and de-duplication drops the copies.
            log.warning("intake: commit refused after a rebalance (%s)", exc)
            self._stream_times.clear()

    async def before_revoke(self, revoked: list[TopicPartition]) -> None:
        """Wait for the fetch in hand, commit what was handled, and drop the revoked
        partitions' state: their next owner reads it from the commit."""
        async with self._busy:
            await self.commit()
            for tp in revoked:
                self._stream_times.pop(tp.partition, None)
                self._next.pop(tp, None)

    async def offsets(self) -> dict[int, tuple[int, int, int]]:
        """(next offset to handle, log start, log end) of each partition assigned here:
        after the last record handled, or, with none handled since the assignment, the
        consumer's position (where it resumed, its committed offset)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        tps = list(consumer.assignment())
        if not tps:
            return {}
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        found = {}
        for tp in tps:
            following = self._next.get(tp)
            if following is None:
                try:
                    following = await consumer.position(tp)
                except IllegalStateError:  # revoked meanwhile
                    continue
            found[tp.partition] = (following, starts[tp], ends[tp])
        return found

    async def _load_stream_times(self, tps: list[TopicPartition]) -> None:
        """The stream times committed with the offsets of newly assigned partitions."""
        if not tps:
            return
        while True:
            admin = AIOKafkaAdminClient(**self._client_options())
            try:
                await admin.start()
                committed = await admin.list_consumer_group_offsets(self.group_id, partitions=tps)
                break
            except KafkaError as exc:  # the broker is away: without these, wait for it
                log.warning("intake: cannot read committed stream times (%s); retrying", exc)
                await asyncio.sleep(1)
            finally:
                await admin.close()
        for tp in tps:
            found = committed.get(tp)
            self._stream_times[tp.partition] = decode_state(found.metadata if found else None)


class _CommitFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the intake commit before a rebalance takes partitions away."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.intake.before_revoke(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
