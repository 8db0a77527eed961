"""``deduplicate_events``: drop copies and bots, enrich, and fan out.

Reads ``events.valid`` (partitioned by event_id, so all copies of an event
meet here); writes ``events.clean`` keyed by profile id and, for campaign
events, ``events.by_campaign`` keyed by campaign id.
"""

from __future__ import annotations

from typing import Any

from dmp_faust.app import app, metrics, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.dedup import is_duplicate, is_forgotten
from dmp_faust.domain.enrich import enrich, is_bot
from dmp_faust.domain.events import CAMPAIGN_TYPES, decode_event, encode
from dmp_faust.state import StreamClock, Sweeper, decode_int, encode_int
from dmp_faust.topics import campaign_events, clean_events, valid_events
from tables.seen_events import seen_events
from tables.stream_times import stream_times

HORIZON_MS = settings.dedup_horizon_ms
clock = StreamClock(stream_times, "deduplicate")
sweeper = Sweeper(
    seen_events, lambda _key, value, now: is_forgotten(int(value), now, HORIZON_MS)
)


@app.agent(valid_events)
async def deduplicate_events(stream: Any) -> None:
    async for event in stream.events():
        partition = event.message.partition
        valid = decode_event(event.value)
        stream_time = clock.advance(partition, valid.ts)
        sweeper.tick(partition, stream_time)
        if is_duplicate(decode_int(seen_events.get(valid.event_id)), stream_time, HORIZON_MS):
            metrics.duplicate.inc()
            continue
        seen_events[valid.event_id] = encode_int(stream_time)
        if is_bot(valid.user_agent):
            metrics.bot.inc()
            continue
        clean = encode(enrich(valid))
        await clean_events.send(key=valid.profile_id.encode(), value=clean)
        if valid.type in CAMPAIGN_TYPES and valid.campaign_id:
            await campaign_events.send(key=valid.campaign_id.encode(), value=clean)
        metrics.accepted.inc()
        metrics.latency.observe(max(0, wall_ms() - valid.ts) / 1000)
