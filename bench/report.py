"""The figures of one run as a Markdown table, ``bench/RESULTS.md`` and one summary line."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.config import BenchConfig, Machine
from bench.latency import Latency
from bench.load import LoadResult
from bench.measure import Accounting, Ceiling, Pipeline

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
  duplicate + bot + accepted` = N, and the consumer group `{prefix}` has
  committed the end offset of every partition of every topic the app reads
  (`events.raw`, `events.valid`, `events.by_campaign`, `profiles.in`,
  `segments.deltas`). Faust commits about every 2.8 s, so the time includes
  up to one commit interval (nothing is subtracted). "accounted" is the
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
- **rss**: the worker's peak resident set (`VmHWM` in `/proc/<pid>/status`)
  after the load and the latency phase; "profiles" is the worker's
  `dmp_profiles` gauge (canonical profiles held). `BENCH_PROFILES` sets the
  simulated audience (e.g. `BENCH_PROFILES=1000000` for a million-user run).
- **recovery**: the worker is killed with `kill -9` and started again on the
  same data directory; seconds from the restart to its first `GET /health`
  200 (tables recovered from local RocksDB plus the changelogs, group joined).
- **agent crashes**: lines of the worker's log (both runs) where Faust
  reports an agent crashed; it restarts the agent after a pause, so crashes
  slow every figure above and may lose the records being processed.

Events come from the generator's core (`dmp_faust.generator.generate_events`):
the mix of `make demo`, event times from 2021-03-01 advancing 1 ms per event.
"""


@dataclass(frozen=True)
class Results:
    load: LoadResult
    ceiling: Ceiling
    pipeline: Pipeline
    latency: Latency
    memory_kib: dict[str, int]
    profiles: int
    recovery_s: float
    crashes: list[str]


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
        ("recovery after kill -9", f"{results.recovery_s:.1f} s"),
        ("agent crashes in the worker log", _crashes(results.crashes)),
    ]


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


def ratio(results: Results) -> float:
    return results.pipeline.rate / results.ceiling.rate


def summary_line(results: Results) -> str:
    return (
        f"bench: pipeline {results.pipeline.rate:.0f} ev/s, "
        f"ceiling {results.ceiling.rate:.0f} ev/s, ratio {ratio(results):.4f}, "
        f"p99 {_ms(results.latency.percentile(0.99))} ms, "
        f"rss {_mib(results.memory_kib.get('VmHWM', 0))} MiB, "
        f"recovery {results.recovery_s:.1f} s"
    )


def results_markdown(config: BenchConfig, machine: Machine, results: Results) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = table(config, machine, results)
    return f"{HEADER}\n## Last run ({when})\n\n{body}\n{summary_line(results)}\n"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"
