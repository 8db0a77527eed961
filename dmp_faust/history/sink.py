"""The history sink: ``events.clean`` partitions written to Parquet, each event once.

Exactly once rests on three rules (docs in the README, "History"):

1. **The files are the commit.** Each partition's progress is a small state
   file, ``_sink/p003.json``: the next ``events.clean`` offset to write and the
   source watermarks. A flush writes its data files first (each whole or not
   at all, see :mod:`.files`), then the state file. After a crash the sink
   starts from the state file and deletes the partition's data files from at
   or past its offset: those of a flush whose state was never written. They
   are written again, from the same records. Kafka's committed offsets play no
   part in it.
2. **Copies are dropped by their source.** The clean topic can hold an event
   twice after the de-duplication stage replayed a take. Every clean record
   names its source (``events.valid`` partition and position, header
   ``dmp-src``), and a replay sends the same event with the same source, in
   the same order: a record at or below the partition's watermark for its
   source is a copy (:mod:`dmp_faust.domain.watermarks`).
3. **Only the owner writes.** A flush checks the group fence first, and a
   partition whose stored state changed under it (another worker wrote it
   while the group moved it) starts again from the stored state.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from dmp_faust.domain.enrich import CleanEvent
from dmp_faust.domain.timefmt import MAX_MS, MIN_MS
from dmp_faust.domain.watermarks import Watermarks
from dmp_faust.history.files import Storage
from dmp_faust.history.schema import (
    EVENTS_DIR,
    ID_COLUMNS,
    FileName,
    Rows,
    decode_clean,
    hour_dir,
    hour_of,
)

log = logging.getLogger(__name__)

STATE_DIR: Final = "_sink"
ERASURES_DIR: Final = "_erasures"
# Rows a partition holds before it is flushed, whatever its age: what bounds the
# sink's memory (about 1 KiB a row in Python, so about 10 MiB per partition).
MAX_ROWS: Final = 10_000
HASH_CACHE: Final = 32_768  # ids whose erasure hash is kept (10 MiB at 20 characters an id)


@dataclass(frozen=True)
class SinkState:
    """What ``_sink/pNNN.json`` holds: where a partition's history stands."""

    next_offset: int | None = None  # None: nothing written yet
    marks: dict[int, int] = field(default_factory=dict)  # source -> highest position
    generation: int = -1  # of the group, when it was written

    def to_bytes(self) -> bytes:
        body = {
            "next_offset": self.next_offset,
            "marks": {str(source): position for source, position in self.marks.items()},
            "generation": self.generation,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> SinkState:
        if not raw:
            return cls()
        body = json.loads(raw)
        marks = {int(source): int(position) for source, position in body["marks"].items()}
        return cls(body["next_offset"], marks, int(body["generation"]))


def state_path(partition: int) -> str:
    return f"{STATE_DIR}/p{partition:03d}.json"


@functools.lru_cache(maxsize=HASH_CACHE)
def _person_hash(namespace: str, person_id: str) -> str:
    """What an erasure record holds for ``person_id`` (cached: the sink and the
    sweep ask for the same few thousand people's ids again and again)."""
    return hashlib.sha256(f"{namespace}\x1f{person_id}".encode()).hexdigest()


class Erased:
    """The hashed ids of erased people (see :func:`dmp_faust.domain.identity.erasure_key`):
    rows of any of them are never written, and are removed from the files."""

    def __init__(
        self,
        namespace: str,
        hashes: Iterable[str] = (),
        records: dict[str, tuple[int, frozenset[str]]] | None = None,
    ) -> None:
        self.namespace = namespace
        self.hashes = frozenset(hashes)
        # record file -> (its modification time in epoch ns, the hashes it holds)
        self.records = records or {}

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def hash(self, person_id: str) -> str:
        return _person_hash(self.namespace, person_id)

    def covers(self, event: CleanEvent) -> bool:
        if not self.hashes:
            return False
        ids = (event.profile_id, event.anonymous_id, event.user_id)
        return any(i is not None and self.hash(i) in self.hashes for i in ids)

    @classmethod
    def load(cls, storage: Storage, namespace: str) -> Erased:
        """Every erasure recorded under ``_erasures/`` (see :func:`record_erasure`)."""
        records = {}
        for path, mtime in storage.listing(ERASURES_DIR).items():
            if path.endswith(".json"):
                raw = storage.read(path)
                if raw:
                    records[path] = (mtime, frozenset(json.loads(raw).get("ids", [])))
        hashes = set().union(*(ids for _, ids in records.values()))
        return cls(namespace, hashes, records)


def erased_mask(table: pa.Table, erased: Erased) -> pa.ChunkedArray:
    """True on the rows of ``table`` that belong to an erased person."""
    mask = None
    for column in ID_COLUMNS:
        if column not in table.column_names:
            continue
        values = table.column(column)
        hit = [
            value
            for value in pc.unique(values).to_pylist()
            if value is not None and erased.hash(value) in erased.hashes
        ]
        found = pc.fill_null(pc.is_in(values, value_set=pa.array(hit, pa.string())), False)
        mask = found if mask is None else pc.or_(mask, found)
    return mask if mask is not None else pa.chunked_array([pa.array([False] * table.num_rows)])


def record_erasure(storage: Storage, record: str, hashed_ids: Iterable[str]) -> bool:
    """Add ``hashed_ids`` (erased ids) to the history's record named ``record``;
    whether it grew. Idempotent: a replayed take writes the same record again."""
    safe = hashlib.sha256(record.encode()).hexdigest()[:32]  # any name makes a file name
    path = f"{ERASURES_DIR}/{safe}.json"
    raw = storage.read(path)
    ids = set(json.loads(raw)["ids"]) if raw else set()
    grown = ids | set(hashed_ids)
    if raw and grown == ids:
        return False
    body = {"record": record, "ids": sorted(grown)}
    storage.write(path, json.dumps(body, sort_keys=True).encode())
    return True


@dataclass
class Flush:
    """What one flush of a partition writes: data files (:meth:`write_files`), then,
    once the worker has proved it still owns the partition, the state
    (:meth:`commit`); or, if not, nothing (:meth:`discard`)."""

    partition: int
    files: list[tuple[str, Rows]]
    state: SinkState  # after this flush
    base: SinkState  # before it, as this worker last read or wrote it

    def write_files(self, storage: Storage, erased: Erased) -> int:
        """Write the data files, without the rows of anyone ``erased`` by now; their bytes."""
        size = 0
        for path, rows in self.files:
            table = rows.table()
            if erased:
                table = table.filter(pc.invert(erased_mask(table, erased)))
            size += storage.write_table(path, table)
        return size

    def commit(self, storage: Storage) -> bool:
        """Write the state, unless the stored state is no longer the one this flush
        follows (another worker wrote the partition meanwhile); whether it did."""
        if stored_state(storage, self.partition) != self.base:
            return False
        storage.write(state_path(self.partition), self.state.to_bytes())
        return True

    def discard(self, storage: Storage) -> None:
        """Delete the data files (their names are this worker's generation's alone)."""
        for path, _ in self.files:
            storage.delete(path)

    def write(self, storage: Storage, erased: Erased) -> int:
        """:meth:`write_files` then :meth:`commit`, with no owner to ask in between."""
        size = self.write_files(storage, erased)
        if not self.commit(storage):
            self.discard(storage)
            raise RuntimeError(f"partition {self.partition} was written by another worker")
        return size


class PartitionSink:
    """One ``events.clean`` partition's rows on their way to the history."""

    def __init__(self, partition: int, stored: SinkState, generation: int) -> None:
        self.partition = partition
        self.stored = stored  # as on storage, as far as this worker knows
        self.generation = generation  # of the group, when the stored state was read
        self.next_offset = stored.next_offset
        self.marks = Watermarks(dict(stored.marks))
        self.hours: dict[int, Rows] = {}
        self.first: int | None = None  # first offset not flushed yet
        self.rows = 0
        self.since = 0  # Kafka timestamp (epoch ms) of the oldest record not flushed yet
        self.copies = 0  # records dropped as copies (by their source)
        self.erased = 0  # rows dropped as an erased person's

    def add(
        self,
        offset: int,
        value: bytes,
        source: tuple[int, int] | None,
        erased: Erased,
        timestamp_ms: int,
    ) -> None:
        """Take the record at ``offset`` (the partition's next one), sent at ``timestamp_ms``."""
        if self.first is None:
            self.first, self.since = offset, timestamp_ms
        self.next_offset = offset + 1
        if source is not None:
            if self.marks.covers(*source):
                self.copies += 1
                return
            self.marks.advance(*source)
        try:
            event = decode_clean(value)
        except msgspec.DecodeError as exc:  # not written by dmp-faust: kept out, said
            log.error(
                "history: events.clean[%d]@%d is not an event (%s)", self.partition, offset, exc
            )
            return
        if not MIN_MS <= event.timestamp <= MAX_MS:  # not from dmp-faust's validation either
            log.error("history: events.clean[%d]@%d has no calendar time", self.partition, offset)
            return
        if erased.covers(event):
            self.erased += 1
            return
        rows = self.hours.get(hour := hour_of(event.timestamp))
        if rows is None:
            rows = self.hours[hour] = Rows()
        rows.add(event, self.partition, offset)
        self.rows += 1

    def due(self, now_ms: int, flush_ms: int) -> bool:
        """Whether the partition should be flushed now: full, or its oldest record was
        sent ``flush_ms`` ago (so its event was accepted about as long ago)."""
        if self.first is None:
            return False
        return self.rows >= MAX_ROWS or now_ms - self.since >= flush_ms

    def detach(self) -> Flush | None:
        """What is not flushed yet, as a :class:`Flush`; the buffer starts empty again."""
        if self.first is None or self.next_offset is None:
            return None
        name = FileName(self.partition, self.first, self.next_offset - 1, False, self.generation)
        files = [(f"{hour_dir(hour)}/{name}", rows) for hour, rows in sorted(self.hours.items())]
        state = SinkState(self.next_offset, dict(self.marks.offsets), self.generation)
        self.hours, self.first, self.rows = {}, None, 0
        return Flush(self.partition, files, state, self.stored)


def recover(storage: Storage, partition: int) -> SinkState:
    """The partition's stored state, once what an interrupted flush left is gone."""
    state = SinkState.from_bytes(storage.read(state_path(partition)))
    # the sink's own, not a compaction's (``…-c.parquet``), which may be under way
    storage.remove_temporaries(EVENTS_DIR, f"p{partition:03d}-", unless="-c.parquet")
    storage.remove_temporaries(STATE_DIR, f"p{partition:03d}.json")
    for path in storage.list(EVENTS_DIR):
        name = FileName.parse(path.rpartition("/")[2])
        if name is None or name.partition != partition or name.compacted:
            continue
        if state.next_offset is None or name.first >= state.next_offset:
            log.warning("history: removing %s, written by a flush that did not finish", path)
            storage.delete(path)
    return state


def stored_state(storage: Storage, partition: int) -> SinkState:
    return SinkState.from_bytes(storage.read(state_path(partition)))
