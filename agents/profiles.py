"""``build_profiles``: identity stitching, profiles, segments, frequency.

Reads ``profiles.in`` batches (items keyed by the id a command concerns) and
hands each command with the key's record to
:func:`dmp_faust.domain.identity.handle`. Within a batch record a key's
record is read once and written once; the commands that cross partitions
and the segment deltas go out as batches, stamped with this record's
position; segment changes go to ``segments.changes`` one record each.
``count_segment_sizes`` folds the deltas into sizes keyed by segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import REGISTRY

from dmp_faust.app import app, segment_rules, settings
from dmp_faust.batching import Outbox, partition_for
from dmp_faust.domain import profiles as pf
from dmp_faust.domain.batches import (
    CommandItem,
    DeltaItem,
    decode_commands,
    decode_deltas,
    position,
)
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.identity import (
    Context,
    Outcome,
    command_time,
    erasure_key,
    handle,
)
from dmp_faust.domain.segments import evaluate
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.domain.watermarks import SOURCE_HEADER, Watermarks, decode_source, source_id
from dmp_faust.domain.windows import advance_stream_time
from dmp_faust.metrics import TableGauges
from dmp_faust.settings import DAY_MS
from dmp_faust.state import StreamClock, decode_int, encode_int, header
from dmp_faust.topics import profile_commands, segment_changes, segment_deltas
from dmp_faust.web import active_partitions
from tables.erasures import erasures
from tables.profile_counts import profile_counts
from tables.profiles import profiles
from tables.segment_sizes import segment_sizes
from tables.stream_times import stream_times

FREQUENCY_HORIZON_MS = DAY_MS
PROFILES_STREAM = 1  # source-id stream of commands this agent sends (0: events.valid)
clock = StreamClock(stream_times, "profiles")


def segments_of(profile: pf.Profile) -> frozenset[str]:
    return evaluate(segment_rules, pf.facts(profile))


@dataclass
class Batch:
    """The keys one batch record touched: read once, written once."""

    records: dict[str, pf.Profile | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    erased: dict[str, Watermarks] = field(default_factory=dict)
    profiles_delta: int = 0

    def record(self, key: str) -> pf.Profile | None:
        if key not in self.records:
            self.records[key] = pf.from_bytes(profiles.get(key))
        return self.records[key]

    def erased_marks(self, key: str) -> Watermarks | None:
        if key not in self.erased:
            marks = erasures.get(erasure_key(settings.app_id, key))
            if not marks:
                return None
            self.erased[key] = Watermarks.read(marks)[0]
        return self.erased[key]

    def apply(self, key: str, outcome: Outcome) -> None:
        if outcome.write:
            self.records[key] = outcome.record
            self.dirty.add(key)
        if outcome.erased is not None:
            self.erased[key] = outcome.erased
            self.dirty.add(key)
        self.profiles_delta += outcome.profiles_delta

    def store(self, partition: int) -> None:
        for key in self.dirty:
            if key in self.erased:
                erasures[erasure_key(settings.app_id, key)] = self.erased[key].to_bytes()
            record = self.records[key]
            if record is not None:
                profiles[key] = pf.to_bytes(record)
            elif key in profiles:
                del profiles[key]
        if self.profiles_delta:
            count = decode_int(profile_counts.get(str(partition))) or 0
            profile_counts[str(partition)] = encode_int(count + self.profiles_delta)


@app.agent(profile_commands)
async def build_profiles(stream: Any) -> None:
    forward, deltas = Outbox(profile_commands), Outbox(segment_deltas)
    async for event in stream.events():
        partition, offset = event.message.partition, event.message.offset
        raw_source = header(event.message.headers, SOURCE_HEADER)
        from_id = decode_source(raw_source)[0] if raw_source else None  # None: from HTTP
        here_id = source_id(PROFILES_STREAM, partition)
        stream_time = clock.get(partition) or 0
        batch = Batch()
        for index, item in enumerate(decode_commands(event.value)):
            stream_time = advance_stream_time(stream_time, command_time(item.command) or 0)
            here = (here_id, position(offset, index))
            source = (from_id, item.position) if from_id is not None else here
            context = Context(
                source,
                here,
                stream_time,
                FREQUENCY_HORIZON_MS,
                segments_of,
                batch.erased_marks(item.key),
            )
            outcome = handle(item.key, batch.record(item.key), item.command, context)
            batch.apply(item.key, outcome)
            for target, command in outcome.sends:
                forward.add(target, CommandItem(target, here[1], command))
            await _segment_changes(item.key, outcome, here[1], stream_time, deltas)
        batch.store(partition)
        await forward.send((here_id, offset))
        await deltas.send((here_id, offset))
        clock.advance(partition, stream_time)


async def _segment_changes(
    key: str, outcome: Outcome, here: int, stream_time: int, deltas: Outbox
) -> None:
    at = format_timestamp(stream_time)
    for action, segments, delta in (("enter", outcome.entered, 1), ("exit", outcome.exited, -1)):
        for segment in segments:
            change = {"profile_id": key, "segment": segment, "action": action, "at": at}
            await segment_changes.send(key=key.encode(), value=msgspec.json.encode(change))
            deltas.add(segment, DeltaItem(segment, here, delta))


@app.agent(segment_deltas)
async def count_segment_sizes(stream: Any) -> None:
    async for event in stream.events():
        from_id, _ = decode_source(header(event.message.headers, SOURCE_HEADER))
        sizes: dict[str, GuardedCounter] = {}
        for item in decode_deltas(event.value):
            if item.segment not in sizes:
                sizes[item.segment] = GuardedCounter.from_bytes(segment_sizes.get(item.segment))
            sizes[item.segment].apply_once((from_id, item.position), item.delta)
        for segment, size in sizes.items():
            segment_sizes[segment] = size.to_bytes()


def _profiles_here() -> int:
    return sum(
        decode_int(profile_counts.get(str(p))) or 0 for p in active_partitions(profile_commands)
    )


def _segment_sizes_here() -> list[tuple[str, int]]:
    active = active_partitions(profile_commands)
    return [
        (rule.id, GuardedCounter.from_bytes(segment_sizes.get(rule.id)).value)
        for rule in segment_rules
        if partition_for(rule.id) in active
    ]


REGISTRY.register(TableGauges(_profiles_here, _segment_sizes_here))
