"""Keeping the history's files few and clean: compaction and erasure.

**Compaction** (``dmp-faust history compact``) merges, in each closed hour, the
files one ``events.clean`` partition wrote into one file named ``…-c.parquet``
after the offsets it spans. A file whose partition and offsets a compacted
file of its hour spans is *covered*: readers skip it (:func:`visible`), so the
merged file and its inputs are never read together. Compaction writes the
merged file (whole or not at all), then deletes its inputs: stopped anywhere,
it leaves either the inputs or the merged file visible, never both, and the
next run deletes what is covered. It only takes files the sink has committed
(below the partition's stored offset) and never writes where the sink writes,
so it can run while workers write. Rows of the same ``events.clean`` offset
(a stopped worker that woke and wrote what its successor wrote too) are kept
once.

**Erasure** rewrites a file without the rows of erased people, in place.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from dmp_faust.history.files import Storage
from dmp_faust.history.schema import EVENTS_DIR, ID_COLUMNS, SCHEMA, FileName, parse_hour_dir
from dmp_faust.history.sink import STATE_DIR, Erased, erased_mask, stored_state

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000
CLOSED_AFTER_MS: Final = HOUR_MS  # an hour is closed an hour after it ended (wall clock)
# A file written this long after an erasure record was written by a sink that had
# read the record (the sink reads them every few seconds, and filters again when it
# flushes; a worker stopped for longer is fenced off by the group).
SWEEP_MARGIN_NS: Final = 60 * 10**9


@dataclass(frozen=True)
class HistoryFile:
    path: str
    directory: str
    name: FileName


def history_files(paths: Iterable[str]) -> list[HistoryFile]:
    """The history's data files among ``paths`` (relative to the root)."""
    found = []
    for path in paths:
        directory, _, base = path.rpartition("/")
        name = FileName.parse(base)
        if name is not None:
            found.append(HistoryFile(path, directory, name))
    return found


def _covers(outer: FileName, inner: FileName) -> bool:
    return (
        outer.compacted
        and outer.partition == inner.partition
        and outer.first <= inner.first
        and inner.last <= outer.last
        and outer != inner
    )


def visible(files: list[HistoryFile]) -> list[HistoryFile]:
    """``files`` without those a compacted file of the same hour covers."""
    compacted: dict[tuple[str, int], list[FileName]] = defaultdict(list)
    for file in files:
        if file.name.compacted:
            compacted[file.directory, file.name.partition].append(file.name)
    return [
        file
        for file in files
        if not any(_covers(c, file.name) for c in compacted[file.directory, file.name.partition])
    ]


@dataclass
class Compaction:
    merged: int = 0  # files written
    inputs: int = 0  # files merged into them
    removed: int = 0  # covered files deleted
    rows: int = 0


def compact(storage: Storage, now_ms: int, erased: Erased | None = None) -> Compaction:
    """Merge the committed files of each closed hour, per partition (see the module)."""
    outcome = Compaction()
    files = history_files(storage.list(EVENTS_DIR))
    shown = {file.path for file in visible(files)}
    for file in files:
        if file.path not in shown:
            storage.delete(file.path)  # merged already, by a run that stopped before this
            outcome.removed += 1
    groups: dict[tuple[str, int], list[HistoryFile]] = defaultdict(list)
    committed: dict[int, int] = {}
    for file in files:
        if file.path not in shown:
            continue
        hour = parse_hour_dir(file.directory)
        if hour is None or hour + HOUR_MS + CLOSED_AFTER_MS > now_ms:
            continue
        partition = file.name.partition
        if partition not in committed:
            committed[partition] = stored_state(storage, partition).next_offset or 0
        if file.name.last < committed[partition]:
            groups[file.directory, partition].append(file)
    for (directory, partition), group in sorted(groups.items()):
        if len(group) < 2:
            continue
        table = _merged([storage.read_table(file.path) for file in group], erased)
        name = FileName(
            partition,
            min(file.name.first for file in group),
            max(file.name.last for file in group),
            compacted=True,
        )
        storage.write_table(f"{directory}/{name}", table)
        for file in group:
            storage.delete(file.path)
        outcome.merged += 1
        outcome.inputs += len(group)
        outcome.rows += table.num_rows
    return outcome


def _merged(tables: list[pa.Table], erased: Erased | None) -> pa.Table:
    """One table of ``tables`` (older schemas brought to the current one), each
    ``events.clean`` offset once, erased people's rows out, in event-time order."""
    table = pa.concat_tables([_current(table) for table in tables])
    if erased:
        table = table.filter(pc.invert(erased_mask(table, erased)))
    if pc.count_distinct(table.column("kafka_offset")).as_py() < table.num_rows:
        # one row per offset: the first of each
        indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
        firsts = indexed.group_by("kafka_offset").aggregate([("_row", "min")])
        table = table.take(firsts.column("_row_min"))
    return table.sort_by([("timestamp", "ascending"), ("kafka_offset", "ascending")])


def _current(table: pa.Table) -> pa.Table:
    """``table`` with the current schema's columns (a column it lacks is all null)."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def erase_rows(storage: Storage, erased: Erased, partitions: Iterable[int]) -> int:
    """Rewrite the files of ``partitions`` that hold rows of ``erased`` people; how many.

    What was swept is kept per partition in ``_sink/pNNN.swept.json``, so that a
    worker that takes a partition over, or starts again, does not read it all
    again: the erasure records swept, and each file's modification time then.
    A file is read when a record it was not swept for is older than the file
    plus :data:`SWEEP_MARGIN_NS`: a file written later than that was written by
    a sink that knew the record, and left its rows out.
    """
    rewritten = 0
    listing = storage.listing(EVENTS_DIR)
    by_partition: dict[int, list[HistoryFile]] = defaultdict(list)
    for file in history_files(listing):
        by_partition[file.name.partition].append(file)
    for partition in partitions:
        path = swept_path(partition)
        raw = storage.read(path)
        memo = json.loads(raw) if raw else {"records": [], "files": {}}
        swept = set(memo["records"])
        files = {}
        for file in by_partition.get(partition, []):
            mtime = listing[file.path]
            known = memo["files"].get(file.path) == mtime
            pending = [
                ids
                for record, (written, ids) in erased.records.items()
                if (record not in swept or not known) and written + SWEEP_MARGIN_NS > mtime
            ]
            if pending:
                try:
                    done = _erase_in(storage, file.path, erased)
                except FileNotFoundError:
                    continue  # compacted away meanwhile (its merged file is swept on its own)
                rewritten += done
                if done:
                    mtime = storage.mtime(file.path) or mtime
            files[file.path] = mtime
        updated = {"records": sorted(set(erased.records)), "files": files}
        if updated != memo:
            storage.write(path, json.dumps(updated, sort_keys=True).encode())
    return rewritten


def swept_path(partition: int) -> str:
    return f"{STATE_DIR}/p{partition:03d}.swept.json"


def _erase_in(storage: Storage, path: str, erased: Erased) -> bool:
    """Rewrite one file without the rows of ``erased`` people; whether it held any."""
    ids = storage.read_table(path, columns=list(ID_COLUMNS))
    if not pc.any(erased_mask(ids, erased)).as_py():
        return False
    table = storage.read_table(path)
    kept = table.filter(pc.invert(erased_mask(table, erased)))
    storage.write_table(path, _current(kept))
    log.info("history: %s: removed %d erased rows", path, table.num_rows - kept.num_rows)
    return True
