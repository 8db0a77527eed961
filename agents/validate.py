"""``validate_events``: raw bytes in, validated events (or dead letters) out.

Takes raw records in batches; each valid event goes into the batch for the
``events.valid`` partition of its event_id (see :mod:`dmp_faust.domain.batches`).
"""

from __future__ import annotations

from typing import Any

from dmp_faust.app import app, metrics, settings
from dmp_faust.batching import TAKE_MAX, TAKE_WITHIN_S, Outbox, as_current
from dmp_faust.clock import wall_ms
from dmp_faust.domain.deadletter import Source, dead_letter
from dmp_faust.domain.events import TOO_OLD, Event, Rejection, validate_bytes
from dmp_faust.domain.windows import advance_stream_time, is_too_old
from dmp_faust.state import StreamClock, header
from dmp_faust.topics import ORIGIN_HEADER, dead_letters, declare_all, raw_events, valid_events
from tables.stream_times import stream_times

clock = StreamClock(stream_times, "validate")
received_kafka = metrics.received.labels("kafka")


def came_over_http(headers: Any) -> bool:
    """Events taken by ``POST /collect`` were counted as received there already."""
    return header(headers, ORIGIN_HEADER) == b"http"


@app.agent(raw_events)
async def validate_events(stream: Any) -> None:
    await declare_all()
    outbox = Outbox(valid_events)
    async for events in stream.take_events(TAKE_MAX, TAKE_WITHIN_S):
        stream_times_seen: dict[int, tuple[int, Any]] = {}
        now_ms = wall_ms()
        for event in events:
            message = event.message
            if not came_over_http(message.headers):
                received_kafka.inc()
            result = validate_bytes(
                event.value or b"", now_ms, settings.max_event_bytes, settings.future_tolerance_ms
            )
            if isinstance(result, Event):
                previous = stream_times_seen.get(message.partition)
                if previous is None:
                    with as_current(event):  # a table read looks in the current partition
                        known = clock.get(message.partition)
                else:
                    known = previous[0]
                stream_time = advance_stream_time(known, result.ts)
                stream_times_seen[message.partition] = (stream_time, event)
                result = _too_old(result, stream_time)
            if isinstance(result, Rejection):
                await _refuse(event, result, now_ms)
                continue
            outbox.add(result.event_id, result)
        await outbox.send()
        for partition, (stream_time, last) in stream_times_seen.items():
            with as_current(last):
                clock.advance(partition, stream_time)


def _too_old(event: Event, stream_time: int) -> Event | Rejection:
    if not is_too_old(event.ts, stream_time, settings.retention_ms):
        return event
    behind = stream_time - event.ts
    return Rejection(
        TOO_OLD, f"{behind} ms behind stream time, retention is {settings.retention_ms} ms"
    )


async def _refuse(event: Any, rejection: Rejection, now_ms: int) -> None:
    message = event.message
    metrics.invalid.labels(rejection.reason).inc()
    source = Source(message.topic, message.partition, message.offset)
    await dead_letters.send(
        key=message.key, value=dead_letter(rejection, event.value or b"", source, now_ms)
    )
