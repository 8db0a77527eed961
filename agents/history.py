"""``write_history``: every accepted event into the Parquet history, once.

Reads ``events.clean`` through the stage's :class:`InputGate` (each record once,
in order, from where the history's own state file says, see
:mod:`dmp_faust.history.sink`) and flushes each partition's rows when they are
:data:`MAX_ROWS` or ``DMP_HISTORY_FLUSH_S`` old. A timer flushes partitions
traffic left, reloads the erased ids, and has erased people's rows rewritten
out of the files within ``DMP_HISTORY_ERASE_S``. ``DMP_HISTORY_ENABLED=0``
leaves the agent out altogether.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any, Final

from dmp_faust.app import app, fence, metrics, settings
from dmp_faust.batching import TAKE_WITHIN_S
from dmp_faust.domain.watermarks import SOURCE_HEADER, decode_source
from dmp_faust.fence import Fenced
from dmp_faust.history.compact import erase_rows
from dmp_faust.history.files import Storage
from dmp_faust.history.sink import MAX_ROWS, Erased, PartitionSink, recover, stored_state
from dmp_faust.readiness import settled_partitions
from dmp_faust.state import InputGate, header
from dmp_faust.topics import clean_events

log = logging.getLogger(__name__)

TAKE_RECORDS: Final = 1000  # events.clean records (one event each) taken at once
ERASED_EVERY_S: Final = 5.0  # how often the erased ids are read again

storage = Storage(settings.history_root)
gate = InputGate("history", clean_events, settings)
sinks: dict[int, PartitionSink] = {}
_flushing = asyncio.Lock()
_erased = Erased(settings.app_id)
_erased_at = float("-inf")
_swept_at = time.monotonic()
_checked: dict[str, str] = {}  # file -> the erased set it was last found clean of


def _sink(partition: int) -> PartitionSink:
    """The partition's sink, read again from storage whenever the group's generation
    changed since (another worker may have written the partition in between)."""
    generation = fence.generation()
    sink = sinks.get(partition)
    if sink is not None and sink.generation == generation:
        return sink
    if sink is not None and stored_state(storage, partition) == sink.stored:
        sink.generation = generation  # nobody wrote it meanwhile: what it holds is good
        return sink
    if sink is not None:
        log.warning("history: partition %d was written elsewhere; starting again", partition)
    sinks[partition] = sink = PartitionSink(partition, recover(storage, partition), generation)
    return sink


def _next_offset(partition: int) -> int | None:
    return _sink(partition).next_offset


if settings.history_enabled:

    @app.agent(clean_events)
    async def write_history(stream: Any) -> None:
        takes = stream.take_events(TAKE_RECORDS, TAKE_WITHIN_S)
        mine = partial(settled_partitions, clean_events)
        async for ordered in gate.takes(takes, _next_offset, app.consumer, mine, TAKE_RECORDS):
            full = set()
            for event in ordered:
                message = event.message
                sink = _sink(message.partition)
                raw_source = header(message.headers, SOURCE_HEADER)
                source = decode_source(raw_source) if raw_source else None
                sink.add(message.offset, event.value, source, _erased)
                if sink.rows >= MAX_ROWS:
                    full.add(message.partition)
            for partition in full:
                await _flush(partition)

    @app.timer(1.0)
    async def tend_history() -> None:
        """Flush what waited long enough; keep the erased ids fresh; sweep erased rows."""
        global _erased, _erased_at, _swept_at
        now = time.monotonic()
        margin = min(5.0, settings.history_flush_s / 4)  # the sink gets events a bit late
        for partition, sink in list(sinks.items()):
            if sink.due(now, settings.history_flush_s - margin):
                await _flush(partition)
        if now - _erased_at >= ERASED_EVERY_S:
            _erased_at = now
            _erased = await asyncio.to_thread(Erased.load, storage, settings.app_id)
        if _erased and now - _swept_at >= settings.history_erase_s / 4:
            _swept_at = now
            await _sweep()


async def _flush(partition: int) -> None:
    async with _flushing:
        sink = sinks.get(partition)
        if sink is None or sink.first is None:
            return
        try:
            await fence.check(sink.generation)
        except Fenced as exc:
            log.warning(
                "history: partition %d not flushed, read again by its owner: %s", partition, exc
            )
            sinks.pop(partition, None)
            return
        try:
            flush = sink.detach()
            if flush is None:
                return
            size = await asyncio.to_thread(flush.write, storage)
        except Exception:
            log.exception("history: flushing partition %d failed; reading it again", partition)
            sinks.pop(partition, None)
            return
        sink.stored = flush.state
        rows = sum(len(rows) for _, rows in flush.files)
        metrics.history_rows.inc(rows)
        metrics.history_bytes.inc(size)


async def _sweep() -> None:
    """Rewrite the files of this worker's partitions that hold erased people's rows."""
    mine = settled_partitions(clean_events)
    if not mine:
        return
    async with _flushing:
        rewritten = await asyncio.to_thread(erase_rows, storage, _erased, mine, _checked)
    if rewritten:
        log.info("history: rewrote %d files without erased people's rows", rewritten)
