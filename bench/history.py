"""The Parquet history's cost and speed (the history phase of ``make bench``).

1. **The sink's cost.** The same ``BENCH_HISTORY_EVENTS`` generated events are
   loaded twice, each onto a fresh prefix, and drained by one fresh worker:
   once with ``DMP_HISTORY_ENABLED=0``, once with the sink. The drain is timed
   as in the scaling phase; with the sink, also the time until it has written a
   row for every accepted event (it gives way while the stages catch up after
   the worker's start, so it finishes after them). The worker's CPU time (user +
   system, from ``/proc``) until the last of these is divided by the events.
   With the sink, the bytes of Parquet on disk once every accepted event is in
   the history are divided by the rows.
2. **A query over 10 million events.** ``BENCH_HISTORY_QUERY_EVENTS`` synthetic
   rows (30 days, 100 campaigns, 1 million users, one file per hour and
   partition as compaction leaves them) are written straight to Parquet, and
   ``GET /history/campaigns/{id}?granularity=day`` over the 30 days is answered
   three times by the route's own code (:func:`dmp_faust.views.history._query`:
   list the files, open DuckDB, the campaign query). The median is reported.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import numpy as np
import pyarrow as pa

from bench.config import BenchConfig
from bench.load import bench_events, load_events, provision
from bench.scaling import HEALTH_TIMEOUT_S, drain
from bench.worker import WorkerProcess

DAYS: Final = 30
QUERY_PARTITIONS: Final = 8
QUERY_CAMPAIGNS: Final = 100
QUERY_USERS: Final = 1_000_000
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000


@dataclass(frozen=True)
class SinkRun:
    history: bool
    events: int
    seconds: float
    cpu_s: float  # of the worker, over written_s
    written_s: float  # until drained, and with the sink until every row was written too

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.events * 1e6


@dataclass(frozen=True)
class HistoryFigures:
    without: SinkRun
    with_sink: SinkRun
    rows: int
    parquet_bytes: int
    files: int
    query_events: int
    query_files: int
    query_s: list[float]
    written_s: float

    @property
    def bytes_per_event(self) -> float:
        return self.parquet_bytes / max(1, self.rows)


async def measure_history(config: BenchConfig, bootstrap: str, root: Path) -> HistoryFigures:
    without = await _sink_run(config, bootstrap, root / "without", history=False)
    with_sink = await _sink_run(config, bootstrap, root / "with", history=True)
    parquet = sorted((root / "with" / "w" / "history" / "events").rglob("*.parquet"))
    rows = _rows(parquet)
    query_root = root / "query"
    started = time.monotonic()
    files = await asyncio.to_thread(write_synthetic, query_root, config.history_query_events)
    written_s = time.monotonic() - started
    query_s = [await asyncio.to_thread(_time_query, query_root) for _ in range(3)]
    return HistoryFigures(
        without,
        with_sink,
        rows,
        sum(path.stat().st_size for path in parquet),
        len(parquet),
        config.history_query_events,
        files,
        query_s,
        written_s,
    )


async def _sink_run(config: BenchConfig, bootstrap: str, root: Path, history: bool) -> SinkRun:
    prefix = f"hist{uuid.uuid4().hex[:8]}"
    events = config.history_events
    root.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(provision, bootstrap, prefix, config.partitions, root / "provision")
    generated = bench_events(config, time.time_ns() // 1_000_000, events)
    await load_events(bootstrap, f"{prefix}.events.raw", generated)
    env = {"DMP_HISTORY_ENABLED": "1" if history else "0", "DMP_HISTORY_FLUSH_S": "5"}
    worker = WorkerProcess(
        bootstrap, prefix, config.partitions, root / "w", root / "w.log", env=env
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            worker.start()
            await worker.wait_healthy(session, HEALTH_TIMEOUT_S)
            cpu, started = _cpu_s(worker.pid), time.monotonic()
            seconds = await drain(session, [worker], events, config.pipeline_timeout_s)
            if history:  # the sink gives way while the stages catch up, then catches up
                await _history_written(session, worker, config.pipeline_timeout_s)
            written = time.monotonic() - started
            cpu = _cpu_s(worker.pid) - cpu
            return SinkRun(history, events, seconds, cpu, written)
    finally:
        worker.stop(timeout=30)


async def _history_written(
    session: aiohttp.ClientSession, worker: WorkerProcess, timeout_s: float
) -> None:
    """Wait until the sink has written a row for every accepted event."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        samples = await worker.metrics(session)
        accepted = samples.get("dmp_events_accepted_total", 0)
        if accepted and samples.get("dmp_history_rows_total", 0) >= accepted:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError("the history sink did not write every accepted event")


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def write_synthetic(root: Path, events: int, seed: int = 1) -> int:
    """``events`` rows over :data:`DAYS` days, one file per hour and partition; the files."""
    from dmp_faust.history.files import Storage
    from dmp_faust.history.schema import SCHEMA, FileName, hour_dir

    rng = np.random.default_rng(seed)
    storage = Storage(str(root))
    start = (int(time.time() * 1000) // DAY_MS - DAYS) * DAY_MS
    hours = DAYS * 24
    per_file = events // (hours * QUERY_PARTITIONS)
    types = np.array(["page_view", "impression", "click", "conversion", "identify"])
    weights = np.array([0.35, 0.5, 0.1, 0.03, 0.02])
    offset = 0
    files = 0
    for hour in range(hours):
        hour_ms = start + hour * HOUR_MS
        for partition in range(QUERY_PARTITIONS):
            n = per_file + (1 if files < events - per_file * hours * QUERY_PARTITIONS else 0)
            kinds = types[rng.choice(len(types), n, p=weights)]
            users = rng.integers(0, QUERY_USERS, n)
            campaigns = rng.integers(0, QUERY_CAMPAIGNS, n)
            is_campaign = np.isin(kinds, ["impression", "click", "conversion"])
            columns = {
                "event_id": pa.array([f"ev-{offset + i:012d}" for i in range(n)]),
                "type": pa.array(kinds),
                "timestamp": pa.array(
                    np.sort(hour_ms + rng.integers(0, HOUR_MS, n)), pa.timestamp("ms", tz="UTC")
                ),
                "profile_id": pa.array([f"u{u:07d}" for u in users]),
                "anonymous_id": pa.array([f"u{u:07d}" for u in users]),
                "campaign_id": pa.array(
                    [
                        f"cmp-{c:03d}" if m else None
                        for c, m in zip(campaigns, is_campaign, strict=True)
                    ]
                ),
                "revenue": pa.array(
                    np.where(kinds == "conversion", rng.uniform(1, 100, n), np.nan),
                    from_pandas=True,
                ),
                "kafka_partition": pa.array(np.full(n, partition), pa.int32()),
                "kafka_offset": pa.array(np.arange(offset, offset + n), pa.int64()),
            }
            table = pa.table(
                {
                    field.name: columns.get(field.name, pa.nulls(n, field.type)).cast(field.type)
                    for field in SCHEMA
                },
                schema=SCHEMA,
            )
            name = FileName(partition, offset, offset + n - 1, compacted=True)
            storage.write_table(f"{hour_dir(hour_ms)}/{name}", table)
            offset += n
            files += 1
    return files


def _time_query(root: Path) -> float:
    """Seconds of one ``/history/campaigns/cmp-007?granularity=day`` over the days written."""
    from dmp_faust.history.files import Storage
    from dmp_faust.history.query import campaign_history, open_history
    from dmp_faust.history.sink import Erased

    end = (int(time.time() * 1000) // DAY_MS) * DAY_MS
    started = time.monotonic()
    storage = Storage(str(root))
    conn = open_history(storage, Erased.load(storage, "bench"))
    body = campaign_history(conn, "cmp-007", end - DAYS * DAY_MS, end, "day")
    conn.close()
    seconds = time.monotonic() - started
    assert body["totals"]["impressions"] > 0, body["totals"]
    return seconds


def history_table(figures: HistoryFigures | None) -> str:
    if figures is None:
        return "(not run: BENCH_HISTORY_EVENTS=0)\n"
    without, with_sink = figures.without, figures.with_sink
    cost = with_sink.cpu_us - without.cpu_us
    return (
        "| run | events | drained in | rate | history written in | worker CPU per event |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        f"| without the sink (`DMP_HISTORY_ENABLED=0`) | {without.events:,} | "
        f"{without.seconds:.1f} s | {without.rate:,.0f} ev/s | - | {without.cpu_us:.0f} µs |\n"
        f"| with the sink | {with_sink.events:,} | {with_sink.seconds:.1f} s | "
        f"{with_sink.rate:,.0f} ev/s | {with_sink.written_s:.1f} s | "
        f"{with_sink.cpu_us:.0f} µs |\n\n"
        f"- the sink's cost: {cost:+.0f} µs of worker CPU per event "
        f"({cost / without.cpu_us:+.0%}), rate {with_sink.rate / without.rate - 1:+.0%};\n"
        f"- on disk: {figures.parquet_bytes:,} bytes of Parquet for {figures.rows:,} rows in "
        f"{figures.files} files: {figures.bytes_per_event:.0f} bytes per event (flush every "
        "5 s, not compacted);\n"
        f"- `/history/campaigns/{{id}}?granularity=day` over {figures.query_events:,} events "
        f"of {DAYS} days in {figures.query_files:,} files (written in {figures.written_s:.0f} s): "
        f"{statistics.median(figures.query_s):.2f} s (median of "
        f"{', '.join(f'{s:.2f}' for s in figures.query_s)} s).\n"
    )
