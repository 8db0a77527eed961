"""Every Prometheus metric of dmp-faust, declared in one object.

Faust's own sensor (``faust.sensors.prometheus``) exports its metrics into
the same registry, so ``GET /metrics`` serves both. Counters are per worker
process: Prometheus sums them over workers, and ``rate()`` copes with the
reset a restart brings.

The accounting identity of the contract holds over these counters once a
worker has caught up::

    sum(dmp_events_received_total) ==
        sum(dmp_events_invalid_total) + dmp_events_duplicate_total
        + dmp_events_bot_total + dmp_events_accepted_total
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dmp_faust.domain.alerts import ALERT_METRICS, DIRECTIONS
from dmp_faust.domain.events import REASONS

SOURCES = ("kafka", "http", "replay")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


@dataclass(frozen=True)
class Metrics:
    received: Counter
    accepted: Counter
    invalid: Counter
    duplicate: Counter
    bot: Counter
    latency: Histogram
    expired_window_events: Counter
    alerts: Counter
    history_rows: Counter
    history_bytes: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        metrics = cls(
            received=Counter(
                "dmp_events_received",
                "Events that reached the platform",
                ["source"],
                registry=registry,
            ),
            accepted=Counter(
                "dmp_events_accepted",
                "Events accepted into profiles and statistics",
                registry=registry,
            ),
            invalid=Counter(
                "dmp_events_invalid", "Events refused, by reason", ["reason"], registry=registry
            ),
            duplicate=Counter(
                "dmp_events_duplicate",
                "Events whose event_id was seen within the horizon",
                registry=registry,
            ),
            bot=Counter(
                "dmp_events_bot",
                "Events from the user agent of a known crawler",
                registry=registry,
            ),
            latency=Histogram(
                "dmp_event_latency_seconds",
                "Event time to processed, in seconds",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            expired_window_events=Counter(
                "dmp_campaign_events_expired",
                "Accepted campaign events whose window had already expired in the stats stage",
                registry=registry,
            ),
            alerts=Counter(
                "dmp_alerts",
                "Incidents opened, by metric and direction",
                ["metric", "direction"],
                registry=registry,
            ),
            history_rows=Counter(
                "dmp_history_rows",
                "Rows written to the Parquet history (each accepted event once)",
                registry=registry,
            ),
            history_bytes=Counter(
                "dmp_history_bytes",
                "Bytes of Parquet written to the history by the sink (not compaction)",
                registry=registry,
            ),
        )
        # Export every label value from the start, so a dashboard sees zeros, not gaps.
        for source in SOURCES:
            metrics.received.labels(source)
        for reason in REASONS:
            metrics.invalid.labels(reason)
        for metric in ALERT_METRICS:
            for direction in DIRECTIONS:
                if metric != "capacity" or direction == "spike":
                    metrics.alerts.labels(metric, direction)
        return metrics


class TableGauges(Collector):
    """Gauges read from tables at scrape time, for the partitions this worker owns."""

    def __init__(
        self,
        profiles: Callable[[], int],
        segment_sizes: Callable[[], Iterable[tuple[str, int]]],
    ) -> None:
        self.profiles = profiles
        self.segment_sizes = segment_sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "dmp_profiles", "Canonical profiles on this worker", value=self.profiles()
        )
        sizes = GaugeMetricFamily(
            "dmp_segment_size", "Profiles in each segment owned by this worker", labels=["segment"]
        )
        for segment, size in self.segment_sizes():
            sizes.add_metric([segment], size)
        yield sizes
