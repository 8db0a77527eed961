"""``build_profiles``: identity stitching, profiles, segments, frequency.

Reads ``profiles.in`` batches (items keyed by the id a command concerns), up
to 64 records at a time, and hands each command with the key's record to
:func:`dmp_faust.domain.identity.handle`. Within a take a key's record is
read once and written once (:mod:`dmp_faust.bulk`); the commands that cross
partitions and the segment deltas go out as batches, each item stamped with
its position; segment changes go to ``segments.changes``, one record each.
``count_segment_sizes`` folds the deltas into sizes keyed by segment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
from prometheus_client import REGISTRY

from dmp_faust.app import app, fence, segment_rules, settings
from dmp_faust.batching import TAKE_WITHIN_S, Outbox, partition_for
from dmp_faust.bulk import Records, TableWrites
from dmp_faust.domain import profiles as pf
from dmp_faust.domain.batches import (
    CommandItem,
    DeltaItem,
    decode_commands,
    decode_deltas,
    position,
)
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.erasure_status import keep_note
from dmp_faust.domain.identity import (
    Context,
    ErasureNote,
    Outcome,
    command_time,
    decode_erased,
    encode_erased,
    erasure_key,
    handle,
)
from dmp_faust.domain.segments import evaluate
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.domain.watermarks import SOURCE_HEADER, Watermarks, decode_source, source_id
from dmp_faust.domain.windows import advance_stream_time
from dmp_faust.history.files import Storage
from dmp_faust.history.sink import record_erasure
from dmp_faust.metrics import TableGauges
from dmp_faust.readiness import settled_partitions
from dmp_faust.settings import DAY_MS
from dmp_faust.state import InputGate, StreamClock, header, take_runs
from dmp_faust.topics import profile_commands, segment_changes, segment_deltas
from dmp_faust.web import active_partitions
from tables.erasure_status import erasure_status
from tables.erasures import erasures
from tables.profile_counts import profile_counts
from tables.profiles import profiles
from tables.segment_sizes import segment_sizes
from tables.stream_times import stream_times

FREQUENCY_HORIZON_MS = DAY_MS
PROFILES_STREAM = 1  # source-id stream of commands this agent sends (0: events.valid)
VIEWS_STREAM = 2  # source-id stream of commands views send (no source header)
TAKE_RECORDS = 64  # profiles.in records (each a batch of commands) taken at once
clock = StreamClock("profiles")
gate = InputGate("profiles", profile_commands, settings)
sizes_gate = InputGate("segment_sizes", segment_deltas, settings)


def segments_of(profile: pf.Profile) -> frozenset[str]:
    return evaluate(segment_rules, pf.facts(profile))


@dataclass
class Batch:
    """What a take touched in one ``profiles.in`` partition: each key read once, written once."""

    partition: int
    stream_time: int
    next_offset: int | None  # of the next input record to process (see InputGate)
    times: TableWrites
    profiles: TableWrites
    erasures: TableWrites
    statuses: TableWrites
    counts: TableWrites
    forward: Outbox
    deltas: Outbox
    records: dict[str, pf.Profile | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # keys whose record changed
    erased_dirty: set[str] = field(default_factory=set)  # keys whose erasure marks changed
    # per erased key: the marks and cutoff it keeps (None, None: never erased)
    erased: dict[str, tuple[Watermarks | None, int | None]] = field(default_factory=dict)
    profiles_deltas: dict[int, int] = field(default_factory=dict)  # input offset -> delta
    processed: bool = False

    def prefetch(self, keys: list[str]) -> None:
        self.profiles.prefetch([key.encode() for key in keys if key not in self.records])
        self.erasures.prefetch([_erasure_key(key) for key in keys if key not in self.erased])

    def record(self, key: str) -> pf.Profile | None:
        if key not in self.records:
            self.records[key] = pf.from_bytes(self.profiles.get(key.encode()))
        return self.records[key]

    def erased_marks(self, key: str) -> tuple[Watermarks | None, int | None]:
        """The marks and the cutoff an erasure of ``key`` left, if any."""
        if key not in self.erased:
            raw = self.erasures.get(_erasure_key(key))
            self.erased[key] = decode_erased(raw) if raw else (None, None)
        return self.erased[key]

    def apply(self, key: str, outcome: Outcome, offset: int) -> None:
        if outcome.write:
            self.records[key] = outcome.record
            self.dirty.add(key)
        if outcome.erased is not None or outcome.before_ms is not None:
            marks, before_ms = self.erased_marks(key)
            if outcome.before_ms is not None:
                later = (
                    outcome.before_ms if before_ms is None else max(before_ms, outcome.before_ms)
                )
                before_ms = later
            self.erased[key] = (outcome.erased or marks or Watermarks(), before_ms)
            self.erased_dirty.add(key)
        if outcome.profiles_delta:
            self.profiles_deltas[offset] = (
                self.profiles_deltas.get(offset, 0) + outcome.profiles_delta
            )

    async def store(self, generation: int) -> None:
        for key in self.erased_dirty:
            marks, before_ms = self.erased[key]
            self.erasures.put(_erasure_key(key), encode_erased(marks or Watermarks(), before_ms))
        for key in self.dirty:
            record = self.records[key]
            self.profiles.put(key.encode(), None if record is None else pf.to_bytes(record))
        if self.profiles_deltas:
            # Guarded by the input offset each delta came from: a replay does not count
            # again what a crashed take counted (see the order of the commits below).
            count_key = str(self.partition).encode()
            count = GuardedCounter.from_stored(self.counts.get(count_key))
            count.apply_offsets(source_id(PROFILES_STREAM, self.partition), self.profiles_deltas)
            self.counts.put(count_key, count.to_bytes())
        if not self.processed or self.next_offset is None:
            return
        clock.advance(self.times, self.partition, self.stream_time)
        gate.done(self.times, self.partition, self.next_offset - 1)
        # The count before the profiles: after a crash between the two, the replay finds
        # these offsets counted and skips them. The other way round (or at once), it would
        # find profiles created already, count 0 for them, and the count would fall short.
        await fence.write(generation, [self.counts])
        await fence.write(generation, [self.profiles, self.erasures, self.statuses])
        # The gate last: what it lets by is in the tables.
        await fence.write(generation, [self.times])


def _erasure_key(key: str) -> bytes:
    return erasure_key(settings.app_id, key)


@app.agent(profile_commands)
async def build_profiles(stream: Any) -> None:
    takes = stream.take_events(TAKE_RECORDS, TAKE_WITHIN_S)
    expected, mine = partial(_next_offset, gate), partial(settled_partitions, profile_commands)
    async for ordered in gate.takes(takes, expected, app.consumer, mine, TAKE_RECORDS):
        await take_runs("profiles", ordered, _take)


async def _take(run: list[Any]) -> None:
    """Handle one run of records (see :func:`dmp_faust.state.runs`) and write it."""
    generation = fence.generation()
    forwards, deltas = Records(app, profile_commands), Records(app, segment_deltas)
    changes = Records(app, segment_changes)
    taken: dict[int, Batch] = {}
    for event in run:
        partition = event.message.partition
        batch = taken.get(partition) or _open(taken, forwards, deltas, partition)
        batch.next_offset, batch.processed = event.message.offset + 1, True
        _handle_record(batch, event, changes)
        await asyncio.sleep(0)  # one record at a time: let heartbeats and requests in
    for partition, batch in taken.items():
        if not batch.processed or batch.next_offset is None:
            continue
        source = (source_id(PROFILES_STREAM, partition), batch.next_offset - 1)
        batch.forward.close(source)
        batch.deltas.close(source)
    # Output first, then the tables: a crash in between replays these records against
    # the records as they were, which sends the same commands and deltas again with
    # the same positions, and the folds downstream skip them. The other way round,
    # the records would already reflect the commands and their output would be lost.
    await fence.check(generation)  # a worker dropped from the group writes nothing
    await asyncio.gather(forwards.send(), deltas.send(), changes.send())
    erased = {p: b.erased_dirty for p, b in taken.items() if b.erased_dirty and b.next_offset}
    if erased and settings.history_enabled:  # output too: replayed, it writes the same
        await asyncio.to_thread(_record_erased, erased, taken)
    await asyncio.gather(*(batch.store(generation) for batch in taken.values()))


def _record_erased(erased: dict[int, set[str]], taken: dict[int, Batch]) -> None:
    """Tell the history every id this take erased (see :mod:`dmp_faust.history.sink`):
    hashed as the ``erasures`` table keys them, one record per partition and take."""
    storage = Storage(settings.history_root)
    for partition, keys in erased.items():
        record = f"profiles.in:{partition}:{taken[partition].next_offset}"
        record_erasure(storage, record, [_erasure_key(key).hex() for key in keys])


def _next_offset(input_gate: InputGate, partition: int) -> int | None:
    """The next input offset of ``partition`` at ``input_gate``, as stored."""
    return input_gate.expected(TableWrites(app, stream_times, partition), partition)


def _open(taken: dict[int, Batch], forwards: Records, deltas: Records, partition: int) -> Batch:
    """Start on ``partition`` for this run."""
    times = TableWrites(app, stream_times, partition)
    taken[partition] = Batch(
        partition,
        clock.get(times, partition) or 0,
        gate.expected(times, partition),
        times,
        TableWrites(app, profiles, partition),
        TableWrites(app, erasures, partition),
        TableWrites(app, erasure_status, partition),
        TableWrites(app, profile_counts, partition),
        Outbox(forwards),
        Outbox(deltas),
    )
    return taken[partition]


def _handle_record(batch: Batch, event: Any, changes: Records) -> None:
    """Hand each command of one ``profiles.in`` record to :func:`identity.handle`."""
    offset = event.message.offset
    raw_source = header(event.message.headers, SOURCE_HEADER)
    from_id = decode_source(raw_source)[0] if raw_source else None  # None: from HTTP
    here_id = source_id(PROFILES_STREAM, batch.partition)
    items = decode_commands(event.value)
    batch.prefetch([item.key for item in items])
    for index, item in enumerate(items):
        batch.stream_time = advance_stream_time(batch.stream_time, command_time(item.command) or 0)
        here = (here_id, position(offset, index))
        if from_id is not None:
            source = (from_id, item.position)
        else:  # from a view: a stream of its own (see identity.Context.from_view)
            source = (source_id(VIEWS_STREAM, batch.partition), here[1])
        if isinstance(item.command, ErasureNote):  # the latest ones are kept, see the module
            keep_note(batch.statuses, batch.partition, item.command, here[1])
            continue
        marks, before_ms = batch.erased_marks(item.key)
        context = Context(
            source,
            here,
            batch.stream_time,
            FREQUENCY_HORIZON_MS,
            segments_of,
            marks,
            before_ms,
            settings.app_id,
            from_view=from_id is None,
        )
        outcome = handle(item.key, batch.record(item.key), item.command, context)
        batch.apply(item.key, outcome, offset)
        for target, command in outcome.sends:
            batch.forward.add(target, CommandItem(target, here[1], command))
        _segment_changes(item.key, outcome, here[1], batch, changes)


def _segment_changes(key: str, outcome: Outcome, here: int, batch: Batch, changes: Records) -> None:
    at = format_timestamp(batch.stream_time)
    for action, segments, delta in (("enter", outcome.entered, 1), ("exit", outcome.exited, -1)):
        for segment in segments:
            change = {"profile_id": key, "segment": segment, "action": action, "at": at}
            changes.add(partition_for(key), key.encode(), msgspec.json.encode(change))
            batch.deltas.add(segment, DeltaItem(segment, here, delta))


@app.agent(segment_deltas)
async def count_segment_sizes(stream: Any) -> None:
    takes = stream.take_events(TAKE_RECORDS, TAKE_WITHIN_S)
    expected, mine = partial(_next_offset, sizes_gate), partial(settled_partitions, segment_deltas)
    async for ordered in sizes_gate.takes(takes, expected, app.consumer, mine, TAKE_RECORDS):
        await take_runs("segment_sizes", ordered, _count_sizes)


async def _count_sizes(run: list[Any]) -> None:
    """Fold one run of ``segments.deltas`` records into the sizes and write them."""
    generation = fence.generation()
    stores: dict[int, tuple[TableWrites, TableWrites]] = {}  # sizes, times
    next_offsets: dict[int, int] = {}
    sizes: dict[tuple[int, str], GuardedCounter] = {}
    for event in run:
        partition = event.message.partition
        if partition not in stores:
            stores[partition] = (
                TableWrites(app, segment_sizes, partition),
                TableWrites(app, stream_times, partition),
            )
        next_offsets[partition] = event.message.offset + 1
        store = stores[partition][0]
        from_id, _ = decode_source(header(event.message.headers, SOURCE_HEADER))
        for item in decode_deltas(event.value):
            key = (partition, item.segment)
            if key not in sizes:
                sizes[key] = GuardedCounter.from_bytes(store.get(item.segment.encode()))
            sizes[key].apply_once((from_id, item.position), item.delta)
        await asyncio.sleep(0)  # one record at a time: let heartbeats and requests in
    for (partition, segment), size in sizes.items():
        stores[partition][0].put(segment.encode(), size.to_bytes())
    for partition, next_offset in next_offsets.items():
        sizes_gate.done(stores[partition][1], partition, next_offset - 1)
    # A worker dropped from the group writes nothing (dmp_faust/fence.py).
    await fence.write(generation, [counts for counts, _ in stores.values()])
    await fence.write(generation, [times for _, times in stores.values()])  # the gate last


def _profiles_here() -> int:
    return sum(
        GuardedCounter.from_stored(profile_counts.get(str(p))).value
        for p in active_partitions(profile_commands)
    )


def _segment_sizes_here() -> list[tuple[str, int]]:
    active = active_partitions(profile_commands)
    return [
        (rule.id, GuardedCounter.from_bytes(segment_sizes.get(rule.id)).value)
        for rule in segment_rules
        if partition_for(rule.id) in active
    ]


REGISTRY.register(TableGauges(_profiles_here, _segment_sizes_here))
