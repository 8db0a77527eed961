"""``validate_events``: raw bytes in, validated events (or dead letters) out."""

from __future__ import annotations

from typing import Any

from dmp_faust.app import app, metrics, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.deadletter import Source, dead_letter
from dmp_faust.domain.events import TOO_OLD, Event, Rejection, encode, validate_bytes
from dmp_faust.domain.windows import is_too_old
from dmp_faust.state import StreamClock, header
from dmp_faust.topics import ORIGIN_HEADER, dead_letters, declare_all, raw_events, valid_events
from tables.stream_times import stream_times

clock = StreamClock(stream_times, "validate")


def came_over_http(headers: Any) -> bool:
    """Events taken by ``POST /collect`` were counted as received there already."""
    return header(headers, ORIGIN_HEADER) == b"http"


@app.agent(raw_events)
async def validate_events(stream: Any) -> None:
    await declare_all()
    async for event in stream.events():
        message = event.message
        if not came_over_http(message.headers):
            metrics.received.labels("kafka").inc()
        now_ms = wall_ms()
        result = validate_bytes(
            event.value or b"", now_ms, settings.max_event_bytes, settings.future_tolerance_ms
        )
        if isinstance(result, Event):
            stream_time = clock.advance(message.partition, result.ts)
            if is_too_old(result.ts, stream_time, settings.retention_ms):
                behind = stream_time - result.ts
                result = Rejection(
                    TOO_OLD,
                    f"{behind} ms behind stream time, retention is {settings.retention_ms} ms",
                )
        if isinstance(result, Rejection):
            metrics.invalid.labels(result.reason).inc()
            source = Source(message.topic, message.partition, message.offset)
            await dead_letters.send(
                key=message.key, value=dead_letter(result, event.value or b"", source, now_ms)
            )
            continue
        await valid_events.send(key=result.event_id.encode(), value=encode(result))
