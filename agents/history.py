"""The history sink in the worker: every accepted event into Parquet, once.

Not a Faust agent: ``events.clean`` holds one record per event, and Faust's
handling of each record (delivery to a stream, acknowledgement, offset
tracking) cost more than the rest of the sink together (+69 µs of worker CPU
an event measured, against about 10 for decoding and writing). So the sink
reads the partitions with a plain consumer of its own, in no group: the
``events.clean`` partitions whose number this worker owns in
``events.valid`` (the group gives each partition number to one worker at a
time), from where the history's own state file says (see
:mod:`dmp_faust.history.sink`). A partition's rows are flushed at
:data:`MAX_ROWS` or once ``DMP_HISTORY_FLUSH_S`` old. A timer flushes what
traffic left, reloads the erased ids, and has erased people's rows rewritten
out of the files within ``DMP_HISTORY_ERASE_S``. ``DMP_HISTORY_ENABLED=0``
leaves it all out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from dmp_faust.app import app, fence, metrics, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.watermarks import SOURCE_HEADER, decode_source
from dmp_faust.fence import Fenced
from dmp_faust.history.compact import erase_rows
from dmp_faust.history.files import Storage
from dmp_faust.history.sink import MAX_ROWS, Erased, PartitionSink, recover, stored_state
from dmp_faust.readiness import settled_partitions, takeovers
from dmp_faust.state import header
from dmp_faust.topics import clean_events, valid_events

log = logging.getLogger(__name__)

READ_RECORDS: Final = 5_000  # events.clean records read at once
READ_WAIT_MS: Final = 200
IDLE_S: Final = 0.1  # pause after a read that found nothing
YIELD_EVERY: Final = 500  # records handled between two yields to the event loop
ERASED_EVERY_S: Final = 5.0  # how often the erased ids are read again

storage = Storage(settings.history_root)
sinks: dict[int, PartitionSink] = {}
_flushing = asyncio.Lock()
_erased = Erased(settings.app_id)
_erased_at = float("-inf")
_swept_at = time.monotonic()
_reader: Any = None
_reading: dict[int, int | None] = {}  # partition -> the offset the reader was sent to


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


async def _read_once() -> int:
    """One read of at most :data:`READ_RECORDS` records; how many were handled."""
    mine = settled_partitions(valid_events)  # none while a rebalance is on
    if not mine or takeovers.catching_up():  # lookups first: they wait for the stages
        return 0
    reader = await _started_reader()
    if reader is None:
        return 0
    for partition in list(sinks):
        if partition not in mine:
            del sinks[partition]  # moved: its new owner reads it from the stored state
    name = clean_events.get_topic_name()
    tps = [TopicPartition(name, partition) for partition in sorted(mine)]
    if set(reader.assignment()) != set(tps):
        reader.assign(tps)
        _reading.clear()
    for tp in tps:
        following = _sink(tp.partition).next_offset
        if tp.partition not in _reading or _reading[tp.partition] != following:
            if following is None:
                await reader.seek_to_beginning(tp)
            else:
                reader.seek(tp, following)
            _reading[tp.partition] = following
    try:
        fetched = await reader.getmany(timeout_ms=READ_WAIT_MS, max_records=READ_RECORDS)
    except KafkaError as exc:
        log.warning("history: cannot read events.clean (%r); trying again", exc)
        return 0
    handled = 0
    for tp, records in fetched.items():
        sink = sinks.get(tp.partition)
        if sink is None or _reading.get(tp.partition) != sink.next_offset:
            _reading.pop(tp.partition, None)  # started again meanwhile: seek next time
            continue
        for record in records:
            if sink.next_offset is not None and record.offset < sink.next_offset:
                continue
            raw_source = header(record.headers, SOURCE_HEADER)
            source = decode_source(raw_source) if raw_source else None
            sink.add(record.offset, record.value, source, _erased, record.timestamp)
            handled += 1
            if handled % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        _reading[tp.partition] = sink.next_offset
        if sink.rows >= MAX_ROWS:
            await _flush(tp.partition)
    return handled


if settings.history_enabled:

    @app.task
    async def read_history() -> None:
        """Read, for as long as the worker runs, what the partitions it owns hold past
        their sinks' offsets."""
        while True:
            try:
                handled = await _read_once()
            except Exception:  # the sink must not stop for good: say it, wait, go on
                log.exception("history: reading events.clean failed; trying again")
                handled = 0
            if not handled:
                await asyncio.sleep(IDLE_S)

    @app.timer(1.0)
    async def tend_history() -> None:
        """Flush what waited long enough; keep the erased ids fresh; sweep erased rows."""
        global _erased, _erased_at, _swept_at
        now = time.monotonic()
        due_ms = 1000 * settings.history_flush_s - 2_000  # a flush takes a moment too
        mine = settled_partitions(valid_events)  # none while a rebalance is on
        # While a stage catches up on partitions just taken over, the lookups waiting
        # for it come first: no flush, no sweep (the reader is held back too).
        waiting = takeovers.catching_up()
        for partition, sink in list(sinks.items()):
            if mine and partition not in mine:
                del sinks[partition]  # moved: its new owner reads it from the stored state
            elif partition in mine and not waiting and sink.due(wall_ms(), due_ms):
                _sink(partition)  # its generation brought up to date, if it holds
                await _flush(partition)
        if now - _erased_at >= ERASED_EVERY_S:
            _erased_at = now
            _erased = await asyncio.to_thread(Erased.load, storage, settings.app_id)
        if _erased and not waiting and now - _swept_at >= settings.history_erase_s / 4:
            _swept_at = now
            await _sweep()


async def _flush(partition: int) -> None:
    """Write what the partition holds: the data files, then proof that this worker
    still owns the partition, then the state (see :class:`Flush`)."""
    async with _flushing:
        sink = sinks.get(partition)
        if sink is None or sink.first is None:
            return
        flush = None
        try:
            await fence.check(sink.generation)
            flush = sink.detach()
            if flush is None:
                return
            size = await asyncio.to_thread(flush.write_files, storage, _erased)
            # A worker stopped (SIGSTOP, a pause) during the writes wakes here, fenced off.
            await fence.check(sink.generation)
            if not await asyncio.to_thread(flush.commit, storage):
                raise Fenced("another worker wrote the partition meanwhile")
        except Exception as exc:
            if isinstance(exc, Fenced):
                log.warning("history: partition %d not flushed: %s", partition, exc)
            else:
                log.exception("history: flushing partition %d failed", partition)
            sinks.pop(partition, None)  # read again from the stored state, by its owner
            if flush is not None:
                await asyncio.to_thread(flush.discard, storage)
            return
        sink.stored = flush.state
        metrics.history_rows.inc(sum(len(rows) for _, rows in flush.files))
        metrics.history_bytes.inc(size)


async def _sweep() -> None:
    """Rewrite the files of this worker's partitions that hold erased people's rows."""
    mine = settled_partitions(valid_events)
    if not mine:
        return
    async with _flushing:
        rewritten = await asyncio.to_thread(erase_rows, storage, _erased, mine)
    if rewritten:
        log.info("history: rewrote %d files without erased people's rows", rewritten)


async def _started_reader() -> Any:
    """The sink's consumer, started (None while Kafka cannot be reached)."""
    global _reader
    if _reader is None:
        reader = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # below the log start: from the log start
            isolation_level=settings.isolation_level,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **settings.kafka_auth(),
        )
        try:
            await reader.start()
        except KafkaError as exc:
            log.warning("history: cannot reach Kafka (%s); trying again", exc)
            await reader.stop()
            return None
        _reader = reader
    return _reader
