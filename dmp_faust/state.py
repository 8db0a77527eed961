"""Table helpers shared by the agents: stream time and expiry sweeps.

Both work on one partition at a time: the partition of the input records a
stage is handling, whose table partitions have the same number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from dmp_faust.domain.batches import batch_length
from dmp_faust.domain.stalls import quiet_partitions, unread_tails
from dmp_faust.domain.windows import advance_stream_time
from dmp_faust.fence import Fenced

log = logging.getLogger(__name__)

# Most items a stage handles between two write phases (see runs). A take of 64 batch
# records can hold 10^5 commands or more; handled at once, they would hold every write
# back for seconds, in memory, on a worker that may have lost its partitions meanwhile.
TAKE_ITEMS = 16_384
# How long the input gate waits in one fetch, and between "still waiting" warnings.
READ_WAIT_MS = 1000
READ_PATIENCE_S = 30.0
# How long a stage has to wait with nothing arriving from a partition before it asks
# Kafka whether records of it are left that Faust will not deliver
# (dmp_faust.domain.stalls); also the longest it waits for a take before it looks.
QUIET_S = 2.0
# Longest wait for the end offsets of a stage's partitions; unanswered, the next check asks.
END_WAIT_S = 5.0

T = TypeVar("T")


def encode_int(value: int) -> bytes:
    return str(value).encode()


def decode_int(raw: bytes | None) -> int | None:
    return int(raw) if raw else None


def header(headers: Any, name: str) -> bytes:
    """The value of Kafka header ``name`` (aiokafka gives a list of pairs), or b""."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        if key == name:
            return bytes(value)
    return b""


def runs(events: list[Any], max_items: int = TAKE_ITEMS) -> Iterator[list[Any]]:
    """``events`` (batch records, in the order they are to be handled) as consecutive
    runs of at most ``max_items`` items; a record holding more goes alone.

    A stage handles each run as a take of its own: reads, folds, sends, writes
    its tables and its gate. Within a run it yields to the event loop after each
    record (at most :data:`~dmp_faust.domain.batches.MAX_ITEMS` items and 512 KiB),
    so heartbeats, the web server and the intake keep their turn.
    """
    run: list[Any] = []
    items = 0
    for event in events:
        length = batch_length(event.value)
        if run and items + length > max_items:
            yield run
            run, items = [], 0
        run.append(event)
        items += length
    if run:
        yield run


async def take_runs(
    stage: str, ordered: list[Any], take: Callable[[list[Any]], Awaitable[None]]
) -> None:
    """Hand ``take`` each run of ``ordered`` (see :func:`runs`), each written before the
    next. A take the fence stops (:class:`dmp_faust.fence.Fenced`: this worker may have
    lost its partitions) ends the rest unwritten: their owner reads them again."""
    for run in runs(ordered):
        try:
            await take(run)
        except Fenced as exc:
            log.warning("%s: take abandoned, the rest unwritten: %s", stage, exc)
            return


async def with_quiet_ticks(
    takes: AsyncIterator[T], quiet_s: float, ready: Callable[[], bool] = lambda: False
) -> AsyncIterator[T | None]:
    """Each item of ``takes`` as it comes, and None whenever none came for ``quiet_s``
    (at once, while ``ready()`` says there is something else to do).

    A Faust take (``stream.take_events``) yields only when records arrive: a stage
    waiting in it cannot notice that none do. So the next take is awaited in a task
    of its own, with a bound, and the stage's own loop gets the turn in between: what
    it does then runs between two takes, never beside one.
    """
    pending = asyncio.ensure_future(_next(takes))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=0 if ready() else quiet_s)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(_next(takes))
    finally:
        pending.cancel()


async def _next(items: AsyncIterator[T]) -> T:
    return await anext(items)


class Store(Protocol):
    """A batch's view of one table partition (:class:`dmp_faust.bulk.TableWrites`)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes | None) -> None: ...


class StreamClock:
    """Stream time of one pipeline stage, per partition, kept in a table.

    Kept in a table rather than only in memory so that it survives restarts
    and moves with its partition to whichever worker owns it next. It is read
    and written through the batch's writes of the ``stream_times`` partition
    with the same number as the stage's input partition, so it is stored once
    per batch, with the batch's other writes.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def key(self, partition: int) -> bytes:
        return f"{self.stage}:{partition}".encode()

    def get(self, store: Store, partition: int) -> int | None:
        return decode_int(store.get(self.key(partition)))

    def advance(self, store: Store, partition: int, ts_ms: int) -> int:
        """Take ``ts_ms`` into account; return the partition's stream time."""
        known = self.get(store, partition)
        new = advance_stream_time(known, ts_ms)
        if new != known:
            store.put(self.key(partition), encode_int(new))
        return new


ExpiredFn = Callable[[bytes, bytes, int], bool]
# Faust keeps the changelog offset of each partition's RocksDB under a key of its
# own (``__faust\0offset__``) in the same database as the table's keys.
FAUST_KEY_PREFIX = b"__faust"


class Sweeper:
    """Finds a table's expired keys a slice at a time, for an agent to delete.

    Every ``every`` events of a partition, the next ``scan`` keys of that
    partition's RocksDB are read from a cursor and those for which
    ``is_expired(key, value, stream_time)`` holds are returned, for the agent
    to delete (with a changelog tombstone). The cost per event stays constant and a full pass
    over a partition of ``n`` keys takes ``n * every / scan`` events. The
    cursor is memory only: after a restart a pass starts again from the top.
    """

    def __init__(self, table: Any, is_expired: ExpiredFn, every: int = 500, scan: int = 500):
        self.table = table
        self.is_expired = is_expired
        self.every = every
        self.scan = scan
        self._countdown: defaultdict[int, int] = defaultdict(int)
        self._cursor: dict[int, bytes | None] = {}

    def tick(self, partition: int, stream_time: int, store: Store) -> list[bytes]:
        """Count one event of ``partition``; when a slice is due, return its expired keys.

        The slice is read from RocksDB, which does not hold what the take wrote
        so far, so each key found expired there is judged again by its value in
        ``store``, the take's own view of the partition: a key the take wrote
        anew (an event id seen again after the horizon) is not expired, and
        one it deleted already is not returned. The caller deletes the keys,
        with the writes of the batch it is handling.
        """
        self._countdown[partition] += 1
        if self._countdown[partition] < self.every:
            return []
        self._countdown[partition] = 0
        return [
            key
            for key in self._scan(partition, stream_time)
            if (value := store.get(key)) is not None and self.is_expired(key, value, stream_time)
        ]

    def _scan(self, partition: int, stream_time: int) -> list[bytes]:
        db = self.table.data._db_for_partition(partition)  # Faust's RocksDB store
        expired: list[bytes] = []
        items = db.items(from_key=self._cursor.get(partition))
        for seen, (key, value) in enumerate(items):
            if seen == self.scan:
                self._cursor[partition] = key
                break
            if key.startswith(FAUST_KEY_PREFIX):  # Faust's own bookkeeping, not table data
                continue
            if self.is_expired(key, value, stream_time):
                expired.append(key)
        else:
            self._cursor[partition] = None
        return expired


class Commits:
    """Faust's commits, made to follow the stages' own next offsets.

    Faust commits, per partition, the offsets it acknowledged in a row since its
    last commit. The records an :class:`InputGate` read itself (holes, tails)
    were never Faust's to acknowledge, and a gap it is told of counts only below
    an offset it acknowledged later: so after a tail read, its committed offset
    stopped where Faust's deliveries stopped, and consumer lag showed records
    processed long ago. Telling it of the whole range instead would count its own
    acknowledgements twice, and a run with a repeated offset ends there.

    So Faust's choice of the offset to commit (``_new_offset``) is wrapped: it
    commits the stage's next offset where that is further. That offset is safe:
    the stage wrote it after its output and its tables (rule 1 of
    docs/RELIABILITY.md). A partition no longer assigned is left to its owner.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.following: dict[Any, int] = {}  # partition -> the stage's next offset
        self._faust_new_offset = consumer._new_offset
        consumer._new_offset = self._new_offset

    @classmethod
    def of(cls, consumer: Any) -> Commits:
        """The consumer's, made on first use."""
        commits = getattr(consumer, "_dmp_commits", None)
        if commits is None:
            commits = consumer._dmp_commits = cls(consumer)
        return commits

    def done(self, tp: Any, following: int) -> None:
        """The stage has processed every record of ``tp`` below ``following``."""
        if tp in self.consumer.assignment():
            self.following[tp] = following
            # Faust looks for offsets to commit only in partitions it has acks of.
            self.consumer._acked.setdefault(tp, [])
        else:
            self.following.pop(tp, None)

    def _new_offset(self, tp: Any) -> int | None:
        offset = self._faust_new_offset(tp)
        following = self.following.get(tp)
        if following is None or (offset is not None and offset >= following):
            return offset
        if tp not in self.consumer.assignment():
            del self.following[tp]
            return offset
        # Faust's acknowledgements below it are committed with it.
        acked, index = self.consumer._acked[tp], self.consumer._acked_index[tp]
        acked[:] = [o for o in acked if o >= following]
        index.difference_update([o for o in index if o < following])
        return following


class InputGate:
    """Hands a stage each input record once, in offset order, whatever Faust delivers.

    Faust 0.15 can hand an agent a partition's records with a hole in them
    after a rebalance or a restart (queued records are dropped and the seek
    back fails), and commit past the hole: those records would never be
    processed. So each stage keeps, per input partition, the offset of the
    next record it has to process, in its ``stream_times`` partition, written
    after the batch's other tables. :meth:`complete` drops what is below it
    (processed already) and reads a hole straight from Kafka with a consumer
    of its own, so the stage sees every record exactly in order.
    """

    def __init__(self, stage: str, topic: Any, settings: Any) -> None:
        self.stage = stage
        self.topic = topic
        self.settings = settings
        self._reader: Any = None
        self._last_seen: dict[int, float] = {}  # partition -> when Faust last delivered some
        self._busy_s = 0.0  # time the stage spent on what it was given (see _clock)
        self._checked_at = float("-inf")
        self._more = False  # the last check left records unread: check again at once
        # per partition, a tail (first, end) whose read found nothing (retention deleted
        # it): not read again until the next offset or the end moves
        self._barren: dict[int, tuple[int, int]] = {}

    def key(self, partition: int) -> bytes:
        return f"{self.stage}:next:{partition}".encode()

    def expected(self, store: Store, partition: int) -> int | None:
        """The next offset the stage has to process (None: it never processed any)."""
        return decode_int(store.get(self.key(partition)))

    def done(self, store: Store, partition: int, last_offset: int) -> None:
        """Record that the partition's records up to ``last_offset`` are processed."""
        store.put(self.key(partition), encode_int(last_offset + 1))

    async def complete(
        self, events: list[Any], expected: Callable[[int], int | None], consumer: Any
    ) -> list[Any]:
        """``events`` in offset order per partition, without those processed already,
        and with the records of any hole read from Kafka and put in their place.

        Faust's ``consumer`` is told that a hole's offsets are done, or it would
        never commit past them again (it commits acknowledged offsets in a row).
        """
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        ordered: list[Any] = []
        for partition, taken in by_partition.items():
            self._last_seen[partition] = self._clock()
            taken.sort(key=lambda event: event.message.offset)
            following = expected(partition)
            if following is None:
                # Nothing processed here yet: all of the partition is due, from the start
                # of its log, wherever Faust starts (after a rebalance it can drop the
                # first records it had queued; with no next offset, that hole would pass).
                following = await self._log_start(partition)
            tp = TopicPartition(self.topic.get_topic_name(), partition)
            if following is not None and taken[0].message.offset != following:
                # Faust skipped or repeated records: whatever it never delivered below
                # the next offset is done too, or its commits would stop at the hole.
                await consumer._add_gap(tp, 0, following - 1)
            for event in taken:
                offset = event.message.offset
                if following is not None and offset < following:
                    continue  # processed already
                if following is not None and offset > following:
                    log.warning(
                        "%s: partition %d jumped from offset %d to %d; reading the hole",
                        self.stage,
                        partition,
                        following,
                        offset,
                    )
                    ordered += await self._read(partition, following, offset)
                    await consumer._add_gap(tp, following, offset - 1)  # Faust's own hole list
                ordered.append(event)
                following = offset + 1
        return ordered

    async def takes(
        self,
        takes: AsyncIterator[list[Any]],
        expected: Callable[[int], int | None],
        consumer: Any,
        assigned: Callable[[], Iterable[int]],
        max_records: int,
    ) -> AsyncIterator[list[Any]]:
        """What the stage is to process, one take after another: each of Faust's
        ``takes`` through :meth:`complete`, and, every :data:`QUIET_S` at most, the
        records Faust left behind at the end of a partition (:meth:`unread`), at most
        ``max_records`` at a time. ``assigned`` gives the partitions to check (none
        while a rebalance is on)."""
        # Closed with this generator (an agent that crashed or stopped), not whenever
        # it is collected: its task would go on taking records from the stream.
        async with aclosing(with_quiet_ticks(takes, QUIET_S, lambda: self._more)) as ticks:
            async for events in ticks:
                away = time.monotonic()
                if events:
                    ordered = await self.complete(events, expected, consumer)
                    yield ordered
                    self.follow(ordered, expected, consumer)
                self._busy_s += time.monotonic() - away
                if self._more or self._clock() - self._checked_at >= QUIET_S:
                    away = time.monotonic()
                    self._checked_at = self._clock()
                    found = await self.unread(assigned(), expected, consumer, max_records)
                    self._more = bool(found)
                    if found:
                        yield found
                        self.follow(found, expected, consumer)
                    self._busy_s += time.monotonic() - away

    def follow(
        self, taken: list[Any], expected: Callable[[int], int | None], consumer: Any
    ) -> None:
        """Once a take is processed (the stage's next offsets written), let Faust
        commit up to the next offset of each of its partitions (:class:`Commits`)."""
        commits = Commits.of(consumer)
        name = self.topic.get_topic_name()
        for partition in {event.message.partition for event in taken}:
            following = expected(partition)
            if following is not None:
                commits.done(TopicPartition(name, partition), following)

    def _clock(self) -> float:
        """Seconds that pass only while the stage waits for Faust's next take.

        A partition is quiet when nothing arrived from it while the stage was ready
        for it: records that waited in Faust while the stage was busy with a long
        take did arrive in time, and reading them from Kafka would be wasted.
        """
        return time.monotonic() - self._busy_s

    async def unread(
        self,
        assigned: Iterable[int],
        expected: Callable[[int], int | None],
        consumer: Any,
        max_records: int,
    ) -> list[Any]:
        """Records of ``assigned`` partitions that nothing arrived from for
        :data:`QUIET_S` of waiting (see :meth:`_clock`) and that lie between the
        stage's next offset and the partition's end, read from Kafka (see
        :mod:`dmp_faust.domain.stalls`): records Faust fetched, dropped, and will
        not fetch again. In offset order per partition, at most ``max_records`` in
        all; Faust's ``consumer`` is told they are done, as for any hole."""
        quiet = quiet_partitions(assigned, self._last_seen, self._clock(), QUIET_S)
        ends = await self._ends(quiet) if quiet else {}
        if not ends:
            return []
        firsts = {}
        for partition in ends:
            following = expected(partition)
            firsts[partition] = (
                following if following is not None else await self._log_start(partition)
            )
        records: list[Any] = []
        for partition, (first, stop) in unread_tails(firsts, ends, max_records).items():
            if self._barren.get(partition) == (first, ends[partition]):
                continue
            log.warning(
                "%s: partition %d: nothing arrived for %.0f s and records %d..%d are unread "
                "(the end is at %d); reading them",
                self.stage,
                partition,
                QUIET_S,
                first,
                stop - 1,
                ends[partition],
            )
            read = await self._read(partition, first, stop)
            if not read:
                self._barren[partition] = (first, ends[partition])
            records += read
            tp = TopicPartition(self.topic.get_topic_name(), partition)
            await consumer._add_gap(tp, first, stop - 1)
        return records

    async def _ends(self, partitions: list[int]) -> dict[int, int]:
        """The end offsets of ``partitions`` (none if Kafka does not answer in time)."""
        reader = await self._started_reader()
        name = self.topic.get_topic_name()
        tps = [TopicPartition(name, partition) for partition in partitions]
        try:
            ends = await asyncio.wait_for(reader.end_offsets(tps), END_WAIT_S)
        except (KafkaError, TimeoutError) as exc:
            log.warning("%s: cannot read the end offsets of its partitions (%r)", self.stage, exc)
            return {}
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def _log_start(self, partition: int) -> int:
        """The first offset Kafka still has of ``partition`` (0 until retention deletes)."""
        reader = await self._started_reader()
        tp = TopicPartition(self.topic.get_topic_name(), partition)
        while True:
            try:
                return int((await reader.beginning_offsets([tp]))[tp])
            except KafkaError as exc:  # the broker is away: without it, wait for it
                log.warning(
                    "%s: cannot read the start of partition %d (%s)", self.stage, partition, exc
                )
                await asyncio.sleep(READ_WAIT_MS / 1000)

    async def _read(self, partition: int, start: int, stop: int) -> list[Any]:
        """Records ``start`` to ``stop - 1`` of the partition, as Faust-like events.

        Waits for them as long as it takes: the broker may be down or moving the
        partition's leadership, and records not read here are never processed. Only
        records Kafka itself no longer has (below the log start offset, deleted by
        retention) are given up, with an error in the log.
        """
        reader = await self._started_reader()
        tp = TopicPartition(self.topic.get_topic_name(), partition)
        reader.assign([tp])
        reader.seek(tp, start)
        records: list[Any] = []
        waited = 0.0
        # The position, not the last record: transaction markers take offsets too.
        while await reader.position(tp) < stop:
            fetched = (await reader.getmany(tp, timeout_ms=READ_WAIT_MS)).get(tp, [])
            records += [record for record in fetched if record.offset < stop]
            waited = 0.0 if fetched else waited + READ_WAIT_MS / 1000
            if waited >= READ_PATIENCE_S:
                log.warning(
                    "%s: still waiting for records %d..%d of partition %d (%.0f s)",
                    self.stage,
                    start,
                    stop - 1,
                    partition,
                    waited,
                )
                waited = 0.0
        first = records[0].offset if records else stop
        if first > start:
            log.error(
                "%s: records %d..%d of partition %d are gone (retention); going on",
                self.stage,
                start,
                first - 1,
                partition,
            )
        return [_Fetched(record) for record in records]

    async def _started_reader(self) -> Any:
        """The gate's consumer, started; while the broker is unreachable, retried."""
        while self._reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                enable_auto_commit=False,
                # Below the log start, start at the log start: what is left of the hole.
                auto_offset_reset="earliest",
                isolation_level=self.settings.isolation_level,
                **self.settings.kafka_auth(),
            )
            try:
                await reader.start()
            except KafkaError as exc:
                log.warning("%s: cannot reach Kafka to read a hole (%s); retrying", self.stage, exc)
                await reader.stop()
                await asyncio.sleep(READ_WAIT_MS / 1000)
            else:
                self._reader = reader
        return self._reader


class _Fetched:
    """A record read by :class:`InputGate` itself, shaped like a Faust event."""

    def __init__(self, record: Any) -> None:
        self.message = record
        self.value = record.value
