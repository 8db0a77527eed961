"""The tables' store on a real RocksDB: changelog records of a superseded generation
are skipped, from any starting offset, and a dropped worker's databases are emptied."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from dmp_faust.fence import Fence, wipe_if_dropped
from dmp_faust.store import EPOCH_KEY, SCHEME, ChangelogQueue, Epochs, EpochStore, epoch_header

TOPIC = "store-test-things-changelog"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return faust.App("store-test", datadir=str(tmp_path), store=f"{SCHEME}://")


@pytest.fixture
def store(app: Any) -> EpochStore:
    table = app.Table("things", key_type=bytes, value_type=bytes)
    assert isinstance(table.data, EpochStore)
    return table.data


def record(offset: int, key: bytes, value: bytes | None, epoch: int | None, partition: int = 0):
    headers = [] if epoch is None else [epoch_header(epoch)]
    message = SimpleNamespace(
        tp=TP(TOPIC, partition),
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers,
    )
    return SimpleNamespace(message=message)


def apply(store: EpochStore, *records: Any) -> None:
    store.apply_changelog_batch(list(records), lambda k: k, lambda v: v)


def visible(store: EpochStore, partition: int = 0) -> dict[bytes, bytes]:
    return dict(store._visible_items(store._db_for_partition(partition)))


def test_a_record_of_an_older_generation_written_late_is_skipped(store: EpochStore) -> None:
    # The owner of generation 3 wrote, the new owner (4) went on, then the woken
    # worker of generation 3 sent what it held: the table keeps the new owner's values.
    apply(
        store,
        record(0, b"window", b"10", 3),
        record(1, b"window", b"25", 4),
        record(2, b"window", b"12", 3),
        record(3, b"gone", None, 3),
    )
    assert visible(store) == {b"window": b"25"}
    assert store.epoch(0) == 4
    assert store.persisted_offset(TP(TOPIC, 0)) == 3  # skipped records are read past


def test_records_written_before_the_new_owner_wrote_are_kept(store: EpochStore) -> None:
    apply(store, record(0, b"a", b"1", 3), record(1, b"b", b"2", 3), record(2, b"a", b"3", 4))
    assert visible(store) == {b"a": b"3", b"b": b"2"}


def test_a_recovery_from_the_stored_offset_judges_as_a_full_rebuild(store: EpochStore) -> None:
    apply(store, record(0, b"a", b"1", 3), record(1, b"a", b"2", 5))
    apply(store, record(2, b"a", b"stale", 4))  # a later batch: the epoch was stored
    assert visible(store) == {b"a": b"2"}


def test_partitions_are_judged_apart(store: EpochStore) -> None:
    apply(store, record(0, b"a", b"1", 7, partition=0), record(0, b"a", b"2", 2, partition=1))
    assert visible(store, 0) == {b"a": b"1"} and visible(store, 1) == {b"a": b"2"}


def test_untagged_records_are_applied_as_faust_applies_them(store: EpochStore) -> None:
    apply(store, record(0, b"a", b"1", 9), record(1, b"a", b"2", None))
    assert visible(store) == {b"a": b"2"}


def test_generations_that_start_again_are_judged_from_the_marker(store: EpochStore) -> None:
    # A group forgotten by the broker starts again at generation 1; the first write
    # after that puts a marker under EPOCH_KEY (see TableWrites.commit).
    apply(
        store,
        record(0, b"a", b"old", 57),
        record(1, EPOCH_KEY, b"1", 1),
        record(2, b"a", b"new", 1),
        record(3, b"b", b"x", 2),
    )
    assert visible(store) == {b"a": b"new", b"b": b"x"}
    assert store.epoch(0) == 2


def test_the_epoch_is_not_a_table_key(store: EpochStore) -> None:
    apply(store, record(0, b"a", b"1", 3))
    assert list(store._visible_keys(store._db_for_partition(0))) == [b"a"]


def test_epochs_count_what_they_skip() -> None:
    epochs = Epochs(applied=-1)
    admitted = [epochs.admit(e) for e in (1, 2, 2, 1, None, 3, 2)]
    assert admitted == [True, True, True, False, True, True, False]
    assert (epochs.applied, epochs.skipped) == (3, 2)


class DroppedFence(Fence):
    def __init__(self, dropped: bool) -> None:
        super().__init__(lambda: None, 6.0)
        self._dropped = dropped


def test_a_worker_dropped_from_the_group_empties_its_databases(app: Any, store: EpochStore) -> None:
    many = [record(n, b"key-%05d" % n, b"v", 3) for n in range(1000)]
    apply(store, *many, record(0, b"b", b"2", 3, partition=1))
    assert wipe_if_dropped(app, DroppedFence(dropped=False)) == []
    assert len(visible(store)) == 1000
    assert wipe_if_dropped(app, DroppedFence(dropped=True)) == ["things[0]", "things[1]"]
    assert visible(store) == {} and visible(store, 1) == {}
    assert list(store._db_for_partition(0).keys()) == []  # Faust's offset, the epoch too
    assert store.persisted_offset(TP(TOPIC, 0)) is None  # recovered from the start
    assert store.epoch(0) == -1


def test_a_changelog_read_again_from_the_start_is_judged_anew(store: EpochStore) -> None:
    """After a wipe, records Faust had buffered from the middle of the changelog (later
    generations) were applied first, then the rebuild read it from the start: judged by
    the epoch those stale records left, every earlier record was skipped."""
    log = [record(n, b"k%02d" % n, b"v%d" % n, 3 + n // 15) for n in range(46)]  # epochs 3..6
    apply(store, *log[37:])  # the stale batch, applied to the emptied database
    assert store.epoch(0) == 6
    apply(store, *log)  # the rebuild from the start
    assert visible(store) == {b"k%02d" % n: b"v%d" % n for n in range(46)}
    assert store.epoch(0) == 6


def test_recovery_from_the_stored_offset_still_skips_late_records(store: EpochStore) -> None:
    apply(store, record(0, b"a", b"1", 4), record(1, b"a", b"2", 5))
    apply(store, record(2, b"a", b"late", 4), record(3, b"b", b"x", 5))  # from offset 2 on
    assert visible(store) == {b"a": b"2", b"b": b"x"}


async def _deliver(flow: Any, queue: Any, event: Any) -> None:
    """What Faust's conductor does with a fetched record: wait for the flow, then put."""
    await flow.acquire()
    queue.put_nowait_enhanced(event, on_pressure_high=lambda: None, on_pressure_drop=lambda: None)


def fetched(offset: int, generation: int) -> Any:
    event = record(offset, b"k", b"v", None)
    event.message.generation_id = generation
    event.message.topic = TOPIC
    return event


@pytest.mark.parametrize("queue_type", ["faust", "ours"])
def test_recovery_takes_no_record_fetched_before_the_rebalance(queue_type: str) -> None:
    """A record whose delivery waited through a rebalance lands after the queue was
    cleared; Faust's recovery would take it as the next one and skip every record
    before it. Faust's own queue hands it out; ours drops it."""
    first, dropped = asyncio.run(_rebalance_with_a_late_delivery(queue_type))
    if queue_type == "faust":
        assert first == 338  # the defect, in Faust's queue
    else:
        assert (first, dropped) == (0, 1)


async def _rebalance_with_a_late_delivery(queue_type: str) -> tuple[int, int]:
    flow = FlowControlEvent(initially_suspended=False)
    generation = {"now": 9}
    options = {"maxsize": 100, "flow_control": flow, "clear_on_resume": True}
    if queue_type == "faust":
        queue = FlowControlQueue(**options)
    else:
        queue = ChangelogQueue(lambda: generation["now"], **options)
    queue.put_nowait_enhanced(
        fetched(300, 9), on_pressure_high=lambda: None, on_pressure_drop=lambda: None
    )
    flow.suspend()  # the rebalance: a fetched standby record waits to be delivered
    stale = asyncio.ensure_future(_deliver(flow, queue, fetched(338, 9)))
    await asyncio.sleep(0)
    generation["now"] = 11  # assigned again, in a new generation
    flow.resume()  # clears the queue (offset 300 is gone), then lets offset 338 in
    await stale
    queue.put_nowait_enhanced(
        fetched(0, 11), on_pressure_high=lambda: None, on_pressure_drop=lambda: None
    )  # the rebuild from the start
    first = await asyncio.wait_for(queue.get(), 1)
    return first.message.offset, getattr(queue, "dropped", 0)
