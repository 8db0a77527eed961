"""``count_campaign_stats``: fold campaign events into 1-minute windows.

Windows are plain table keys (campaign id, window start) rather than a
Faust windowed table: Faust expires windows by the wall clock and forgets
its expiry bookkeeping after recovery, while retention here is measured in
stream time (see :mod:`dmp_faust.domain.windows`). Each batch record is
folded in memory and every window it touches is written once.
"""

from __future__ import annotations

from typing import Any

from dmp_faust.app import app, metrics, settings
from dmp_faust.domain.batches import decode_campaign
from dmp_faust.domain.watermarks import SOURCE_HEADER, decode_source
from dmp_faust.domain.windows import (
    WindowStats,
    advance_stream_time,
    is_window_expired,
    parse_window_key,
    window_key,
    window_start,
)
from dmp_faust.state import StreamClock, Sweeper, header
from dmp_faust.topics import campaign_events
from tables.campaign_windows import campaign_windows
from tables.stream_times import stream_times

WINDOW_MS = settings.window_ms
RETENTION_MS = settings.retention_ms
clock = StreamClock(stream_times, "campaign_stats")


def _expired(key: bytes, _value: bytes, stream_time: int) -> bool:
    _, start = parse_window_key(key.decode())
    return is_window_expired(start, WINDOW_MS, stream_time, RETENTION_MS)


sweeper = Sweeper(campaign_windows, _expired, every=200, scan=200)


@app.agent(campaign_events)
async def count_campaign_stats(stream: Any) -> None:
    async for event in stream.events():
        partition = event.message.partition
        source_id, _ = decode_source(header(event.message.headers, SOURCE_HEADER))
        stream_time = clock.get(partition)
        touched: dict[str, WindowStats] = {}
        changed: set[str] = set()
        for item in decode_campaign(event.value):
            stream_time = advance_stream_time(stream_time, item.ts)
            for expired in sweeper.tick(partition, stream_time):
                touched.pop(expired.decode(), None)
                changed.discard(expired.decode())
                del campaign_windows[expired]
            start = window_start(item.ts, WINDOW_MS)
            if is_window_expired(start, WINDOW_MS, stream_time, RETENTION_MS):
                metrics.expired_window_events.inc()
                continue
            key = window_key(item.campaign_id, start)
            if key not in touched:
                touched[key] = WindowStats.from_bytes(campaign_windows.get(key))
            source = (source_id, item.position)
            if touched[key].apply_once(source, item.type, item.profile_id, item.revenue):
                changed.add(key)
        for key in changed:
            campaign_windows[key] = touched[key].to_bytes()
        if stream_time is not None:
            clock.advance(partition, stream_time)
