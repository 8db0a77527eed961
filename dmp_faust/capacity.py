"""The worker's capacity figures, sampled once a second (model: :mod:`dmp_faust.domain.capacity`).

lambda is the events received (``dmp_events_received_total``, both sources);
mu is the events the pipeline finished (accepted, invalid, duplicate or bot)
per second of CPU time of the event loop's thread, the one "server" every
stage, view and the intake share (Faust's consumer thread, which fetches
beside it, is left out: measured with it, rho stayed below 1 while the
latency grew without bound). They are shown in ``GET
/health`` under ``capacity`` and as the gauges ``dmp_utilisation`` (NaN until
measured) and ``dmp_expected_sojourn_seconds`` (NaN until measured, +Inf at a
utilisation of 1 or more). A utilisation above ``DMP_ALERT_CAPACITY_RHO`` for
``DMP_ALERT_CAPACITY_FOR_S`` opens a capacity incident on ``dmp.alerts``
(:class:`dmp_faust.domain.alerts.CapacityWatch`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY, Counter, Gauge

from dmp_faust import alerting
from dmp_faust.app import app, metrics, settings
from dmp_faust.batching import partition_for
from dmp_faust.clock import wall_ms
from dmp_faust.domain.alerts import CapacityWatch
from dmp_faust.domain.capacity import Capacity, CapacityMeter
from dmp_faust.readiness import own_url

log = logging.getLogger(__name__)
meter = CapacityMeter()
watch = CapacityWatch(own_url(), settings.alert_capacity_rho, 1000 * settings.alert_capacity_for_s)
utilisation = Gauge(
    "dmp_utilisation", "Arrival rate over service rate (M/M/1 rho)", registry=REGISTRY
)
sojourn = Gauge(
    "dmp_expected_sojourn_seconds",
    "M/M/1 expected time in the worker, 1 / (mu - lambda)",
    registry=REGISTRY,
)
utilisation.set(math.nan)
sojourn.set(math.nan)


def total(counters: Iterable[Counter]) -> float:
    """The sum of the counters' ``_total`` samples, over every label."""
    return sum(
        sample.value
        for counter in counters
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def latest() -> Capacity:
    return meter.current()


@app.timer(1.0)
async def sample_capacity() -> None:
    """Runs on the event loop's thread: ``thread_time`` is that thread's CPU time."""
    served = total([metrics.accepted, metrics.invalid, metrics.duplicate, metrics.bot])
    now = meter.sample(time.monotonic(), total([metrics.received]), served, time.thread_time())
    utilisation.set(math.nan if now.utilisation is None else now.utilisation)
    if now.expected_sojourn_s is not None:
        sojourn.set(now.expected_sojourn_s)
    else:
        sojourn.set(math.inf if now.utilisation is not None else math.nan)
    change = watch.sample(wall_ms(), now.utilisation, now.as_dict())
    if change is not None:
        alerting.keep_capacity(change)
        records = alerting.new_records()
        key, value = alerting.alert_record(change)
        records.add(partition_for(watch.worker), key, value)
        try:
            await records.send()
        except KafkaError as exc:  # kept for GET /alerts all the same
            log.warning("capacity alert %s not sent to dmp.alerts: %r", key.decode(), exc)
