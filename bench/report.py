"""The figures of one run as a Markdown table, ``bench/RESULTS.md`` and one summary line."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.capacity import LoadPoint
from bench.config import BenchConfig, Machine
from bench.history import HistoryFigures, history_table
from bench.latency import Latency
from bench.load import LoadResult
from bench.measure import Accounting, Ceiling, Pipeline
from bench.scaling import Layout

HEADER = """# dmp-faust benchmark results

Written by `make bench` (`python -m bench.run`); every run overwrites this file.
One run starts its own single-node Kafka broker (KRaft, on this machine),
creates the app's topics under a fresh prefix, loads N generated events onto
the raw topic and measures, on that same topic:

- **ceiling**: one plain `AIOKafkaConsumer` (all raw partitions assigned,
  `getmany` of up to 50,000 records) reads the whole raw topic and decodes
  every value with `msgspec.json.Decoder().decode`, as `validate_bytes` does,
  and nothing else. The most one Python process gets out of this topic.
- **pipeline**: a fresh `dmp-faust worker` (one process, empty data
  directory), timed from its first `GET /health` 200 until every event is
  accounted for in every stage: on `/metrics`, `received` = `invalid +
  duplicate + bot + accepted` = N, and the consumer groups have committed
  the end offset of every partition of every topic the app reads: group
  `{prefix}-intake` on `events.raw`, group `{prefix}` (Faust's) on
  `events.valid`, `events.by_campaign`, `profiles.in` and `segments.deltas`.
  Faust commits about every 2.8 s, so the time includes up to one commit
  interval (nothing is subtracted). "accounted" is the
  time at which the counters alone were complete. Rate = N / drained time.
- **ratio**: pipeline rate / ceiling rate.
- **latency**: with the worker caught up, impressions of one campaign of
  their own, stamped with the current wall-clock time, are produced at half
  the pipeline rate (one `send` each, no linger) while `GET
  /campaigns/{id}/stats` is read every 50 ms. The i-th event sent counts as
  visible at the first read that returned at least i impressions; its latency
  is that read's response time minus the time its `send` was called. It
  includes the producer, three Kafka hops (raw, valid, by_campaign), the
  agents, the table write, and up to one polling interval plus an HTTP round
  trip. "missing" events were not visible 60 s after the last send; the
  phase's accounting is the difference of `/metrics` before and after it.
- **capacity**: the same measurement at 30, 50, 70 and 90 % of the pipeline
  rate, `BENCH_CAPACITY_SECONDS` (default 20) each, every one after the
  worker drained what the one before left; beside each, the worker's own
  utilisation rho and the M/M/1 expected time in the worker W from its
  `GET /health` (read every second; the last reading before the sending
  ended). See the capacity section below the table.
- **rss**: the worker's peak resident set (`VmHWM` in `/proc/<pid>/status`)
  after the load and the latency phase; "profiles" is the worker's
  `dmp_profiles` gauge (canonical profiles held). `BENCH_PROFILES` sets the
  simulated audience of the load.
- **audience**: then one page view from each of `BENCH_AUDIENCE` (default
  1,000,000) visitors never seen before, so as many new profiles; the worker's
  peak RSS again once they are all folded. The final line's rss is the peak
  over the whole run.
- **recovery**: the worker, holding all those profiles, is killed with
  `kill -9` and started again on the same data directory; seconds from the
  restart to its first `GET /health` 200 (tables recovered from local
  RocksDB plus the changelogs, group joined).
- **agent crashes**: lines of the worker's log (both runs) where Faust
  reports an agent crashed; it restarts the agent after a pause, so crashes
  slow every figure above and may lose the records being processed.

Events come from the generator's core (`dmp_faust.generator.generate_events`):
the mix of `make demo`, event times from 2021-03-01 advancing 1 ms per event.
"""


CAPACITY_NOTE = """### Reading the capacity table

rho and W are the worker's own figures (`dmp_faust/capacity.py`): lambda is
the events received a second, mu the events finished per second of CPU time
of the event loop's thread, both weighted over about 30 s. The model takes one
server, Poisson arrivals and exponential service of single events. The
worker departs from it in three ways. It serves micro-batches (a take of up
to 64 records, gathered for at most 20 ms), so an event waits for its batch,
and a batch costs less per event than one event alone: mu grows with the
load. Faust's consumer thread fetches beside the event loop and competes with
it for the interpreter, which the model does not see. And the measured
latency also holds three Kafka hops, a 50 ms poll of the view and an HTTP
round trip, which W leaves out. So at low
load the measured latency is a floor of hops and batching that W does not
see. And the latency grows to seconds at loads where rho is still below 1
(from half the pipeline rate at rho 0.70 in the run at 755e269; from 70 %, at
rho 0.79, in the run at the alerts' commit): in live traffic the worker runs
out of something other than its event loop's CPU before the model says it
is full (not yet found; the stages wait on Kafka round trips one take at a
time, the first suspect). So the capacity alert (rho above 0.8 for a minute)
comes late. The same rate also gave very different latencies from one phase
to the next (at 3,047 ev/s in the run at 755e269, p99 427 ms in the latency
phase, p50 4.3 s in the capacity phase minutes later): near its live limit
the worker either keeps up or falls behind for as long as the load lasts.
"""


HISTORY_NOTE = """The sink runs in the worker: a Kafka consumer of its own on `dmp.events.clean`
(one record per event, unlike the stages' batch records; through Faust it cost
+69 µs an event), JSON decoding, columns, zstd Parquet written in a thread.
Without it the worker does not read the clean topic at all. The two 200,000-event
runs here differ by little; the main pipeline phase above (1,000,000 events,
all of them in the backlog at once) ran 4,438 ev/s against 6,323 at the last
run without the sink: at that backlog the sink costs far more than here, and why
is not measured yet. The query figure is the route's own code without HTTP;
DuckDB reads every file's footer on each query (the view is built by name
over all files), so the figure grows with the number of files: compact.
"""

SCALING_NOTE = """### Reading the scaling table, and the plan for a cluster

Each row is a fresh prefix with that many partitions, the same events, and
that many workers started together (see `bench/scaling.py`). On this
machine the broker and every worker share two cores, so a second worker
cannot add a core: it splits the partitions, and the rate drops (the last
row, against the first) because two processes compete for the same cores
with the broker, each pays its own fixed costs, and the two joining the group
rebalance inside the timed drain. What the rows do show is that the work
divides: every partition of every topic is owned by exactly one worker,
which is all that scaling out needs. On one worker, 4 and 8 partitions run
at about the same rate (within about 10 % in the runs so far) and 16 at
about three quarters of it (more, smaller batches and twice the RocksDB
databases).

Partitions are the unit of parallelism: a worker processes the partitions
it owns one record at a time per agent, and a layout can run at most as
many busy workers as it has partitions. More partitions per worker cost a
little (more, smaller batches and more RocksDB databases); fewer partitions
cap the cluster's size. The default of 8 allows up to 8 workers.

A multi-machine cluster:

- **Kafka**: three or more brokers, replication factor 3 and
  `min.insync.replicas=2` for every topic (the app's topics are created with
  `topic_replication_factor`; set it for production), partitions sized to
  the largest worker count expected (they cannot be split later without
  moving keys: 32 or 64 for a growing deployment).
- **Workers**: one per core on each machine, each with its own data
  directory on local SSD, `DMP_WEB_HOST` set to a name the others can reach
  (lookups are forwarded to the owning worker), the same prefix and
  bootstrap. Faust's standby replicas (`table_standby_replicas`, 1 by
  default) keep a warm copy of each table partition on another worker, so a
  lost worker's partitions resume without reading whole changelogs.
- **Sizing**: one worker does the rate of the "pipeline" row per core with
  this event mix; a cluster's rate is that times the number of busy workers,
  as long as the brokers' network and disks keep up (they do far more: the
  ceiling row is one Python process reading).
- **Hot keys**: campaign statistics are partitioned by campaign, so one very
  large campaign is bounded by one worker's rate; splitting a campaign's
  windows over sub-keys (campaign, shard) and merging sketches at query time
  is the next step when a single campaign outgrows a core.
"""


@dataclass(frozen=True)
class Audience:
    """The memory phase: ``events`` page views of new visitors, drained in ``seconds``."""

    events: int
    seconds: float
    memory_kib: dict[str, int]
    profiles: int


@dataclass(frozen=True)
class Results:
    load: LoadResult
    ceiling: Ceiling
    pipeline: Pipeline
    latency: Latency
    memory_kib: dict[str, int]
    profiles: int
    audience: Audience | None
    recovery_s: float
    crashes: list[str]
    scaling: list[Layout] = field(default_factory=list)
    capacity: list[LoadPoint] = field(default_factory=list)
    history: HistoryFigures | None = None


def table(config: BenchConfig, machine: Machine, results: Results) -> str:
    rows = [
        ("**machine**", ""),
        ("CPUs (nproc)", str(machine.cpus)),
        ("memory", f"{machine.memory_gib:.1f} GiB"),
        ("CPU model", machine.cpu_model),
        ("**versions**", ""),
        ("Python", machine.python),
        ("faust-streaming", machine.faust),
        ("aiokafka", machine.aiokafka),
        ("Kafka", f"{machine.kafka} (KRaft, one local node)"),
        ("**settings**", ""),
        *_settings(config, results),
        ("**results**", ""),
        *_figures(results),
    ]
    lines = ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines) + "\n"


def _settings(config: BenchConfig, results: Results) -> list[tuple[str, str]]:
    load = results.load
    mix = ", ".join(f"{kind} {n}" for kind, n in sorted(load.kinds.items()))
    return [
        ("events (N)", f"{config.events:,}"),
        ("partitions", str(config.partitions)),
        ("profiles (simulated users)", f"{config.profiles:,}"),
        ("audience phase (new visitors)", f"{config.audience:,}"),
        ("campaigns", str(config.campaigns)),
        ("event size", f"{load.mean_bytes:.0f} B mean ({load.total_bytes / 2**20:.1f} MiB)"),
        ("mix", mix),
        ("load (producer)", f"{load.rate:,.0f} ev/s ({load.seconds:.1f} s)"),
    ]


def _figures(results: Results) -> list[tuple[str, str]]:
    ceiling, pipeline, latency = results.ceiling, results.pipeline, results.latency
    return [
        (
            "ceiling",
            f"{ceiling.rate:,.0f} ev/s ({ceiling.events:,} events in {ceiling.seconds:.2f} s)",
        ),
        (
            "pipeline",
            f"{pipeline.rate:,.0f} ev/s (drained in {pipeline.drained_s:.1f} s; "
            f"accounted in {pipeline.accounted_s:.1f} s)",
        ),
        ("accounting", _accounting(pipeline.accounting)),
        ("ratio pipeline/ceiling", f"{ratio(results):.4f}"),
        (
            "latency p50 / p99 / max",
            f"{_ms(latency.percentile(0.5))} / {_ms(latency.percentile(0.99))} / "
            f"{_ms(latency.percentile(1.0))} ms ({latency.sent:,} events at "
            f"{latency.rate:,.0f} ev/s, {latency.missing} missing)",
        ),
        ("latency phase accounting", _accounting(latency.during)),
        (
            "worker peak RSS",
            f"{_mib(results.memory_kib.get('VmHWM', 0))} MiB (now "
            f"{_mib(results.memory_kib.get('VmRSS', 0))} MiB; {results.profiles:,} profiles)",
        ),
        *_audience(results.audience),
        (
            "recovery after kill -9",
            f"{results.recovery_s:.1f} s ({_profiles_held(results):,} profiles)",
        ),
        ("agent crashes in the worker log", _crashes(results.crashes)),
    ]


def _audience(audience: Audience | None) -> list[tuple[str, str]]:
    if audience is None:
        return []
    return [
        (
            "audience phase",
            f"{audience.events:,} new visitors in {audience.seconds:.1f} s "
            f"({audience.events / audience.seconds:,.0f} ev/s)",
        ),
        (
            "worker peak RSS with the audience",
            f"{_mib(audience.memory_kib.get('VmHWM', 0))} MiB (now "
            f"{_mib(audience.memory_kib.get('VmRSS', 0))} MiB; {audience.profiles:,} profiles)",
        ),
    ]


def _profiles_held(results: Results) -> int:
    return results.audience.profiles if results.audience else results.profiles


def _accounting(acc: Accounting) -> str:
    return (
        f"received {acc.received:,} = invalid {acc.invalid:,} + duplicate "
        f"{acc.duplicate:,} + bot {acc.bot:,} + accepted {acc.accepted:,}"
    )


def _crashes(lines: list[str]) -> str:
    if not lines:
        return "none"
    first = lines[0].split("]: ", 1)[-1].replace("|", "/")
    return f"{len(lines)}; the first: `{first[:200]}`"


def peak_rss_kib(results: Results) -> int:
    """The worker's peak RSS over the run (the audience phase comes later, if it ran)."""
    phases = [results.memory_kib] + ([results.audience.memory_kib] if results.audience else [])
    return max(memory.get("VmHWM", 0) for memory in phases)


def ratio(results: Results) -> float:
    return results.pipeline.rate / results.ceiling.rate


def summary_line(results: Results) -> str:
    return (
        f"bench: pipeline {results.pipeline.rate:.0f} ev/s, "
        f"ceiling {results.ceiling.rate:.0f} ev/s, ratio {ratio(results):.4f}, "
        f"p99 {_ms(results.latency.percentile(0.99))} ms, "
        f"rss {_mib(peak_rss_kib(results))} MiB, "
        f"recovery {results.recovery_s:.1f} s"
    )


def scaling_table(layouts: list[Layout]) -> str:
    if not layouts:
        return "(not run: BENCH_SCALING_EVENTS=0)\n"
    base = layouts[0].rate
    lines = ["| partitions | workers | events | drained in | rate | vs. first row |"]
    lines.append("|---|---|---|---|---|---|")
    for layout in layouts:
        lines.append(
            f"| {layout.partitions} | {layout.workers} | {layout.events:,} | "
            f"{layout.seconds:.1f} s | {layout.rate:,.0f} ev/s | {layout.rate / base:.2f} |"
        )
    return "\n".join(lines) + "\n"


def capacity_table(points: list[LoadPoint]) -> str:
    if not points:
        return "(not run: BENCH_CAPACITY_SECONDS=0)\n"
    lines = [
        "| offered load | rate | drained before | rho (/health) | W predicted (M/M/1) "
        "| latency mean | p50 | p99 | missing |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        rho = point.capacity.get("utilisation")
        predicted = point.predicted_ms
        lines.append(
            f"| {point.share:.0%} | {point.latency.rate:,.0f} ev/s | "
            f"{point.drained_before_s:.1f} s | {'n/a' if rho is None else f'{rho:.2f}'} | "
            f"{'unbounded (rho >= 1)' if predicted is None else f'{predicted:.1f} ms'} | "
            f"{_ms(point.mean_ms)} ms | {_ms(point.latency.percentile(0.5))} ms | "
            f"{_ms(point.latency.percentile(0.99))} ms | {point.latency.missing} |"
        )
    return "\n".join(lines) + "\n"


def results_markdown(config: BenchConfig, machine: Machine, results: Results) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = table(config, machine, results)
    scaling = scaling_table(results.scaling)
    capacity = capacity_table(results.capacity)
    return (
        f"{HEADER}\n## Last run ({when})\n\n{body}\n{summary_line(results)}\n\n"
        f"## Capacity: the M/M/1 model against the latency measured (this run)\n\n"
        f"{capacity}\n{CAPACITY_NOTE}\n"
        f"## Scaling (this run)\n\n{scaling}\n{SCALING_NOTE}"
        f"\n## The Parquet history (this run)\n\n{history_table(results.history)}\n{HISTORY_NOTE}"
    )


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"
