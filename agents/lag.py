"""``dmp_stage_lag{stage,partition}``: what each stage has still to read, honestly.

Faust's committed offset is not where a stage stands: a stage keeps its own
next offset with its writes (its input gate, :class:`dmp_faust.state.InputGate`),
and after a hole in a partition Faust's commit stays behind while the stage has
read past it (docs/RELIABILITY.md), so a lag computed from the commit shows
records that are not there. Here the lag of a partition is its log end less the
stage's own next offset (the log start when the stage has read nothing yet):

- the intake (``validate_events``): the offset after its last handled record;
- the Faust stages: their input gate's next offset;
- the history sink (``read_history``): its state's next offset.

Each worker reports the partitions it owns, refreshed every :data:`EVERY_S`
(log starts and ends asked of Kafka then); ``GET /health`` lists the same figures
under ``stage_lag``. A partition whose figures could not be read is left out until
they can.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from faust.types import TP
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agents import campaign_stats, deduplicate, history, profiles
from dmp_faust.app import app, settings
from dmp_faust.intake import INTAKES
from dmp_faust.readiness import settled_partitions
from dmp_faust.state import InputGate
from tables.stream_times import stream_times

log = logging.getLogger(__name__)

EVERY_S: Final = 2.0
ASK_WAIT_S: Final = 5.0  # longest wait for Kafka's answer about the log ends

# Faust stages by their name in /health, and the input gate that keeps their place.
GATES: Final[dict[str, InputGate]] = {
    "deduplicate_events": deduplicate.gate,
    "build_profiles": profiles.gate,
    "count_segment_sizes": profiles.sizes_gate,
    "count_campaign_stats": campaign_stats.gate,
}

# stage -> partition -> records not processed yet
latest: dict[str, dict[int, int]] = {}


def lag(following: int | None, start: int, end: int) -> int:
    """Records from ``following`` (None: from the log start) to the log ``end``."""
    position = start if following is None else max(following, start)
    return max(0, end - position)


async def _faust_stages() -> dict[str, dict[int, int]]:
    found: dict[str, dict[int, int]] = {}
    owned = {
        stage: [TP(gate.topic.get_topic_name(), p) for p in sorted(settled_partitions(gate.topic))]
        for stage, gate in GATES.items()
    }
    tps = [tp for tps in owned.values() for tp in tps]
    if not tps:
        return found
    starts = await app.consumer.earliest_offsets(*tps)
    ends = await app.consumer.highwaters(*tps)
    for stage, stage_tps in owned.items():
        gate = GATES[stage]
        found[stage] = {
            tp.partition: lag(gate.expected(stream_times, tp.partition), starts[tp], ends[tp])
            for tp in stage_tps
            if starts.get(tp) is not None and ends.get(tp) is not None
        }
    return found


async def _intake() -> dict[str, dict[int, int]]:
    found: dict[str, dict[int, int]] = {}
    for intake in INTAKES:
        offsets = await intake.offsets()
        found[intake.stage] = {p: lag(*figures) for p, figures in sorted(offsets.items())}
    return found


async def _history() -> dict[str, dict[int, int]]:
    reader = history._reader
    if not settings.history_enabled or reader is None:
        return {}
    tps = [tp for tp in reader.assignment() if tp.partition in history.sinks]
    if not tps:
        return {"read_history": {}}
    starts = await reader.beginning_offsets(tps)
    ends = await reader.end_offsets(tps)
    return {
        "read_history": {
            tp.partition: lag(history.sinks[tp.partition].next_offset, starts[tp], ends[tp])
            for tp in sorted(tps, key=lambda tp: tp.partition)
            if tp.partition in history.sinks
        }
    }


READERS: Final[tuple[Callable[[], Awaitable[dict[str, dict[int, int]]]], ...]] = (
    _intake,
    _faust_stages,
    _history,
)


@app.task
async def measure_stage_lag() -> None:
    """From the start, every :data:`EVERY_S`: read every stage's figures again; a stage
    whose figures cannot be read (Kafka away, a rebalance) is left out until they can."""
    while True:
        fresh: dict[str, dict[int, int]] = {}
        for read in READERS:
            try:
                fresh.update(await asyncio.wait_for(read(), ASK_WAIT_S))
            except Exception as exc:  # a figure is not worth a crash
                log.debug("stage lag: %s: %r", read.__name__, exc)
        latest.clear()
        latest.update(fresh)
        await asyncio.sleep(EVERY_S)


class StageLag(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "dmp_stage_lag",
            "Records of an input partition this worker owns that the stage has not "
            "processed: the log end less the stage's own next offset",
            labels=["stage", "partition"],
        )
        for stage, partitions in sorted(latest.items()):
            for partition, behind in sorted(partitions.items()):
                gauge.add_metric([stage, str(partition)], behind)
        yield gauge


def as_json() -> dict[str, Any]:
    """``stage_lag`` in ``GET /health``: per stage, its total and each partition's lag."""
    return {
        stage: {"total": sum(partitions.values()), "partitions": partitions}
        for stage, partitions in sorted(latest.items())
    }


REGISTRY.register(StageLag())
