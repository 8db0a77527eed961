"""What one benchmark run does (``BENCH_*`` variables) and what it runs on."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dmp_faust.kafka_local import KAFKA_VERSION

PROJECT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A ``BENCH_*`` variable holds a value the benchmark cannot run with."""


@dataclass(frozen=True)
class BenchConfig:
    """The knobs of a run; every one has a default and a ``BENCH_*`` variable.

    ``timeout_s`` bounds the pipeline phase; 0 means "600 s plus 10 ms per
    event", enough for a pipeline of 100 ev/s.
    """

    events: int = 1_000_000
    profiles: int = 100_000
    audience: int = 1_000_000
    scaling_events: int = 200_000
    history_events: int = 200_000
    history_query_events: int = 10_000_000
    campaigns: int = 20
    partitions: int = 8
    latency_seconds: float = 20.0
    capacity_seconds: float = 20.0
    seed: int = 1
    timeout_s: float = 0.0
    stall_s: float = 300.0
    keep: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BenchConfig:
        env = os.environ if env is None else env

        def number(
            name: str, default: float, minimum: float, kind: Callable[[str], float] = int
        ) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
            if value < minimum:
                raise ConfigError(f"{name}={value} must be at least {minimum}")
            return value

        return cls(
            events=int(number("BENCH_EVENTS", cls.events, 1)),
            profiles=int(number("BENCH_PROFILES", cls.profiles, 1)),
            audience=int(number("BENCH_AUDIENCE", cls.audience, 0)),
            scaling_events=int(number("BENCH_SCALING_EVENTS", cls.scaling_events, 0)),
            history_events=int(number("BENCH_HISTORY_EVENTS", cls.history_events, 0)),
            history_query_events=int(
                number("BENCH_HISTORY_QUERY_EVENTS", cls.history_query_events, 1_000)
            ),
            campaigns=int(number("BENCH_CAMPAIGNS", cls.campaigns, 1)),
            partitions=int(number("BENCH_PARTITIONS", cls.partitions, 1)),
            latency_seconds=number("BENCH_LATENCY_SECONDS", cls.latency_seconds, 1, float),
            capacity_seconds=number("BENCH_CAPACITY_SECONDS", cls.capacity_seconds, 0, float),
            seed=int(number("BENCH_SEED", cls.seed, 0)),
            timeout_s=number("BENCH_TIMEOUT_S", cls.timeout_s, 0, float),
            stall_s=number("BENCH_STALL_S", cls.stall_s, 10, float),
            keep=env.get("BENCH_KEEP", "").strip() not in ("", "0"),
        )

    @property
    def pipeline_timeout_s(self) -> float:
        return self.timeout_s or 600 + self.events / 100


@dataclass(frozen=True)
class Machine:
    cpus: int
    memory_gib: float
    cpu_model: str
    python: str
    faust: str
    aiokafka: str
    kafka: str

    @classmethod
    def describe(cls) -> Machine:
        return cls(
            cpus=len(os.sched_getaffinity(0)),
            memory_gib=_mem_total_kib() / 2**20,
            cpu_model=_cpu_model(),
            python=platform.python_version(),
            faust=metadata.version("faust-streaming"),
            aiokafka=metadata.version("aiokafka"),
            kafka=KAFKA_VERSION,
        )


def _mem_total_kib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
