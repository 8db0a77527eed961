"""``validate_events``: raw bytes in, validated events (or dead letters) out.

The raw topic holds one event per record, so it is read below Faust, by an
:class:`~dmp_faust.intake.Intake` (a plain aiokafka consumer in a group of
its own). Each fetch (up to 1,000 records) is validated at once: each valid
event goes into the batch for the ``events.valid`` partition of its event_id
(see :mod:`dmp_faust.domain.batches`), each refused one to the dead-letter
topic; both are sent as record batches (:mod:`dmp_faust.bulk`) and
acknowledged before the fetch's offsets are committed, with each partition's
stream time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import murmur2

from dmp_faust.app import app, metrics, settings
from dmp_faust.batching import TAKE_MAX, Outbox, dedup_partition
from dmp_faust.bulk import Records
from dmp_faust.clock import wall_ms
from dmp_faust.domain.deadletter import Source, dead_letter
from dmp_faust.domain.events import TOO_OLD, Event, Rejection, validate_bytes
from dmp_faust.domain.windows import advance_stream_time, is_too_old
from dmp_faust.intake import Intake
from dmp_faust.state import header
from dmp_faust.topics import ORIGIN_HEADER, dead_letters, declare_all, raw_events, valid_events

received_kafka = metrics.received.labels("kafka")
received_replay = metrics.received.labels("replay")
REPLAYED = b"replay"  # the origin header of dead letters sent again (dmp-faust dlq replay)


async def validate_events(
    fetch: dict[Any, list[Any]], known: dict[int, int | None]
) -> dict[int, int]:
    """Validate one fetch of raw records; return the stream time of each partition that has one."""
    valid, refused = Records(app, valid_events), Records(app, dead_letters)
    outbox = Outbox(valid)
    stream_times: dict[int, int] = {}
    now_ms = wall_ms()
    from_kafka = replayed = 0
    for tp, records in fetch.items():
        stream_time = known.get(tp.partition)
        for record in records:
            origin = header(record.headers, ORIGIN_HEADER)
            if origin == REPLAYED:
                replayed += 1
            elif origin != b"http":  # those were counted by POST /collect
                from_kafka += 1
            result = validate_bytes(
                record.value or b"", now_ms, settings.max_event_bytes, settings.future_tolerance_ms
            )
            if isinstance(result, Event):
                stream_time = advance_stream_time(stream_time, result.ts)
                result = _too_old(result, stream_time)
            if isinstance(result, Rejection):
                _refuse(refused, record, result, now_ms)
                continue
            outbox.add_to(dedup_partition(result.event_id), result)
        if stream_time is not None:
            stream_times[tp.partition] = stream_time
    received_kafka.inc(from_kafka)
    received_replay.inc(replayed)
    outbox.close()
    await asyncio.gather(valid.send(), refused.send())
    return stream_times


@app.service
class RawIntake(Intake):
    """``validate_events`` on the raw topic, started with the worker."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            settings,
            raw_events.get_topic_name(),
            validate_events,
            TAKE_MAX,
            stage="validate_events",
            **kwargs,
        )

    async def on_start(self) -> None:
        await declare_all()
        await app.maybe_start_producer()
        await super().on_start()


def _too_old(event: Event, stream_time: int) -> Event | Rejection:
    if not is_too_old(event.ts, stream_time, settings.retention_ms):
        return event
    behind = stream_time - event.ts
    return Rejection(
        TOO_OLD, f"{behind} ms behind stream time, retention is {settings.retention_ms} ms"
    )


def _refuse(refused: Records, record: Any, rejection: Rejection, now_ms: int) -> None:
    """Add the dead letter of a refused event; keyed like the original, which is kept whole."""
    metrics.invalid.labels(rejection.reason).inc()
    source = Source(record.topic, record.partition, record.offset)
    refused.add(
        _dead_letter_partition(record.key, record.partition),
        record.key,
        dead_letter(rejection, record.value or b"", source, now_ms),
    )


def _dead_letter_partition(key: bytes | None, source_partition: int) -> int:
    """By key as Kafka's default partitioner would; without one, the source's partition."""
    if key:
        return (murmur2(key) & 0x7FFFFFFF) % settings.partitions
    return source_partition % settings.partitions
