"""The Parquet history's writing side: layout, sink, recovery, erasure records, compaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmp_faust.domain.enrich import CleanEvent, UserAgent
from dmp_faust.domain.timefmt import MAX_MS, MIN_MS
from dmp_faust.history.compact import (
    SWEEP_MARGIN_NS,
    compact,
    erase_rows,
    history_files,
    swept_path,
    visible,
)
from dmp_faust.history.files import Storage
from dmp_faust.history.schema import (
    SCHEMA,
    VERSION_KEY,
    FileName,
    Rows,
    hour_dir,
    hour_of,
    parse_hour_dir,
)
from dmp_faust.history.sink import (
    ERASURES_DIR,
    MAX_ROWS,
    Erased,
    PartitionSink,
    SinkState,
    record_erasure,
    recover,
    state_path,
    stored_state,
)

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NS = "dmp"
NOBODY = Erased(NS)
SENT = 1_800_000_000_000  # when the records were sent (Kafka timestamp, epoch ms)


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def event(i: int, ts: int, **fields: Any) -> CleanEvent:
    fields.setdefault("profile_id", f"p{i}")
    return CleanEvent(event_id=f"e{i}", type="page_view", timestamp=ts, **fields)


def value(i: int, ts: int, **fields: Any) -> bytes:
    return msgspec.json.encode(event(i, ts, **fields))


def name(
    partition: int, first: int, last: int, compacted: bool = False, generation: int | None = None
) -> str:
    return str(FileName(partition, first, last, compacted, generation))


def offsets(table: pa.Table) -> list[int]:
    return table.column("kafka_offset").to_pylist()


def all_files(root: Path) -> list[str]:
    """Every file below ``root``, hidden ones too, relative."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


# --- layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [(0, 0, 0, False), (3, 1200, 1799, False), (3, 1200, 1799, True), (1234, 10**13, 10**13 + 5)],
)
def test_file_names_round_trip(parts: tuple[Any, ...]) -> None:
    file_name = FileName(*parts)
    assert FileName.parse(str(file_name)) == file_name


def test_file_names_are_as_documented() -> None:
    assert str(FileName(3, 1200, 1799)) == "p003-000000001200-000000001799.parquet"
    assert str(FileName(3, 1200, 1799, True)) == "p003-000000001200-000000001799-c.parquet"


@pytest.mark.parametrize(
    "foreign",
    [
        "",
        "part-0.parquet",
        "p3-000000000000-000000000009.parquet",  # partition under 3 digits
        "p003-0-9.parquet",  # offsets under 12 digits
        "p003-000000000000-000000000009.parquet.tmp",
        ".p003-000000000000-000000000009.parquet.1a2b3c4d.tmp",  # a temporary
        "p003-000000000000-000000000009-x.parquet",
        "p003-000000000000-000000000009.csv",
        "P003-000000000000-000000000009.parquet",
        "dir/p003-000000000000-000000000009.parquet",
    ],
)
def test_foreign_names_are_not_history_files(foreign: str) -> None:
    assert FileName.parse(foreign) is None


@pytest.mark.parametrize(
    ("ts", "directory"),
    [
        (T0, "events/date=2024-01-01/hour=00"),
        (T0 - 1, "events/date=2023-12-31/hour=23"),  # the last ms of a year
        (ms(2024, 12, 31, 23, 59, 59), "events/date=2024-12-31/hour=23"),
        (ms(2025, 1, 1, 0, 0, 0) + 1, "events/date=2025-01-01/hour=00"),
        (ms(2024, 2, 29, 12, 34, 56), "events/date=2024-02-29/hour=12"),
        (-1, "events/date=1969-12-31/hour=23"),  # before the epoch
        (0, "events/date=1970-01-01/hour=00"),
        (MIN_MS, "events/date=0001-01-01/hour=00"),
        (MAX_MS, "events/date=9999-12-31/hour=23"),
    ],
)
def test_hour_dirs_round_trip(ts: int, directory: str) -> None:
    hour = hour_of(ts)
    assert hour <= ts < hour + HOUR and hour % HOUR == 0
    assert hour_dir(hour) == directory
    assert parse_hour_dir(directory) == hour
    assert parse_hour_dir(f"s3://bucket/root/{directory}/") == hour


@pytest.mark.parametrize("path", ["", "events", "events/date=2024-01-01", "events/hour=00"])
def test_paths_that_are_no_hour_dir_parse_as_none(path: str) -> None:
    assert parse_hour_dir(path) is None


def test_an_impossible_date_parses_as_none() -> None:
    """The docstring's promise ("or None"): compaction parses every directory it lists."""
    assert parse_hour_dir("events/date=2024-02-30/hour=00") is None


# --- PartitionSink ----------------------------------------------------------------------


def test_copies_are_dropped_by_their_source() -> None:
    sink = PartitionSink(0, SinkState(), generation=3)
    sink.add(0, value(0, T0), (1, 10), NOBODY, SENT)
    sink.add(1, value(0, T0), (1, 10), NOBODY, SENT)  # the same source again: a copy
    sink.add(2, value(2, T0), (1, 9), NOBODY, SENT)  # lower position of the same source: a copy
    sink.add(3, value(3, T0), (2, 10), NOBODY, SENT)  # same position, other source: kept
    sink.add(4, value(4, T0), None, NOBODY, SENT)  # no source: kept
    assert (sink.rows, sink.copies, sink.next_offset) == (3, 2, 5)
    flush = sink.detach()
    assert flush is not None
    assert flush.state == SinkState(5, {1: 10, 2: 10}, 3)
    [(path, rows)] = flush.files
    assert path == f"{hour_dir(T0)}/{name(0, 0, 4, generation=3)}"
    assert rows.columns["kafka_offset"] == [0, 3, 4]
    assert rows.columns["event_id"] == ["e0", "e3", "e4"]


def test_stored_marks_drop_copies_and_are_not_changed_in_place() -> None:
    stored = SinkState(10, {1: 50}, 2)
    sink = PartitionSink(7, stored, generation=4)
    sink.add(10, value(1, T0), (1, 50), NOBODY, SENT)
    sink.add(11, value(2, T0), (1, 51), NOBODY, SENT)
    flush = sink.detach()
    assert flush is not None
    assert flush.state == SinkState(12, {1: 51}, 4)
    assert [rows.columns["kafka_offset"] for _, rows in flush.files] == [[11]]
    assert flush.files[0][0].endswith(f"/{name(7, 10, 11, generation=4)}")
    assert stored.marks == {1: 50}


def test_rows_are_split_by_the_hour_of_their_event_time() -> None:
    sink = PartitionSink(2, SinkState(), 0)
    times = [T0 + 5 * 60_000, T0 + HOUR + 1, T0 + 10 * 60_000, T0 - 1, T0 + HOUR]
    for offset, ts in enumerate(times, start=100):
        sink.add(offset, value(offset, ts), None, NOBODY, SENT)
    flush = sink.detach()
    assert flush is not None
    file_name = name(2, 100, 104, generation=0)
    assert [(path, rows.columns["kafka_offset"]) for path, rows in flush.files] == [
        (f"events/date=2023-12-31/hour=23/{file_name}", [103]),
        (f"events/date=2024-01-01/hour=00/{file_name}", [100, 102]),
        (f"events/date=2024-01-01/hour=01/{file_name}", [101, 104]),
    ]


def test_detach_names_the_offsets_taken_since_the_last_one() -> None:
    sink = PartitionSink(12, SinkState(), 1)
    assert sink.detach() is None
    for offset in range(4):
        sink.add(offset, value(offset, T0), (0, offset), NOBODY, SENT)
    first = sink.detach()
    assert first is not None and first.files[0][0].endswith(name(12, 0, 3, generation=1))
    assert (sink.first, sink.rows, sink.hours) == (None, 0, {})
    assert sink.detach() is None
    for offset in range(4, 7):
        sink.add(offset, value(offset, T0 + HOUR), (0, offset), NOBODY, SENT)
    second = sink.detach()
    assert second is not None
    assert [path for path, _ in second.files] == [
        f"{hour_dir(T0 + HOUR)}/{name(12, 4, 6, generation=1)}"
    ]
    assert second.files[0][1].columns["kafka_offset"] == [4, 5, 6]
    assert second.state == SinkState(7, {0: 6}, 1)
    assert first.state == SinkState(4, {0: 3}, 1)  # its own copy of the marks


def test_due_on_age() -> None:
    sink = PartitionSink(0, SinkState(), 0)
    assert not sink.due(SENT + 10**9, 60_000)  # nothing held
    sink.add(0, value(0, T0), None, NOBODY, SENT)
    assert sink.since == SENT  # when the record was sent, not when the sink read it
    assert not sink.due(SENT + 59_999, 60_000)
    assert sink.due(SENT + 60_000, 60_000)
    sink.add(1, value(1, T0), None, NOBODY, SENT + 30_000)
    assert sink.since == SENT  # the age of the oldest record
    sink.detach()
    assert not sink.due(SENT + 10**9, 60_000)


def test_due_on_max_rows_and_copies_do_not_count() -> None:
    sink = PartitionSink(0, SinkState(), 0)
    raw = value(0, T0)
    for offset in range(MAX_ROWS - 1):
        sink.add(offset, raw, (0, offset), NOBODY, SENT)
    sink.add(MAX_ROWS - 1, raw, (0, 0), NOBODY, SENT)  # a copy
    assert sink.rows == MAX_ROWS - 1
    assert not sink.due(sink.since, 10**6)
    sink.add(MAX_ROWS, raw, (0, MAX_ROWS), NOBODY, SENT)
    assert sink.due(sink.since, 10**6)


def test_a_record_that_is_not_an_event_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    sink = PartitionSink(5, SinkState(), 0)
    for offset, raw in enumerate([b"not json", b"", b"\xff\xfe", b"[1]", b'{"event_id": 1}']):
        sink.add(offset, raw, None, NOBODY, SENT)
    sink.add(5, value(5, T0), None, NOBODY, SENT)
    assert (sink.rows, sink.next_offset) == (1, 6)
    assert "events.clean[5]@0 is not an event" in caplog.text
    flush = sink.detach()
    assert flush is not None
    assert [(path, rows.columns["kafka_offset"]) for path, rows in flush.files] == [
        (f"{hour_dir(T0)}/{name(5, 0, 5, generation=0)}", [5])
    ]


def test_an_event_beyond_the_calendar_does_not_stop_the_partition() -> None:
    """A JSON record that decodes as an event but whose timestamp no date can hold
    (not one dmp-faust accepts: the validator keeps to years 1..9999) must not make
    every later flush of the partition fail."""
    sink = PartitionSink(0, SinkState(), 0)
    sink.add(0, value(0, T0), None, NOBODY, SENT)
    sink.add(1, value(1, 10**17), None, NOBODY, SENT)  # the year ~3 million
    flush = sink.detach()
    assert flush is not None and flush.state.next_offset == 2
    assert (f"{hour_dir(T0)}/{name(0, 0, 1, generation=0)}", [0]) in [
        (path, rows.columns["kafka_offset"]) for path, rows in flush.files
    ]


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param({"profile_id": "gone"}, id="profile"),
        pytest.param({"profile_id": "x", "anonymous_id": "gone"}, id="anonymous"),
        pytest.param({"profile_id": "x", "user_id": "gone"}, id="user"),
    ],
)
def test_erased_people_are_not_written(ids: dict[str, str]) -> None:
    erased = Erased(NS, [Erased(NS).hash("gone")])
    sink = PartitionSink(0, SinkState(), 0)
    sink.add(0, value(0, T0, **ids), None, erased, SENT)
    sink.add(1, value(1, T0, profile_id="kept", anonymous_id="a", user_id="u"), None, erased, SENT)
    assert (sink.rows, sink.erased, sink.next_offset) == (1, 1, 2)
    flush = sink.detach()
    assert flush is not None
    assert [rows.columns["profile_id"] for _, rows in flush.files] == [["kept"]]


# --- Flush.write and recover ------------------------------------------------------------


AGENT = UserAgent("Firefox", "120.0", "Linux", None, "Other")


def rich(i: int, ts: int) -> bytes:
    return value(
        i,
        ts,
        profile_id=f"u{i}",
        anonymous_id=f"a{i}",
        user_id=f"u{i}",
        campaign_id="c1",
        url="https://shop.example/?utm_source=news&utm_content=a",
        ip="198.51.100.0",
        revenue=9.5,
        properties={"plan": "pro", "n": 2, "tags": ["x"]},
        user_agent=AGENT,
        utm={"utm_source": "news", "utm_content": "a"},
    )


def test_a_flush_writes_its_files_then_its_state(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    sink = PartitionSink(3, SinkState(), 9)
    for offset, ts in enumerate([T0 + 1000, T0 + HOUR + 2000, T0 + 3000]):
        sink.add(offset, rich(offset, ts), (1, offset), NOBODY, SENT)
    sink.add(3, value(3, T0 + 4000), (1, 3), NOBODY, SENT)  # the optional fields left out
    flush = sink.detach()
    assert flush is not None
    size = flush.write(storage, NOBODY)
    assert stored_state(storage, 3) == flush.state == SinkState(4, {1: 3}, 9)
    paths = [path for path, _ in flush.files]
    assert size == sum((tmp_path / path).stat().st_size for path in paths)
    assert all_files(tmp_path) == sorted([*paths, state_path(3)])

    table = pq.read_table(tmp_path / paths[0])
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.schema.metadata[VERSION_KEY] == b"1"
    row = table.to_pylist()[0]
    assert row["timestamp"] == dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    assert row["properties"] == '{"plan":"pro","n":2,"tags":["x"]}'
    assert row["traits"] is None
    assert [row[key] for key in ("browser", "browser_version", "os", "os_version", "device")] == [
        "Firefox", "120.0", "Linux", None, "Other",
    ]  # fmt: skip
    utm = [row[key] for key in ("utm_source", "utm_medium", "utm_campaign", "utm_term")]
    assert [*utm, row["utm_content"]] == ["news", None, None, None, "a"]
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 0)
    assert (row["event_id"], row["profile_id"], row["anonymous_id"]) == ("e0", "u0", "a0")
    assert (row["campaign_id"], row["ip"], row["revenue"]) == ("c1", "198.51.100.0", 9.5)
    bare = table.to_pylist()[-1]
    assert (bare["kafka_offset"], bare["browser"], bare["utm_source"]) == (3, None, None)
    assert bare["properties"] is None and bare["revenue"] is None
    assert offsets(table) == [0, 2, 3]
    assert offsets(pq.read_table(tmp_path / paths[1])) == [1]


def test_recover_removes_what_a_flush_without_its_state_left(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    sink = PartitionSink(3, SinkState(), 1)
    for offset in range(5):
        sink.add(offset, value(offset, T0 + offset * HOUR // 2), (0, offset), NOBODY, SENT)
    committed = sink.detach()
    assert committed is not None
    committed.write(storage, NOBODY)
    for offset in range(5, 9):
        sink.add(offset, value(offset, T0 + offset * HOUR // 2), (0, offset), NOBODY, SENT)
    crashed = sink.detach()
    assert crashed is not None
    for path, rows in crashed.files:  # the data files, and then the crash: no state
        storage.write_table(path, rows.table())
    lost = [path for path, _ in crashed.files]
    temporary = f"{hour_dir(T0)}/.{name(3, 9, 12)}.1a2b3c4d.tmp"
    storage.write(temporary, b"half a file")
    others = [
        f"{hour_dir(T0)}/{name(4, 7, 20)}",  # another partition, past partition 3's offset
        f"{hour_dir(T0)}/.{name(4, 21, 30)}.5e6f7a8b.tmp",
        f"{hour_dir(T0)}/{name(3, 0, 4, compacted=True)}",  # compacted files are not a flush's
    ]
    for path in others:
        storage.write(path, b"other")
    before = all_files(tmp_path)
    assert set(lost) <= set(before) and temporary in before

    assert recover(storage, 3) == committed.state
    assert all_files(tmp_path) == sorted(set(before) - set(lost) - {temporary})
    for path, rows in committed.files:
        assert offsets(pq.read_table(tmp_path / path)) == rows.columns["kafka_offset"]

    # from the recovered state, the same records make the same files again
    again = PartitionSink(3, recover(storage, 3), 2)
    assert again.next_offset == 5
    for offset in range(5, 9):
        again.add(offset, value(offset, T0 + offset * HOUR // 2), (0, offset), NOBODY, SENT)
    flush = again.detach()
    assert flush is not None  # the same offsets in the same hours, in the new generation's name
    assert [path for path, _ in flush.files] == [p.replace("-g000001", "-g000002") for p in lost]


def test_a_flush_after_another_worker_wrote_the_partition_writes_nothing(
    tmp_path: Path,
) -> None:
    """A worker stopped in the middle of a flush wakes to find the partition written by
    its successor: its data files go, and the state stays the successor's."""
    storage = Storage(str(tmp_path))
    zombie, successor = PartitionSink(3, SinkState(), 7), PartitionSink(3, SinkState(), 8)
    for offset in range(4):
        zombie.add(offset, value(offset, T0), (0, offset), NOBODY, SENT)
    for offset in range(6):
        successor.add(offset, value(offset, T0), (0, offset), NOBODY, SENT)
    late, first = zombie.detach(), successor.detach()
    assert late is not None and first is not None
    late.write_files(storage, NOBODY)  # then stopped; the successor flushes meanwhile
    first.write(storage, NOBODY)
    assert not late.commit(storage)
    late.discard(storage)
    assert stored_state(storage, 3) == first.state
    assert all_files(tmp_path) == sorted([state_path(3), *(p for p, _ in first.files)])
    with pytest.raises(RuntimeError):
        late.write(storage, NOBODY)
    assert stored_state(storage, 3) == first.state


def test_recover_without_a_state_removes_every_flushed_file_of_the_partition(
    tmp_path: Path,
) -> None:
    storage = Storage(str(tmp_path))
    for path in (f"{hour_dir(T0)}/{name(1, 0, 9)}", f"{hour_dir(T0 + HOUR)}/{name(1, 10, 19)}"):
        storage.write(path, b"x")
    kept = f"{hour_dir(T0)}/{name(2, 0, 9)}"
    storage.write(kept, b"x")
    assert recover(storage, 1) == SinkState()
    assert all_files(tmp_path) == [kept]


def test_sink_state_round_trips_through_json() -> None:
    state = SinkState(1234, {0: 5, 1025: 7}, 12)
    assert SinkState.from_bytes(state.to_bytes()) == state
    assert json.loads(state.to_bytes()) == {
        "next_offset": 1234,
        "marks": {"0": 5, "1025": 7},
        "generation": 12,
    }
    assert SinkState.from_bytes(None) == SinkState.from_bytes(b"") == SinkState()
    assert state_path(3) == "_sink/p003.json"


# --- Storage ----------------------------------------------------------------------------


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    assert storage.read("d/e/a.bin") is None
    storage.write("d/e/a.bin", b"old")
    storage.write("d/e/a.bin", b"new content")
    assert (tmp_path / "d/e/a.bin").read_bytes() == b"new content"
    assert storage.read("d/e/a.bin") == b"new content"
    assert all_files(tmp_path) == ["d/e/a.bin"]
    assert Storage(f"file://{tmp_path}").read("d/e/a.bin") == b"new content"


def test_an_interrupted_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(str(tmp_path))
    storage.write("d/a.bin", b"old")

    def crash(*args: object) -> None:
        raise OSError("disk pulled")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk pulled"):
        storage.write("d/a.bin", b"new")
    monkeypatch.undo()
    assert storage.read("d/a.bin") == b"old"
    [temporary] = [path for path in all_files(tmp_path) if path != "d/a.bin"]
    assert temporary.startswith("d/.a.bin.") and temporary.endswith(".tmp")
    assert (tmp_path / temporary).read_bytes() == b"new"
    assert storage.list("d") == sorted(["d/a.bin", temporary])
    assert storage.remove_temporaries("d", "b.bin") == 0
    assert storage.remove_temporaries("d", "a.bin") == 1
    assert all_files(tmp_path) == ["d/a.bin"]


def test_list_and_delete(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    assert storage.list("nowhere") == []
    for path in ("x/b", "x/a", "x/y/c", "z"):
        storage.write(path, b".")
    assert storage.list("x") == ["x/a", "x/b", "x/y/c"]
    storage.delete("x/a")
    storage.delete("x/a")  # gone already: fine
    assert storage.list("x") == ["x/b", "x/y/c"]


# --- erasure records --------------------------------------------------------------------


def test_record_erasure_is_idempotent_and_grows_by_union(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    h1, h2, h3 = (Erased(NS).hash(person) for person in ("u1", "a2", "u3"))
    assert record_erasure(storage, "er-1", [h1])
    [path] = storage.list(ERASURES_DIR)
    raw, stamp = storage.read(path), (tmp_path / path).stat().st_mtime_ns
    time.sleep(0.01)
    assert not record_erasure(storage, "er-1", [h1])
    assert storage.read(path) == raw
    assert (tmp_path / path).stat().st_mtime_ns == stamp
    assert record_erasure(storage, "er-1", [h2])
    assert not record_erasure(storage, "er-1", [h2, h1])
    assert json.loads(storage.read(path) or b"") == {"record": "er-1", "ids": sorted([h1, h2])}
    assert record_erasure(storage, "er-2", [h3])
    assert len(storage.list(ERASURES_DIR)) == 2
    assert Erased.load(storage, NS).hashes == {h1, h2, h3}


@pytest.mark.parametrize("erasure_id", ["../../escape", "a/b/c", "/abs", "..", "é x\x00y"])
def test_any_erasure_id_makes_a_file_inside_erasures(tmp_path: Path, erasure_id: str) -> None:
    root = tmp_path / "root"
    storage = Storage(str(root))
    assert record_erasure(storage, erasure_id, ["ab" * 32])
    [path] = all_files(tmp_path)
    directory, _, file_name = path.rpartition("/")
    assert directory == f"root/{ERASURES_DIR}"
    assert len(file_name) == len("0" * 32 + ".json") and file_name.endswith(".json")
    assert not record_erasure(storage, erasure_id, ["ab" * 32])
    assert Erased.load(storage, NS).hashes == {"ab" * 32}


def test_erased_covers_by_any_id_in_its_namespace(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    assert not Erased.load(storage, NS)  # nothing recorded yet
    record_erasure(storage, "er", [Erased(NS).hash(person) for person in ("u1", "a2", "u3")])
    storage.write(f"{ERASURES_DIR}/notes.txt", b"not json at all")  # not an erasure record
    erased = Erased.load(storage, NS)
    assert erased and len(erased.hashes) == 3
    assert erased.hash("u1") == hashlib.sha256(b"dmp\x1fu1").hexdigest()
    assert erased.covers(event(0, T0, profile_id="u1"))
    assert erased.covers(event(0, T0, profile_id="x", anonymous_id="a2"))
    assert erased.covers(event(0, T0, profile_id="x", user_id="u3"))
    assert not erased.covers(event(0, T0, profile_id="x", anonymous_id="u4", user_id="a5"))
    assert not Erased.load(storage, "other-app").covers(event(0, T0, profile_id="u1"))


# --- compaction -------------------------------------------------------------------------


def put(
    storage: Storage,
    hour: int,
    partition: int,
    first: int,
    last: int,
    profile: str | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    """A history file of offsets first..last, events in ``hour`` in reverse offset order."""
    rows = Rows()
    for offset in range(first, last + 1):
        ts = hour + (10_000 - offset) * 100
        fields = {"utm": {"utm_content": f"c{offset}"}}
        rows.add(event(offset, ts, profile_id=profile or f"p{offset}", **fields), partition, offset)
    path = f"{hour_dir(hour)}/{name(partition, first, last)}"
    storage.write_table(path, rows.table().drop_columns(list(drop)))
    return path


def commit(storage: Storage, partition: int, next_offset: int) -> None:
    storage.write(state_path(partition), SinkState(next_offset).to_bytes())


def listing(storage: Storage) -> list[str]:
    return storage.list("events")


def test_compact_merges_each_closed_hour_per_partition(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    hours = (T0, T0 + HOUR)
    for partition in (0, 1):
        commit(storage, partition, 100)
        for h, hour in enumerate(hours):
            for k in range(3):
                first = 20 * h + 3 * k
                put(storage, hour, partition, first, first + 2)
    done = compact(storage, T0 + 3 * HOUR)  # both hours closed: each ended an hour ago
    assert (done.merged, done.inputs, done.rows, done.removed) == (4, 12, 36, 0)
    expected = [
        f"{hour_dir(hour)}/{name(partition, 20 * h, 20 * h + 8, compacted=True)}"
        for h, hour in enumerate(hours)
        for partition in (0, 1)
    ]
    assert listing(storage) == sorted(expected)
    for path in expected:
        table = storage.read_table(path)
        first = int(FileName.parse(path.rpartition("/")[2]).first)  # type: ignore[union-attr]
        assert offsets(table) == list(range(first + 8, first - 1, -1))  # by timestamp
        times = table.column("timestamp").to_pylist()
        assert times == sorted(times)
        assert set(table.column("kafka_partition").to_pylist()) == {
            FileName.parse(path.rpartition("/")[2]).partition  # type: ignore[union-attr]
        }
        assert table.schema.metadata[VERSION_KEY] == b"1"
    again = compact(storage, T0 + 3 * HOUR)
    assert (again.merged, again.removed) == (0, 0)
    assert listing(storage) == sorted(expected)


def test_compact_leaves_open_hours_and_uncommitted_files(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    now = T0 + 4 * HOUR
    commit(storage, 0, 9)
    closed = [put(storage, T0 + 2 * HOUR, 0, k, k + 2) for k in (0, 3, 6)]  # closed at now
    uncommitted = put(storage, T0 + 2 * HOUR, 0, 9, 11)  # last >= the stored offset
    open_hour = [put(storage, T0 + 3 * HOUR, 0, k, k) for k in (12, 13)]
    never = [put(storage, T0, 5, k, k + 1) for k in (0, 2)]  # no state: nothing committed
    done = compact(storage, now)
    assert (done.merged, done.inputs) == (1, 3)
    merged = f"{hour_dir(T0 + 2 * HOUR)}/{name(0, 0, 8, compacted=True)}"
    assert listing(storage) == sorted([merged, uncommitted, *open_hour, *never])
    assert not set(closed) & set(listing(storage))
    # a millisecond before the hour closes, it stays as it is
    commit(storage, 0, 100)
    assert compact(storage, T0 + 5 * HOUR - 1).merged == 1  # the hour T0+2h again, not T0+3h
    assert set(open_hour) <= set(listing(storage))
    assert compact(storage, T0 + 5 * HOUR).merged == 1
    assert not set(open_hour) & set(listing(storage))


def test_compact_keeps_each_offset_once_and_drops_erased_people(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    commit(storage, 0, 100)
    put(storage, T0, 0, 0, 4)
    put(storage, T0, 0, 3, 7)  # a woken stopped worker wrote offsets 3 and 4 again
    put(storage, T0, 0, 8, 9, profile="gone")
    erased = Erased(NS, [Erased(NS).hash("gone")])
    done = compact(storage, T0 + 2 * HOUR, erased)
    assert (done.merged, done.inputs, done.rows) == (1, 3, 8)
    [path] = listing(storage)
    assert path.endswith(name(0, 0, 9, compacted=True))
    table = storage.read_table(path)
    assert offsets(table) == [7, 6, 5, 4, 3, 2, 1, 0]
    assert "gone" not in table.column("profile_id").to_pylist()


def test_an_interrupted_compaction_is_finished_by_the_next(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    commit(storage, 0, 100)
    commit(storage, 1, 100)
    inputs = [put(storage, T0, 0, k, k + 1) for k in (0, 2, 4)]
    elsewhere = [put(storage, T0 + 2 * HOUR, 0, 0, 1), put(storage, T0, 1, 0, 1)]
    saved = {path: storage.read(path) for path in inputs}
    assert compact(storage, T0 + 2 * HOUR).merged == 1
    merged = f"{hour_dir(T0)}/{name(0, 0, 5, compacted=True)}"
    merged_bytes = storage.read(merged)
    for path in inputs[1:]:  # stopped after writing the merged file, before deleting these
        storage.write(path, saved[path] or b"")
    files = history_files(listing(storage))
    assert sorted(file.path for file in visible(files)) == sorted([merged, *elsewhere])
    done = compact(storage, T0 + 2 * HOUR)
    assert (done.merged, done.removed) == (0, 2)
    assert listing(storage) == sorted([merged, *elsewhere])
    assert storage.read(merged) == merged_bytes


def test_compact_merges_a_compacted_file_with_late_files(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    commit(storage, 0, 100)
    for k in (0, 2):
        put(storage, T0, 0, k, k + 1)
    compact(storage, T0 + 2 * HOUR)
    put(storage, T0, 0, 50, 51)  # a late event of that hour, flushed later
    assert compact(storage, T0 + 3 * HOUR).merged == 1
    [path] = listing(storage)
    assert path.endswith(name(0, 0, 51, compacted=True))
    assert sorted(offsets(storage.read_table(path))) == [0, 1, 2, 3, 50, 51]


def test_files_of_an_older_schema_merge_with_nulls(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    commit(storage, 0, 100)
    put(storage, T0, 0, 0, 1, drop=("utm_content", "traits"))
    put(storage, T0, 0, 2, 3)
    assert compact(storage, T0 + 2 * HOUR).merged == 1
    [path] = listing(storage)
    table = storage.read_table(path)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    by_offset = dict(zip(offsets(table), table.column("utm_content").to_pylist(), strict=True))
    assert by_offset == {0: None, 1: None, 2: "c2", 3: "c3"}


def test_compaction_survives_a_worker_recovering_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``history compact`` runs while workers write: a worker taking partition 0 over
    (recover) in the middle of compaction's write must not make compaction fail."""
    storage = Storage(str(tmp_path))
    commit(storage, 0, 100)
    for k in (0, 2):
        put(storage, T0, 0, k, k + 1)
    fsync = os.fsync
    recovered: list[SinkState] = []

    def fsync_then_recover(descriptor: int) -> None:
        fsync(descriptor)
        if not recovered:
            recovered.append(recover(storage, 0))  # the worker, while the file is written

    monkeypatch.setattr(os, "fsync", fsync_then_recover)
    compact(storage, T0 + 2 * HOUR)
    monkeypatch.undo()
    assert recovered == [SinkState(100)]
    assert listing(storage) == [f"{hour_dir(T0)}/{name(0, 0, 3, compacted=True)}"]


# --- erase_rows -------------------------------------------------------------------------


def test_erase_rows_rewrites_only_files_with_erased_rows_of_its_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(str(tmp_path))
    dirty = put(storage, T0, 0, 0, 2)
    rows = Rows()  # one of the erased person's rows, found by its anonymous id
    rows.add(event(3, T0, profile_id="x", anonymous_id="gone"), 0, 3)
    rows.add(event(4, T0, profile_id="stays"), 0, 4)
    by_anonymous = f"{hour_dir(T0)}/{name(0, 3, 4)}"
    storage.write_table(by_anonymous, rows.table())
    clean = put(storage, T0 + HOUR, 0, 5, 6)
    other = put(storage, T0, 1, 0, 2)  # another partition's
    record_erasure(storage, "r1", [Erased(NS).hash(person) for person in ("p1", "gone")])
    erased = Erased.load(storage, NS)
    stamps = {path: (tmp_path / path).stat().st_mtime_ns for path in (clean, other)}
    before = {path: storage.read(path) for path in (clean, other)}

    assert erase_rows(storage, erased, [0]) == 2
    assert offsets(storage.read_table(dirty)) == [0, 2]
    assert storage.read_table(by_anonymous).column("profile_id").to_pylist() == ["stays"]
    assert storage.read_table(dirty).schema.equals(SCHEMA, check_metadata=False)
    for path in (clean, other):
        assert storage.read(path) == before[path]
        assert (tmp_path / path).stat().st_mtime_ns == stamps[path]
    swept = json.loads(storage.read(swept_path(0)) or b"")
    assert sorted(swept["files"]) == sorted([dirty, by_anonymous, clean])
    assert offsets(storage.read_table(other)) == [0, 1, 2]

    reads: list[str] = []
    read_table = storage.read_table

    def counting(path: str, columns: list[str] | None = None) -> pa.Table:
        reads.append(path)
        return read_table(path, columns)

    monkeypatch.setattr(storage, "read_table", counting)
    stamps = {path: (tmp_path / path).stat().st_mtime_ns for path in listing(storage)}
    assert erase_rows(storage, erased, [0]) == 0  # swept already, by anyone: nothing read
    assert reads == []
    assert {path: (tmp_path / path).stat().st_mtime_ns for path in listing(storage)} == stamps

    record_erasure(storage, "r2", [Erased(NS).hash("p6")])
    more = Erased.load(storage, NS)
    assert erase_rows(storage, more, [0]) == 1
    assert sorted(set(reads)) == sorted([dirty, by_anonymous, clean])
    monkeypatch.undo()
    assert offsets(storage.read_table(clean)) == [5]
    assert erase_rows(storage, more, [1]) == 1
    assert offsets(storage.read_table(other)) == [0, 2]


def test_a_file_written_well_after_an_erasure_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its sink knew the erasure and left the rows out: no need to read it again."""
    storage = Storage(str(tmp_path))
    record_erasure(storage, "r1", [Erased(NS).hash("p1")])
    record = next(iter(Erased.load(storage, NS).records))
    old = (tmp_path / record).stat().st_mtime_ns - SWEEP_MARGIN_NS - 10**9
    os.utime(tmp_path / record, ns=(old, old))
    late = put(storage, T0, 0, 0, 2)  # holds p1's row, as a file no sink writes
    reads: list[str] = []
    read_table = storage.read_table
    monkeypatch.setattr(
        storage,
        "read_table",
        lambda path, columns=None: reads.append(path) or read_table(path, columns),
    )
    assert erase_rows(storage, Erased.load(storage, NS), [0]) == 0
    assert reads == []
    assert offsets(read_table(late)) == [0, 1, 2]


def test_a_flush_leaves_out_who_was_erased_since_the_rows_were_read(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    sink = PartitionSink(0, SinkState(), 0)
    sink.add(0, value(0, T0, profile_id="p-late"), None, NOBODY, SENT)
    sink.add(1, value(1, T0, profile_id="kept"), None, NOBODY, SENT)
    flush = sink.detach()
    assert flush is not None
    flush.write(storage, Erased(NS, [Erased(NS).hash("p-late")]))
    ((path, _),) = flush.files
    assert storage.read_table(path).column("profile_id").to_pylist() == ["kept"]
    assert stored_state(storage, 0).next_offset == 2
