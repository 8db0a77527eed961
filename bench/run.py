"""``python -m bench.run`` (``make bench``): one benchmark run, start to finish.

Settings (environment; defaults in brackets): ``BENCH_EVENTS`` [1000000],
``BENCH_PROFILES`` [100000] simulated users, ``BENCH_AUDIENCE`` [1000000]
new visitors of the memory phase (0: none), ``BENCH_CAMPAIGNS`` [20],
``BENCH_PARTITIONS`` [8], ``BENCH_LATENCY_SECONDS`` [20], ``BENCH_SEED`` [1],
``BENCH_TIMEOUT_S`` [600 + 10 ms per event] for the pipeline phase,
``BENCH_STALL_S`` [300] without progress before giving up, ``BENCH_KEEP``
[unset] to keep the temporary directory (broker data, worker logs); it is
always kept when the run fails.

``BENCH_SCALING_EVENTS`` [200000] events per layout of the scaling phase (0:
none). ``BENCH_HISTORY_EVENTS`` [200000] events of each run of the history
phase (0: none), ``BENCH_HISTORY_QUERY_EVENTS`` [10000000] rows of its query
(see :mod:`bench.history`).

Phases: broker → topics → load → ceiling → pipeline (fresh worker) →
latency → memory → audience (one page view from each of ``BENCH_AUDIENCE``
new visitors, so that many more profiles) → memory → recovery (``kill -9``,
restart, with all those profiles in the tables) → history (the sink's cost,
bytes per event, a query over 10 million events) → scaling (partitions and
workers, see :mod:`bench.scaling`). The broker and the
workers are stopped at the end whatever happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType

import aiohttp

from bench.capacity import measure_capacity
from bench.config import BenchConfig, ConfigError, Machine
from bench.history import history_table, measure_history
from bench.latency import measure_latency
from bench.load import audience_events, bench_events, load_events, provision
from bench.measure import Accounting, measure_ceiling, measure_pipeline, measure_recovery
from bench.report import Audience, Results, results_markdown, summary_line, table
from bench.scaling import measure_scaling
from bench.worker import WorkerProcess, free_port
from dmp_faust import kafka_local

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
HEALTH_TIMEOUT_S = 180.0


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def main() -> int:
    try:
        config = BenchConfig.from_env()
    except ConfigError as exc:
        say(str(exc))
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    machine = Machine.describe()
    root = Path(tempfile.mkdtemp(prefix="dmp-bench-"))
    keep = True
    try:
        results = _with_broker(config, root)
        keep = config.keep
    except (Exception, KeyboardInterrupt) as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if keep:
            say(f"kept {root} (broker data, worker logs)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(table(config, machine, results))
    RESULTS_PATH.write_text(results_markdown(config, machine, results))
    print(summary_line(results))
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _with_broker(config: BenchConfig, root: Path) -> Results:
    kafka_dir = root / "kafka"
    say("starting a Kafka broker")
    broker = kafka_local.start(free_port(), kafka_dir, controller_port=free_port())
    try:
        results = _with_topics(config, root, broker.bootstrap)
        if config.history_events:
            say(f"history: {config.history_events:,} events without and with the sink")
            try:
                figures = asyncio.run(measure_history(config, broker.bootstrap, root / "history"))
            except (Exception, KeyboardInterrupt) as exc:  # the other figures still stand
                say(f"history failed: {type(exc).__name__}: {exc}")
            else:
                results = dataclasses.replace(results, history=figures)
                say(history_table(figures).splitlines()[-1])
        if not config.scaling_events:
            return results
        say(f"scaling: {config.scaling_events:,} events per layout (partitions, workers)")
        try:
            scaling = asyncio.run(measure_scaling(config, broker.bootstrap, root / "scaling"))
        except (Exception, KeyboardInterrupt) as exc:  # the other figures still stand
            say(f"scaling failed: {type(exc).__name__}: {exc}")
            return results
        for layout in scaling:
            say(
                f"scaling: {layout.partitions} partitions, {layout.workers} workers: "
                f"{layout.rate:,.0f} ev/s"
            )
        return dataclasses.replace(results, scaling=scaling)
    finally:
        kafka_local.stop(kafka_dir)


def _with_topics(config: BenchConfig, root: Path, bootstrap: str) -> Results:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    say(f"creating topics under prefix {prefix} ({config.partitions} partitions)")
    provision(bootstrap, prefix, config.partitions, root / "provision")
    worker = WorkerProcess(
        bootstrap, prefix, config.partitions, root / "worker", root / "worker.log"
    )
    try:
        return asyncio.run(_measure(config, worker))
    finally:
        worker.stop(timeout=30)


async def _measure(config: BenchConfig, worker: WorkerProcess) -> Results:
    topic = f"{worker.prefix}.events.raw"
    say(f"loading {config.events:,} events ({config.profiles:,} simulated users) onto {topic}")
    events = bench_events(config, time.time_ns() // 1_000_000)
    load = await load_events(worker.bootstrap, topic, events)
    say(f"loaded in {load.seconds:.1f} s ({load.rate:,.0f} ev/s, {load.mean_bytes:.0f} B mean)")
    ceiling = await measure_ceiling(worker.bootstrap, topic, config.partitions)
    say(f"ceiling: {ceiling.rate:,.0f} ev/s")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        say("starting a worker; the pipeline is timed from its first /health 200")
        worker.start()
        ready_at = await worker.wait_healthy(session, HEALTH_TIMEOUT_S)
        pipeline = await measure_pipeline(
            session, worker, config.events, ready_at, config.pipeline_timeout_s, config.stall_s
        )
        say(f"pipeline: {pipeline.rate:,.0f} ev/s (drained in {pipeline.drained_s:.1f} s)")
        rate = max(1.0, pipeline.rate / 2)
        say(f"latency: {config.latency_seconds:g} s of live events at {rate:,.0f} ev/s")
        latency = await measure_latency(session, worker, topic, rate, config.latency_seconds)
        capacity = []
        if config.capacity_seconds:
            say(f"capacity: {config.capacity_seconds:g} s at each of 30, 50, 70, 90 % of the rate")
            capacity = await measure_capacity(
                session, worker, topic, pipeline.rate, config.capacity_seconds
            )
            for point in capacity:
                say(
                    f"capacity: {point.share:.0%}: p50 {point.latency.percentile(0.5):.0f} ms, "
                    f"rho {point.capacity.get('utilisation')}, "
                    f"W {point.capacity.get('expected_sojourn_s')} s"
                )
        memory = worker.memory_kib()
        profiles = int((await worker.metrics(session)).get("dmp_profiles", 0))
        audience = await _audience(config, session, worker, topic)
        say("recovery: kill -9, restart on the same data directory")
        recovery_s = await measure_recovery(session, worker, HEALTH_TIMEOUT_S)
    crashes = worker.crashes()
    if crashes:
        say(f"warning: {len(crashes)} agent crashes in the worker log (BENCH_KEEP=1 keeps it)")
    return Results(
        load, ceiling, pipeline, latency, memory, profiles, audience, recovery_s, crashes,
        capacity=capacity,
    )  # fmt: skip


async def _audience(
    config: BenchConfig, session: aiohttp.ClientSession, worker: WorkerProcess, topic: str
) -> Audience | None:
    if not config.audience:
        return None
    say(f"audience: a page view from each of {config.audience:,} new visitors")
    before = Accounting.from_metrics(await worker.metrics(session))
    events = audience_events(config.audience, time.time_ns() // 1_000_000)
    await load_events(worker.bootstrap, topic, events)
    drained = await measure_pipeline(
        session,
        worker,
        before.received + config.audience,
        time.monotonic(),
        config.pipeline_timeout_s,
        config.stall_s,
    )
    profiles = int((await worker.metrics(session)).get("dmp_profiles", 0))
    say(f"audience: {profiles:,} profiles, drained in {drained.drained_s:.1f} s")
    return Audience(config.audience, drained.drained_s, worker.memory_kib(), profiles)


if __name__ == "__main__":
    sys.exit(main())
