"""Stream clocks and expiry sweeps over a stand-in for Faust's table and RocksDB store."""

from __future__ import annotations

from typing import Any

import pytest

from dmp_faust.state import FAUST_KEY_PREFIX, StreamClock, Sweeper


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
        expired = sweeper.tick(partition, stream_time)
        for key in expired:
            del self.db.data[key]
        return len(expired)


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


class StoredTimes(dict[str, bytes]):
    writes = 0

    def __setitem__(self, key: str, value: bytes) -> None:
        StoredTimes.writes += 1
        super().__setitem__(key, value)


@pytest.mark.parametrize(
    ("times", "expected", "writes"),
    [
        ([1_000, 1_500, 1_200], 1_500, 1),  # same second: written once
        ([1_000, 2_000, 3_999], 3_999, 3),
        ([5_000, 1_000], 5_000, 1),  # stream time never goes back
    ],
)
def test_stream_clock_keeps_the_maximum_and_writes_once_per_second(
    times: list[int], expected: int, writes: int
) -> None:
    StoredTimes.writes = 0
    table = StoredTimes()
    clock = StreamClock(table, "stage")
    for ts in times:
        last = clock.advance(2, ts)
    assert last == expected == clock.get(2)
    assert StoredTimes.writes == writes
    # a new process remembers nothing but what the table holds, to the second
    assert StreamClock(table, "stage").get(2) // 1000 == expected // 1000
