"""``deduplicate_events``: drop copies and bots, enrich, and fan out.

Reads ``events.valid`` (partitioned by event_id, so all copies of an event
meet here); writes ``events.clean`` keyed by profile id and, for campaign
events, ``events.by_campaign`` keyed by campaign id, and a profile command on
``profiles.in`` keyed by the event's anonymous id (else its user id). All carry the source
coordinates of the valid record (header ``dmp-src``), which downstream
folds use to skip what a replay sends again.
"""

from __future__ import annotations

from typing import Any

from dmp_faust.app import app, metrics, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.dedup import Seen, Verdict, classify, is_forgotten
from dmp_faust.domain.enrich import enrich, is_bot
from dmp_faust.domain.events import CAMPAIGN_TYPES, decode_event, encode
from dmp_faust.domain.identity import encode_command, route_event
from dmp_faust.domain.profiles import profile_event
from dmp_faust.domain.watermarks import SOURCE_HEADER, encode_source
from dmp_faust.state import StreamClock, Sweeper
from dmp_faust.topics import campaign_events, clean_events, profile_commands, valid_events
from tables.seen_events import seen_events
from tables.stream_times import stream_times

HORIZON_MS = settings.dedup_horizon_ms
clock = StreamClock(stream_times, "deduplicate")


def _forgotten(_key: bytes, value: bytes, stream_time: int) -> bool:
    seen = Seen.from_bytes(value)
    return seen is None or is_forgotten(seen.first_seen, stream_time, HORIZON_MS)


sweeper = Sweeper(seen_events, _forgotten)


@app.agent(valid_events)
async def deduplicate_events(stream: Any) -> None:
    async for event in stream.events():
        partition, offset = event.message.partition, event.message.offset
        valid = decode_event(event.value)
        stream_time = clock.advance(partition, valid.ts)
        sweeper.tick(partition, stream_time)
        seen = Seen.from_bytes(seen_events.get(valid.event_id))
        verdict = classify(seen, offset, stream_time, HORIZON_MS)
        if verdict is Verdict.DUPLICATE:
            metrics.duplicate.inc()
            continue
        if verdict is Verdict.NEW:
            seen_events[valid.event_id] = Seen(stream_time, offset).to_bytes()
        if is_bot(valid.user_agent):
            metrics.bot.inc()
            continue
        clean = encode(enrich(valid))
        headers = [(SOURCE_HEADER, encode_source(partition, offset))]
        await clean_events.send(key=valid.profile_id.encode(), value=clean, headers=headers)
        if valid.type in CAMPAIGN_TYPES and valid.campaign_id:
            await campaign_events.send(key=valid.campaign_id.encode(), value=clean, headers=headers)
        profile_key, command = route_event(profile_event(valid))
        await profile_commands.send(
            key=profile_key.encode(), value=encode_command(command), headers=headers
        )
        metrics.accepted.inc()
        metrics.latency.observe(max(0, wall_ms() - valid.ts) / 1000)
