"""``count_campaign_stats``: fold campaign events into 1-minute windows.

Windows are plain table keys (campaign id, window start) rather than a
Faust windowed table: Faust expires windows by the wall clock and forgets
its expiry bookkeeping after recovery, while retention here is measured in
stream time (see :mod:`dmp_faust.domain.windows`). Up to 64 batch records
are taken at once and folded in memory; every window they touch is read
once and written once (:mod:`dmp_faust.bulk`).

The same stage judges each closed window for anomalies
(:mod:`dmp_faust.alerting`), before it folds the item whose event time closed
it, and sends the incidents to ``dmp.alerts`` before it writes its tables.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dmp_faust import alerting
from dmp_faust.app import app, fence, metrics, settings
from dmp_faust.batching import TAKE_WITHIN_S
from dmp_faust.bulk import TableWrites
from dmp_faust.domain.alerts import ALERT_PREFIX
from dmp_faust.domain.batches import CampaignItem, decode_campaign
from dmp_faust.domain.watermarks import SOURCE_HEADER, decode_source
from dmp_faust.domain.windows import (
    WindowStats,
    advance_stream_time,
    is_window_expired,
    parse_window_key,
    window_key,
    window_start,
)
from dmp_faust.readiness import settled_partitions
from dmp_faust.state import InputGate, StreamClock, Sweeper, header, take_runs
from dmp_faust.topics import campaign_events
from tables.campaign_windows import campaign_windows
from tables.stream_times import stream_times

WINDOW_MS = settings.window_ms
RETENTION_MS = settings.retention_ms
TAKE_RECORDS = 64  # events.by_campaign records (each a batch of items) taken at once
clock = StreamClock("campaign_stats")
gate = InputGate("campaign_stats", campaign_events, settings)


def _expired(key: bytes, _value: bytes, stream_time: int) -> bool:
    if key.startswith(ALERT_PREFIX):  # the alerts' own keys (dmp_faust/alerting.py)
        return False
    _, start = parse_window_key(key.decode())
    return is_window_expired(start, WINDOW_MS, stream_time, RETENTION_MS)


sweeper = Sweeper(campaign_windows, _expired, every=200, scan=200)


@dataclass
class _Partition:
    """What a take touched in one ``events.by_campaign`` partition."""

    windows: TableWrites  # of campaign_windows
    times: TableWrites  # of stream_times
    alerts: alerting.PartitionAlerts  # in campaign_windows too
    stream_time: int | None
    next_offset: int | None  # of the next input record to process (see InputGate)
    processed: bool = False
    touched: dict[bytes, WindowStats] = field(default_factory=dict)
    changed: set[bytes] = field(default_factory=set)


@app.agent(campaign_events)
async def count_campaign_stats(stream: Any) -> None:
    takes = stream.take_events(TAKE_RECORDS, TAKE_WITHIN_S)
    expected, mine = _next_offset, partial(settled_partitions, campaign_events)
    async for ordered in gate.takes(takes, expected, app.consumer, mine, TAKE_RECORDS):
        await take_runs("campaign_stats", ordered, _take)


async def _take(run: list[Any]) -> None:
    """Fold one run of records (see :func:`dmp_faust.state.runs`) and write it."""
    generation = fence.generation()
    taken: dict[int, _Partition] = {}
    for event in run:
        partition, offset = event.message.partition, event.message.offset
        part = taken.get(partition) or _open(taken, partition)
        part.next_offset, part.processed = offset + 1, True
        source_id, _ = decode_source(header(event.message.headers, SOURCE_HEADER))
        _fold(part, partition, source_id, decode_campaign(event.value))
        await asyncio.sleep(0)  # one record at a time: let heartbeats and requests in
    records = alerting.new_records()
    for partition, part in taken.items():
        if not part.processed or part.next_offset is None:
            continue
        for change in part.alerts.changes:
            records.add(partition, *alerting.alert_record(change))
        for key in part.changed:
            part.windows.put(key, part.touched[key].to_bytes())
        if part.stream_time is not None:
            clock.advance(part.times, partition, part.stream_time)
        gate.done(part.times, partition, part.next_offset - 1)
    # A worker dropped from the group writes nothing (dmp_faust/fence.py). The incidents
    # go out first; the judging state is written with the windows (dmp_faust/alerting.py).
    if len(records):
        await fence.check(generation)
        await records.send()
        for part in taken.values():
            alerting.count(part.alerts.changes)
    await fence.write(generation, [part.windows for part in taken.values()])
    await fence.write(generation, [part.times for part in taken.values()])  # the gate last


def _next_offset(partition: int) -> int | None:
    """The next input offset of ``partition`` (see :class:`InputGate`), as stored."""
    return gate.expected(TableWrites(app, stream_times, partition), partition)


def _open(taken: dict[int, _Partition], partition: int) -> _Partition:
    """Start on ``partition`` for this run."""
    times = TableWrites(app, stream_times, partition)
    windows = TableWrites(app, campaign_windows, partition)
    taken[partition] = _Partition(
        windows,
        times,
        alerting.PartitionAlerts(windows, partition),
        clock.get(times, partition),
        gate.expected(times, partition),
    )
    return taken[partition]


def _fold(part: _Partition, partition: int, source_id: int, items: list[CampaignItem]) -> None:
    """Fold one record's items into their windows (each read once per take)."""
    for item in items:
        stream_time = advance_stream_time(part.stream_time, item.ts)
        if stream_time >= part.alerts.next_due:  # judged before this item counts
            part.alerts.advance(stream_time, partial(_counts, part))
        part.stream_time = stream_time
        for expired in sweeper.tick(partition, stream_time, part.windows):
            part.touched.pop(expired, None)
            part.changed.discard(expired)
            part.windows.put(expired, None)
        start = window_start(item.ts, WINDOW_MS)
        if is_window_expired(start, WINDOW_MS, stream_time, RETENTION_MS):
            metrics.expired_window_events.inc()
            continue
        key = window_key(item.campaign_id, start).encode()
        if key not in part.touched:
            part.touched[key] = WindowStats.from_bytes(part.windows.get(key))
            part.alerts.see(item.campaign_id, start)
        if part.touched[key].apply_once(
            (source_id, item.position), item.type, item.profile_id, item.revenue
        ):
            part.changed.add(key)


def _counts(part: _Partition, campaign_id: str, start: int) -> dict[str, int]:
    """A window's counts as the take sees them (its folds so far included)."""
    key = window_key(campaign_id, start).encode()
    stats = part.touched.get(key)
    if stats is None:
        stats = WindowStats.from_bytes(part.windows.get(key))
    return {
        "impressions": stats.impressions,
        "clicks": stats.clicks,
        "conversions": stats.conversions,
    }
