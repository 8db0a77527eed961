"""``deduplicate_events``: drop copies and bots, enrich, and fan out.

Reads ``events.valid`` batches (partitioned by event_id, so all copies of an
event meet here); writes each accepted event to ``events.clean`` keyed by
profile id, and batches to ``events.by_campaign`` (by campaign id) and
``profiles.in`` (by anonymous id, else user id). Batch items carry their
position in the valid record, which downstream folds use as watermarks to
skip what a replay sends again.
"""

from __future__ import annotations

from typing import Any

from dmp_faust.app import app, metrics, settings
from dmp_faust.batching import Outbox
from dmp_faust.clock import wall_ms
from dmp_faust.domain.batches import CampaignItem, CommandItem, decode_valid, position
from dmp_faust.domain.dedup import Seen, Verdict, classify, is_forgotten
from dmp_faust.domain.enrich import enrich, is_bot
from dmp_faust.domain.events import CAMPAIGN_TYPES, Event, encode
from dmp_faust.domain.identity import route_event
from dmp_faust.domain.profiles import profile_event
from dmp_faust.domain.watermarks import SOURCE_HEADER, encode_source, source_id
from dmp_faust.domain.windows import advance_stream_time
from dmp_faust.state import StreamClock, Sweeper
from dmp_faust.topics import campaign_events, clean_events, profile_commands, valid_events
from tables.seen_events import seen_events
from tables.stream_times import stream_times

HORIZON_MS = settings.dedup_horizon_ms
VALID_STREAM = 0  # source-id stream of what this stage sends
clock = StreamClock(stream_times, "deduplicate")


def _forgotten(_key: bytes, value: bytes, stream_time: int) -> bool:
    seen = Seen.from_bytes(value)
    return seen is None or is_forgotten(seen.first_seen, stream_time, HORIZON_MS)


sweeper = Sweeper(seen_events, _forgotten)


@app.agent(valid_events)
async def deduplicate_events(stream: Any) -> None:
    by_campaign, profiles_in = Outbox(campaign_events), Outbox(profile_commands)
    async for event in stream.events():
        partition, offset = event.message.partition, event.message.offset
        stream_time = clock.get(partition)
        for index, valid in enumerate(decode_valid(event.value)):
            stream_time = advance_stream_time(stream_time, valid.ts)
            sweeper.tick(partition, stream_time)
            here = position(offset, index)
            if _accept(valid, here, stream_time):
                await clean_events.send(
                    key=valid.profile_id.encode(),
                    value=encode(enrich(valid)),
                    headers=[(SOURCE_HEADER, encode_source(partition, here))],
                )
                _fan_out(valid, here, by_campaign, profiles_in)
        source = (source_id(VALID_STREAM, partition), offset)
        await by_campaign.send(source)
        await profiles_in.send(source)
        if stream_time is not None:
            clock.advance(partition, stream_time)


def _accept(valid: Event, here: int, stream_time: int) -> bool:
    """Count the event as duplicate, bot or accepted; True if accepted."""
    seen = Seen.from_bytes(seen_events.get(valid.event_id))
    verdict = classify(seen, here, stream_time, HORIZON_MS)
    if verdict is Verdict.DUPLICATE:
        metrics.duplicate.inc()
        return False
    if verdict is Verdict.NEW:
        seen_events[valid.event_id] = Seen(stream_time, here).to_bytes()
    if is_bot(valid.user_agent):
        metrics.bot.inc()
        return False
    metrics.accepted.inc()
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
