"""``build_profiles``: identity stitching, profiles, segments, frequency.

Reads ``profiles.in`` (keyed by the id a command concerns) and hands each
command with the key's record to :func:`dmp_faust.domain.identity.handle`;
writes the record back, sends the commands that cross partitions, and
publishes segment changes. ``count_segment_sizes`` folds those changes into
sizes keyed by segment.
"""

from __future__ import annotations

from typing import Any

import msgspec
from prometheus_client import REGISTRY

from dmp_faust.app import app, segment_rules, settings
from dmp_faust.domain import profiles as pf
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.identity import (
    Command,
    Context,
    FoldEvent,
    MergeFragment,
    Outcome,
    decode_command,
    encode_command,
    erasure_key,
    handle,
)
from dmp_faust.domain.segments import evaluate
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.domain.watermarks import (
    SOURCE_HEADER,
    Watermarks,
    decode_source,
    encode_source,
    source_id,
)
from dmp_faust.metrics import TableGauges
from dmp_faust.settings import DAY_MS
from dmp_faust.state import StreamClock, decode_int, encode_int, header
from dmp_faust.topics import profile_commands, segment_changes, segment_deltas
from dmp_faust.web import active_partitions, partition_for
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


def _event_time(command: Command) -> int | None:
    if isinstance(command, FoldEvent):
        return command.event.ts
    if isinstance(command, MergeFragment):
        return command.fragment.last_seen
    return None


@app.agent(profile_commands)
async def build_profiles(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        key = message.key.decode()
        command = decode_command(event.value)
        ts = _event_time(command)
        stream_time = (
            clock.advance(message.partition, ts)
            if ts is not None
            else (clock.get(message.partition) or 0)
        )
        here = (source_id(PROFILES_STREAM, message.partition), message.offset)
        raw_source = header(message.headers, SOURCE_HEADER)
        source = decode_source(raw_source) if raw_source else here  # an erasure from HTTP
        marks = erasures.get(erasure_key(settings.app_id, key))
        erased = Watermarks.read(marks)[0] if marks else None
        context = Context(source, here, stream_time, FREQUENCY_HORIZON_MS, segments_of, erased)
        outcome = handle(key, pf.from_bytes(profiles.get(key)), command, context)
        _store(key, outcome, message.partition)
        await _publish(key, outcome, stream_time, [(SOURCE_HEADER, encode_source(*here))])


def _store(key: str, outcome: Outcome, partition: int) -> None:
    if outcome.erased is not None:
        erasures[erasure_key(settings.app_id, key)] = outcome.erased.to_bytes()
    if outcome.write:
        if outcome.record is not None:
            profiles[key] = pf.to_bytes(outcome.record)
        elif key in profiles:
            del profiles[key]
    if outcome.profiles_delta:
        count = decode_int(profile_counts.get(str(partition))) or 0
        profile_counts[str(partition)] = encode_int(count + outcome.profiles_delta)


async def _publish(key: str, outcome: Outcome, stream_time: int, headers: list[Any]) -> None:
    for target, command in outcome.sends:
        await profile_commands.send(
            key=target.encode(), value=encode_command(command), headers=headers
        )
    at = format_timestamp(stream_time)
    for action, segments, delta in (("enter", outcome.entered, 1), ("exit", outcome.exited, -1)):
        for segment in segments:
            change = {"profile_id": key, "segment": segment, "action": action, "at": at}
            await segment_changes.send(key=key.encode(), value=msgspec.json.encode(change))
            await segment_deltas.send(
                key=segment.encode(), value=str(delta).encode(), headers=headers
            )


@app.agent(segment_deltas)
async def count_segment_sizes(stream: Any) -> None:
    async for event in stream.events():
        segment = event.message.key
        source = decode_source(header(event.message.headers, SOURCE_HEADER))
        size = GuardedCounter.from_bytes(segment_sizes.get(segment))
        if size.apply_once(source, int(event.value)):
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
