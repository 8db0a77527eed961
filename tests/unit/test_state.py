"""Stream clocks and expiry sweeps over a stand-in for Faust's table and RocksDB store."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.transport.consumer import Consumer as FaustConsumer
from intervaltree import IntervalTree

from dmp_faust import state
from dmp_faust.domain.batches import DeltaItem, encode_batch
from dmp_faust.state import (
    FAUST_KEY_PREFIX,
    InputGate,
    StreamClock,
    Sweeper,
    runs,
    with_quiet_ticks,
)


class FakeDB:
    """Ordered keys, like a RocksDB iterator; enough of rocksdict's ``items``."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def items(self, from_key: bytes | None = None) -> list[tuple[bytes, bytes]]:
        return [(k, self.data[k]) for k in sorted(self.data) if from_key is None or k >= from_key]


class FakeTable(dict[Any, Any]):
    def __init__(self, db: FakeDB) -> None:
        super().__init__()
        self.db = db
        self.data = self  # Faust: table.data is the store

    def _db_for_partition(self, partition: int) -> FakeDB:
        return self.db

    def sweep(self, sweeper: Sweeper, partition: int, stream_time: int) -> int:
        """One tick, deleting what it returns as the agents do; how many keys went."""
        expired = sweeper.tick(partition, stream_time, Pending(self.db.data))
        for key in expired:
            del self.db.data[key]
        return len(expired)


class Pending:
    """A take's view of a partition: its own writes over what RocksDB holds."""

    def __init__(self, stored: dict[bytes, bytes], writes: dict[bytes, bytes | None] | None = None):
        self.stored = stored
        self.writes = writes or {}

    def get(self, key: bytes) -> bytes | None:
        return self.writes[key] if key in self.writes else self.stored.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.writes[key] = value


def expired_if_old(key: bytes, value: bytes, stream_time: int) -> bool:
    """Expired when the value (a first-seen time, as de-duplication keeps) is old."""
    return int(value) < stream_time - 10


def test_sweeper_judges_a_key_by_the_takes_own_write_not_by_rocksdb() -> None:
    """An id seen again after the horizon is written anew by the take; RocksDB still
    holds its old sighting. Deleting it would let a third copy count as new."""
    db = FakeDB({b"again": b"0", b"old": b"0", b"deleted": b"0", b"fresh": b"95"})
    sweeper = Sweeper(FakeTable(db), expired_if_old, every=1, scan=10)
    take = Pending(db.data, {b"again": b"100", b"deleted": None})
    assert sweeper.tick(0, 100, take) == [b"old"]


def expired_if_small(key: bytes, value: bytes, stream_time: int) -> bool:
    """Like the real predicates, it can only parse the table's own keys."""
    return int(key.decode()[1:]) < stream_time


def test_sweeper_deletes_expired_keys_a_slice_at_a_time_and_skips_faust_keys() -> None:
    offset_key = FAUST_KEY_PREFIX + b"\x00offset__"
    db = FakeDB(
        {offset_key: b"12345", **{f"k{i:03d}".encode(): str(i).encode() for i in range(10)}}
    )
    table = FakeTable(db)
    sweeper = Sweeper(table, expired_if_small, every=2, scan=4)
    deleted = [table.sweep(sweeper, 0, stream_time=5) for _ in range(8)]
    # every 2nd tick scans 4 keys from a cursor: the first slice holds the offset key
    assert deleted == [0, 3, 0, 2, 0, 0, 0, 0]
    assert sorted(db.data) == [offset_key] + [f"k{i:03d}".encode() for i in range(5, 10)]


def test_sweeper_restarts_its_pass_after_the_last_key() -> None:
    db = FakeDB({b"a1": b"", b"b9": b""})
    table = FakeTable(db)
    sweeper = Sweeper(table, expired_if_small, every=1, scan=10)
    assert table.sweep(sweeper, 3, stream_time=5) == 1
    db.data[b"c2"] = b""
    assert table.sweep(sweeper, 3, stream_time=5) == 1  # from the top again
    assert sorted(db.data) == [b"b9"]


class StoredTimes(dict[bytes, bytes]):
    """A table partition as a batch sees it (``get``/``put``), counting writes."""

    writes = 0

    def put(self, key: bytes, value: bytes | None) -> None:
        self.writes += 1
        assert value is not None
        self[key] = value


@pytest.mark.parametrize(
    ("times", "expected", "writes"),
    [
        ([1_000, 1_500, 1_200], 1_500, 2),
        ([5_000, 1_000], 5_000, 1),  # stream time never goes back, nor is written again
        ([7_000], 7_000, 1),
    ],
)
def test_stream_clock_keeps_the_maximum_and_writes_only_when_it_moves(
    times: list[int], expected: int, writes: int
) -> None:
    store = StoredTimes()
    clock = StreamClock("stage")
    for ts in times:
        last = clock.advance(store, 2, ts)
    assert last == expected == clock.get(store, 2)
    assert store.writes == writes
    assert store == {b"stage:2": str(expected).encode()}
    # a new process (or the partition's next owner) reads exactly what was stored
    assert StreamClock("stage").get(store, 2) == expected
    assert StreamClock("stage").get(store, 3) is None


class Message:
    def __init__(self, partition: int, offset: int) -> None:
        self.partition, self.offset, self.value, self.headers = partition, offset, b"", []


class Event:
    def __init__(self, partition: int, offset: int) -> None:
        self.message = Message(partition, offset)
        self.value = b""


class FakeTopic:
    def get_topic_name(self) -> str:
        return "t.in"


class FakeConsumer:
    """Faust's consumer, as far as the gate uses it: its own bookkeeping of acknowledged
    offsets and holes, and its own rule for the offset it commits (``_new_offset``),
    with the holes it is told about recorded."""

    _new_offset = FaustConsumer._new_offset
    _faust_add_gap = FaustConsumer._add_gap

    def __init__(self, assigned: tuple[int, ...] = (0, 1, 2, 3, 4, 5)) -> None:
        self.gaps: list[tuple[str, int, int, int]] = []
        self.assigned = {TopicPartition("t.in", p) for p in assigned}
        self._acked: defaultdict[Any, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set)
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: defaultdict[Any, int | None] = defaultdict(lambda: None)

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def ack(self, partition: int, offset: int) -> None:
        """Faust's acknowledgement of a record it delivered and the stage processed."""
        tp = TopicPartition("t.in", partition)
        committed = self._committed_offset[tp]
        if (committed is None or offset >= committed) and offset not in self._acked_index[tp]:
            self._acked_index[tp].add(offset)
            self._acked[tp].append(offset)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp.topic, tp.partition, offset_from, offset_to))
        await self._faust_add_gap(tp, offset_from, offset_to)

    def commit(self, partition: int) -> int | None:
        """What Faust's next commit of ``partition`` would be (None: none)."""
        tp = TopicPartition("t.in", partition)
        offset = self._new_offset(tp)
        if offset is not None:
            self._committed_offset[tp] = offset
        return offset


class ReadingGate(InputGate):
    """The gate with Kafka replaced by a log of offsets per partition."""

    def __init__(self, log: dict[int, list[int]]) -> None:
        super().__init__("stage", FakeTopic(), settings=None)
        self.log = log
        self.reads: list[tuple[int, int, int]] = []

    async def _read(self, partition: int, start: int, stop: int) -> list[Any]:
        self.reads.append((partition, start, stop))
        return [Event(partition, o) for o in self.log[partition] if start <= o < stop]

    async def _log_start(self, partition: int) -> int:
        return min(self.log[partition], default=0)


def offsets(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in events]


def test_input_gate_drops_what_was_processed_and_reads_holes_in_order() -> None:
    gate = ReadingGate({3: list(range(100)), 5: list(range(100))})
    store = StoredTimes()
    gate.done(store, 3, 10)
    assert gate.expected(store, 3) == 11
    assert gate.expected(store, 5) is None
    taken = [Event(3, 9), Event(3, 15), Event(3, 11), Event(5, 1), Event(5, 2)]
    expected = {3: gate.expected(store, 3), 5: gate.expected(store, 5)}
    consumer = FakeConsumer()
    ordered = asyncio.run(gate.complete(taken, expected.__getitem__, consumer))
    # 9 was processed; 11 comes in order; 12..14 (the hole) are read; on 5 nothing was
    # processed yet, so what Faust did not hand over from the start of the log is read
    assert offsets(ordered) == [
        (3, 11), (3, 12), (3, 13), (3, 14), (3, 15), (5, 0), (5, 1), (5, 2)
    ]  # fmt: skip
    assert gate.reads == [(3, 12, 15), (5, 0, 1)]
    # Faust is told what it never delivered: all below the next offset, then the hole
    assert consumer.gaps == [
        ("t.in", 3, 0, 10),
        ("t.in", 3, 12, 14),
        ("t.in", 5, 0, -1),
        ("t.in", 5, 0, 0),
    ]


def test_input_gate_reads_from_the_log_start_on_a_partition_it_never_processed() -> None:
    """After a rebalance Faust can drop the first records of a partition nobody processed
    yet and hand over later ones: without a next offset, nothing showed the hole."""
    gate = ReadingGate({1: list(range(5, 20))})  # retention deleted 0..4
    ordered = asyncio.run(
        gate.complete([Event(1, 8), Event(1, 9)], {1: None}.__getitem__, FakeConsumer())
    )
    assert offsets(ordered) == [(1, o) for o in range(5, 10)]
    assert gate.reads == [(1, 5, 8)]


def test_input_gate_takes_the_first_record_of_a_new_partition_as_is() -> None:
    gate = ReadingGate({2: [0, 1]})
    ordered = asyncio.run(
        gate.complete([Event(2, 0), Event(2, 1)], {2: None}.__getitem__, FakeConsumer())
    )
    assert offsets(ordered) == [(2, 0), (2, 1)]
    assert gate.reads == []


def test_input_gate_goes_on_when_a_hole_cannot_be_read() -> None:
    gate = ReadingGate({0: []})  # gone: deleted by retention
    ordered = asyncio.run(gate.complete([Event(0, 100)], {0: 50}.__getitem__, FakeConsumer()))
    assert offsets(ordered) == [(0, 100)]
    assert gate.reads == [(0, 50, 100)]


class Record:
    """A batch record as a stage takes it (only ``value`` is read)."""

    def __init__(self, items: int) -> None:
        self.value = encode_batch([DeltaItem("s", i, 1) for i in range(items)])
        self.items = items


@pytest.mark.parametrize(
    ("sizes", "cap", "expected"),
    [
        pytest.param([1000] * 64, 16_384, [16, 16, 16, 16], id="a-full-take-of-64"),
        pytest.param([5, 5, 5], 10, [2, 1], id="exactly-at-the-cap"),
        pytest.param([30, 2, 2], 10, [1, 2], id="a-record-over-the-cap-goes-alone"),
        pytest.param([2, 30, 2], 10, [1, 1, 1], id="over-the-cap-in-the-middle"),
        pytest.param([], 10, [], id="empty"),
    ],
)
def test_runs_cap_the_items_between_writes_and_keep_the_order(
    sizes: list[int], cap: int, expected: list[int]
) -> None:
    records = [Record(n) for n in sizes]
    found = list(runs(records, cap))
    assert [len(run) for run in found] == expected
    assert [record for run in found for record in run] == records
    assert all(sum(r.items for r in run) <= cap or len(run) == 1 for run in found)


class TailGate(ReadingGate):
    """The reading gate, with the partitions' end offsets where their logs end."""

    async def _ends(self, partitions: list[int]) -> dict[int, int]:
        return {p: max(self.log[p], default=-1) + 1 for p in partitions if p in self.log}


async def _dropped_after(
    first: list[Any], consumer: FakeConsumer | None = None
) -> AsyncIterator[list[Any]]:
    """Faust's takes when it dropped what followed ``first``: nothing more, ever. Asked
    for the next take, Faust acknowledges the last one's records to ``consumer``."""
    yield first
    if consumer is not None:
        for event in first:
            consumer.ack(event.message.partition, event.message.offset)
    await asyncio.Event().wait()


async def _stage(
    gate: InputGate,
    takes: AsyncIterator[list[Any]],
    until: int,
    work_s: float = 0.0,
    consumer: FakeConsumer | None = None,
    commits: list[int | None] | None = None,
) -> list[Any]:
    """A stage's loop: take after take, each handled (``work_s``) and written (its next
    offset stored) before the next; what it processed, once partition 3 reached
    offset ``until``. ``commits``: what Faust would commit of partition 3 as each take
    comes."""
    store = StoredTimes()
    processed: list[Any] = []
    mine = [3]
    consumer = consumer or FakeConsumer()
    async with aclosing(
        gate.takes(takes, partial(gate.expected, store), consumer, lambda: mine, 20)
    ) as ordered_takes:
        async for ordered in ordered_takes:
            if commits is not None:
                commits.append(consumer.commit(3))
            processed += offsets(ordered)
            await asyncio.sleep(work_s)
            gate.done(store, 3, ordered[-1].message.offset)
            if gate.expected(store, 3) == until:
                return processed
    raise AssertionError("the takes ended")


def test_input_gate_reads_the_records_faust_dropped_at_the_end_of_a_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a rebalance Faust can drop the records it fetched and queued and never fetch
    them again: with nothing after them, no later record shows the hole. Once nothing
    arrived for a while, the gate reads up to the end offset itself, a take (here of at
    most 20 records) at a time."""
    monkeypatch.setattr(state, "QUIET_S", 0.05)
    gate = TailGate({3: list(range(61))})
    takes = _dropped_after([Event(3, 0), Event(3, 1), Event(3, 2)])
    processed = asyncio.run(asyncio.wait_for(_stage(gate, takes, until=61), 5))
    assert processed == [(3, o) for o in range(61)]
    assert gate.reads == [(3, 3, 23), (3, 23, 43), (3, 43, 61)]


def test_faust_commits_follow_the_records_the_gate_read_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust commits only what it acknowledged in a row; the tail the gate read was never
    Faust's to acknowledge. Without being told, its next commit stays at 3 (or nowhere)
    for good, and consumer lag shows 58 records that were processed long ago."""
    monkeypatch.setattr(state, "QUIET_S", 0.05)
    consumer = FakeConsumer(assigned=(3,))
    gate = TailGate({3: list(range(61))})
    takes = _dropped_after([Event(3, 0), Event(3, 1), Event(3, 2)], consumer)
    commits: list[int | None] = []
    run = _stage(gate, takes, until=61, consumer=consumer, commits=commits)
    asyncio.run(asyncio.wait_for(run, 5))
    # takes 0..2 (Faust's), then 3..22, 23..42 and 43..60 (read by the gate): as each
    # comes, Faust commits the next offset of the one before
    assert commits == [None, 3, 23, 43]
    # and keeps no acknowledgement below what it committed
    assert consumer._acked[TopicPartition("t.in", 3)] == []


def test_faust_is_not_told_of_partitions_it_no_longer_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition that moved away while its take was processed is its new owner's to
    commit: a commit from here would be refused, and its bookkeeping would linger."""
    monkeypatch.setattr(state, "QUIET_S", 0.05)
    consumer = FakeConsumer(assigned=())
    gate = TailGate({3: list(range(61))})
    takes = _dropped_after([Event(3, 0), Event(3, 1), Event(3, 2)])
    asyncio.run(asyncio.wait_for(_stage(gate, takes, until=61, consumer=consumer), 5))
    assert consumer._acked == {}


def test_input_gate_leaves_a_partition_alone_while_faust_delivers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state, "QUIET_S", 0.2)

    async def delivered() -> AsyncIterator[list[Any]]:
        for offset in range(10):
            await asyncio.sleep(0.02)
            yield [Event(3, offset)]
        await asyncio.Event().wait()

    gate = TailGate({3: list(range(10))})
    processed = asyncio.run(asyncio.wait_for(_stage(gate, delivered(), until=10), 5))
    assert processed == [(3, o) for o in range(10)]
    assert gate.reads == []


def test_input_gate_does_not_take_its_stages_own_work_for_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records that waited in Faust while the stage worked on a long take are not late."""
    monkeypatch.setattr(state, "QUIET_S", 0.1)

    async def waiting() -> AsyncIterator[list[Any]]:
        yield [Event(3, offset) for offset in range(3)]
        yield [Event(3, offset) for offset in range(3, 10)]
        await asyncio.Event().wait()

    gate = TailGate({3: list(range(10))})
    processed = asyncio.run(asyncio.wait_for(_stage(gate, waiting(), 10, work_s=0.3), 5))
    assert processed == [(3, o) for o in range(10)]
    assert gate.reads == []


def test_quiet_ticks_come_between_takes_and_never_beside_one() -> None:
    async def slow() -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(0.25)
        yield "b"

    async def run() -> list[str | None]:
        return [item async for item in with_quiet_ticks(slow(), 0.1)]

    got = asyncio.run(run())
    assert got[0] == "a" and got[-1] == "b"
    assert set(got[1:-1]) == {None} and 1 <= len(got[1:-1]) <= 3
