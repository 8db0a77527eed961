"""``deduplicate_events``: drop copies and bots, enrich, and fan out.

Reads ``events.valid`` batches (partitioned by event_id, so all copies of an
event meet here); writes each accepted event to ``events.clean`` keyed by
profile id, and batches to ``events.by_campaign`` (by campaign id) and
``profiles.in`` (by anonymous id, else user id). Batch items carry their
position in the valid record, which downstream folds use as watermarks to
skip what a replay sends again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Any

from dmp_faust.app import app, fence, metrics, settings
from dmp_faust.batching import TAKE_WITHIN_S, Outbox, partition_for
from dmp_faust.bulk import Records, TableWrites
from dmp_faust.clock import wall_ms
from dmp_faust.domain.batches import CampaignItem, CommandItem, decode_valid, position
from dmp_faust.domain.dedup import Seen, Verdict, classify, is_forgotten
from dmp_faust.domain.enrich import enrich, is_bot
from dmp_faust.domain.events import CAMPAIGN_TYPES, Event, encode
from dmp_faust.domain.identity import route_event
from dmp_faust.domain.profiles import profile_event
from dmp_faust.domain.watermarks import SOURCE_HEADER, encode_source, source_id
from dmp_faust.domain.windows import advance_stream_time
from dmp_faust.readiness import settled_partitions
from dmp_faust.state import InputGate, StreamClock, Sweeper, take_runs
from dmp_faust.topics import campaign_events, clean_events, profile_commands, valid_events
from tables.seen_events import seen_events
from tables.stream_times import stream_times

HORIZON_MS = settings.dedup_horizon_ms
VALID_STREAM = 0  # source-id stream of what this stage sends
TAKE_RECORDS = 64  # events.valid records (each a batch of events) taken at once
clock = StreamClock("deduplicate")
gate = InputGate("deduplicate", valid_events, settings)


def _forgotten(_key: bytes, value: bytes, stream_time: int) -> bool:
    seen = Seen.from_bytes(value)
    return seen is None or is_forgotten(seen.first_seen, stream_time, HORIZON_MS)


sweeper = Sweeper(seen_events, _forgotten)


@dataclass
class _Partition:
    """What a take gathered for one ``events.valid`` partition."""

    writes: TableWrites  # of seen_events
    times: TableWrites  # of stream_times
    stream_time: int | None
    next_offset: int | None  # of the next input record to process (see InputGate)
    by_campaign: Outbox
    profiles_in: Outbox
    processed: bool = False
    accepted: int = 0


@app.agent(valid_events)
async def deduplicate_events(stream: Any) -> None:
    takes = stream.take_events(TAKE_RECORDS, TAKE_WITHIN_S)
    expected, mine = _next_offset, partial(settled_partitions, valid_events)
    async for ordered in gate.takes(takes, expected, app.consumer, mine, TAKE_RECORDS):
        await take_runs("deduplicate", ordered, _take)


async def _take(run: list[Any]) -> None:
    """Handle one run of records (see :func:`dmp_faust.state.runs`) and write it."""
    generation = fence.generation()
    clean = Records(app, clean_events)
    campaigns, commands = Records(app, campaign_events), Records(app, profile_commands)
    taken: dict[int, _Partition] = {}
    for event in run:
        partition, offset = event.message.partition, event.message.offset
        part = taken.get(partition) or _open(taken, campaigns, commands, partition)
        part.next_offset, part.processed = offset + 1, True
        _deduplicate(part, partition, offset, decode_valid(event.value), clean)
        await asyncio.sleep(0)  # one record at a time: let heartbeats and requests in
    for partition, part in taken.items():
        if not part.processed or part.next_offset is None:
            continue
        source = (source_id(VALID_STREAM, partition), part.next_offset - 1)
        part.by_campaign.close(source)
        part.profiles_in.close(source)
        if part.stream_time is not None:
            clock.advance(part.times, partition, part.stream_time)
        gate.done(part.times, partition, part.next_offset - 1)
    # Output first, then the table: a crash in between replays these records, whose
    # events are then new again and sent again with the same positions, which the
    # folds downstream skip. The other way round, their output would be lost.
    await fence.check(generation)  # a worker dropped from the group writes nothing
    await asyncio.gather(clean.send(), campaigns.send(), commands.send())
    await fence.write(generation, [part.writes for part in taken.values()])
    await fence.write(generation, [part.times for part in taken.values()])  # the gate last
    for part in taken.values():
        metrics.accepted.inc(part.accepted)


def _next_offset(partition: int) -> int | None:
    """The next input offset of ``partition`` (see :class:`InputGate`), as stored."""
    return gate.expected(TableWrites(app, stream_times, partition), partition)


def _open(
    taken: dict[int, _Partition], campaigns: Records, commands: Records, partition: int
) -> _Partition:
    """Start on ``partition`` for this run."""
    times = TableWrites(app, stream_times, partition)
    taken[partition] = _Partition(
        TableWrites(app, seen_events, partition),
        times,
        clock.get(times, partition),
        gate.expected(times, partition),
        Outbox(campaigns),
        Outbox(commands),
    )
    return taken[partition]


def _deduplicate(
    part: _Partition, partition: int, offset: int, batch: list[Event], clean: Records
) -> None:
    part.writes.prefetch([valid.event_id.encode() for valid in batch])
    for index, valid in enumerate(batch):
        part.stream_time = stream_time = advance_stream_time(part.stream_time, valid.ts)
        for key in sweeper.tick(partition, stream_time, part.writes):
            part.writes.put(key, None)
        here = position(offset, index)
        if not _accept(part.writes, valid, here, stream_time):
            continue
        part.accepted += 1
        clean.add(
            partition_for(valid.profile_id),
            valid.profile_id.encode(),
            encode(enrich(valid)),
            [(SOURCE_HEADER, encode_source(partition, here))],
        )
        _fan_out(valid, here, part.by_campaign, part.profiles_in)


def _accept(writes: TableWrites, valid: Event, here: int, stream_time: int) -> bool:
    """Count the event as duplicate or bot; True if accepted (counted by the caller)."""
    key = valid.event_id.encode()
    seen = Seen.from_bytes(writes.get(key))
    verdict = classify(seen, here, stream_time, HORIZON_MS)
    if verdict is Verdict.DUPLICATE:
        metrics.duplicate.inc()
        return False
    if verdict is Verdict.NEW:
        writes.put(key, Seen(stream_time, here).to_bytes())
    if is_bot(valid.user_agent):
        metrics.bot.inc()
        return False
    metrics.latency.observe(max(0, wall_ms() - valid.ts) / 1000)
    return True


def _fan_out(valid: Event, here: int, by_campaign: Outbox, profiles_in: Outbox) -> None:
    if valid.type in CAMPAIGN_TYPES and valid.campaign_id:
        item = CampaignItem(
            here, valid.campaign_id, valid.type, valid.ts, valid.profile_id, valid.revenue
        )
        by_campaign.add(valid.campaign_id, item)
    key, command = route_event(profile_event(valid))
    profiles_in.add(key, CommandItem(key, here, command))
