"""``count_campaign_stats``: fold campaign events into 1-minute windows.

Windows are plain table keys (campaign id, window start) rather than a
Faust windowed table: Faust expires windows by the wall clock and forgets
its expiry bookkeeping after recovery, while retention here is measured in
stream time (see :mod:`dmp_faust.domain.windows`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from dmp_faust.app import app, metrics, settings
from dmp_faust.domain.enrich import CleanEvent
from dmp_faust.domain.watermarks import SOURCE_HEADER, decode_source
from dmp_faust.domain.windows import (
    WindowStats,
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
_decoder = msgspec.json.Decoder(CleanEvent)


def _expired(key: bytes, _value: bytes, stream_time: int) -> bool:
    _, start = parse_window_key(key.decode())
    return is_window_expired(start, WINDOW_MS, stream_time, RETENTION_MS)


sweeper = Sweeper(campaign_windows, _expired, every=200, scan=200)


@app.agent(campaign_events)
async def count_campaign_stats(stream: Any) -> None:
    async for event in stream.events():
        partition = event.message.partition
        clean = _decoder.decode(event.value)
        stream_time = clock.advance(partition, clean.timestamp)
        sweeper.tick(partition, stream_time)
        start = window_start(clean.timestamp, WINDOW_MS)
        if is_window_expired(start, WINDOW_MS, stream_time, RETENTION_MS):
            metrics.expired_window_events.inc()
            continue
        key = window_key(clean.campaign_id or "", start)
        stats = WindowStats.from_bytes(campaign_windows.get(key))
        source = decode_source(header(event.message.headers, SOURCE_HEADER))
        if stats.apply_once(source, clean.type, clean.profile_id, clean.revenue):
            campaign_windows[key] = stats.to_bytes()
