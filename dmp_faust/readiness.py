"""When a worker may answer a key lookup from its own tables, and when /health is ok.

A key is answered here only if its partition is one of this worker's active
partitions, every active partition of every table is restored
(:func:`readiness`), and, for a partition that came to this worker, its
stage has read its input as far as the previous owner can have
(:class:`_Takeovers`). Otherwise the answer is 503 with ``Retry-After``: a
404 must mean only "no such key".
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

from faust.types import TP
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dmp_faust.app import app, settings
from dmp_faust.domain.rebalances import CatchUp, RebalanceLog, misplaced_partitions
from dmp_faust.responses import unavailable
from dmp_faust.state import InputGate
from dmp_faust.topics import campaign_events, profile_commands, segment_deltas
from tables.stream_times import stream_times

log = logging.getLogger(__name__)


def own_url() -> str:
    return str(app.conf.canonical_url).rstrip("/")


def ensure_local(table: Any, partition: int) -> None:
    """503 unless ``partition`` of ``table`` is active on this worker and restored."""
    changelog = table.changelog_topic.get_topic_name()
    if not any(
        tp.topic == changelog and tp.partition == partition
        for tp in app.assignor.assigned_actives()
    ):
        raise unavailable(f"partition {partition} of {table.name} is moving to this worker")
    ready, why = readiness()
    if not ready:
        raise unavailable(f"partition {partition} of {table.name} is not restored yet: {why}")
    if takeovers.behind(table.name, partition):
        raise unavailable(
            f"partition {partition} of {table.name} moved here and is still reading "
            "what its previous owner may have read"
        )


async def _on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
    rebalances.revoke()


async def _on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
    rebalances.assign()


async def _on_recovered(sender: Any, **_: Any) -> None:
    rebalances.complete()


rebalances = RebalanceLog()  # why Faust's own flags are not enough: see its module
app.on_partitions_revoked.connect(_on_revoked)
app.on_partitions_assigned.connect(_on_assigned)
app.on_rebalance_complete.connect(_on_recovered)


MEASURE_WAIT_S = 5.0  # longest wait for the end offsets of newly assigned partitions
# How long a taken-over partition's lookups wait for its stage to move at all, while it
# has not reached the end offset measured at the assignment. A stage that moves, however
# slowly (a backlog on a busy machine), is waited for: answered from the table before
# it has caught up, a lookup could give less than the previous owner gave. Records Faust
# dropped at the end of a partition after a rebalance are read by the stage's input
# gate once nothing arrived for a while (dmp_faust.state.QUIET_S); a stage that stops
# short for another reason (Kafka away, records deleted by retention) would hold its
# lookups for good: past this without progress, they are answered from the table as
# it is, with a warning in the log.
TAKEOVER_STALL_S = 20.0

# The stage that writes each table a lookup reads, by its input gate (dmp_faust.state).
_WRITERS = {
    "profiles": InputGate("profiles", profile_commands, settings),
    "campaign_windows": InputGate("campaign_stats", campaign_events, settings),
    "segment_sizes": InputGate("segment_sizes", segment_deltas, settings),
}


class _Takeovers:
    """Input partitions newly assigned here, until their stage has read as far as the
    previous owner can have.

    A table restored from its changelog lacks what the previous owner wrote but had
    not yet sent to the changelog when it died (a kill -9); the previous owner may
    have answered lookups from it. Its input records were not committed, so this
    worker processes them again, but until it has, a profile that existed can
    answer 404. The previous owner cannot have read past the end of the input at the
    moment the partition was assigned here: so until the stage's gate has passed
    that offset, a lookup answers 503.
    """

    def __init__(self) -> None:
        self.held: set[TP] = set()
        self.targets: dict[TP, int | None] = {}  # None: the end offset is being read
        self.progress: dict[TP, CatchUp] = {}
        self._measuring: set[asyncio.Future[None]] = set()

    async def on_assigned(self, sender: Any, assigned: Any, **_: Any) -> None:
        inputs = {gate.topic.get_topic_name() for gate in _WRITERS.values()}
        mine = {tp for tp in assigned if tp.topic in inputs}
        new = mine - self.held
        self.held = mine
        self.targets = {tp: end for tp, end in self.targets.items() if tp in mine}
        self.progress = {tp: seen for tp, seen in self.progress.items() if tp in mine}
        self.targets.update(dict.fromkeys(new))
        if new:
            future = asyncio.ensure_future(self._measure(new))
            self._measuring.add(future)
            future.add_done_callback(self._measuring.discard)

    async def _measure(self, tps: set[TP]) -> None:
        while True:
            try:
                # Bounded: asked during a rebalance, the answer can fail to come at all.
                ends = await asyncio.wait_for(app.consumer.highwaters(*tps), MEASURE_WAIT_S)
                break
            except Exception as exc:  # broker away, rebalancing, no answer: the lookups wait
                log.warning("cannot read the end offsets of %d partitions: %r", len(tps), exc)
                await asyncio.sleep(1)
        for tp, end in ends.items():
            if tp in self.targets and self.targets[tp] is None:
                self.targets[tp] = end
                self.progress[tp] = CatchUp(end, time.monotonic(), TAKEOVER_STALL_S)

    def behind(self, table_name: str, partition: int) -> bool:
        gate = _WRITERS.get(table_name)
        if gate is None:
            return False
        tp = TP(gate.topic.get_topic_name(), partition)
        if tp not in self.targets:
            return False
        target = self.targets[tp]
        if target is None:
            return True
        reached = gate.expected(stream_times, partition) or 0
        state = self.progress[tp].state(reached, time.monotonic())
        if state == "behind":
            return True
        if state == "stalled":
            log.warning(
                "%s: partition %d stopped at offset %d for %.0f s, short of %d, its end "
                "when it was assigned here; answering from the table as it is",
                gate.stage,
                partition,
                reached,
                TAKEOVER_STALL_S,
                target,
            )
        del self.targets[tp]  # caught up: from now on only new input, as on any worker
        self.progress.pop(tp, None)
        return False

    def catching_up(self) -> bool:
        """Whether a stage here still reads input its partition's previous owner left
        (what work that can wait, such as the history sink, gives way to)."""
        now = time.monotonic()
        for tp, target in self.targets.items():
            if target is None:
                return True
            gate = next(g for g in _WRITERS.values() if g.topic.get_topic_name() == tp.topic)
            reached = gate.expected(stream_times, tp.partition) or 0
            if self.progress[tp].state(reached, now) == "behind":
                return True
        return False


takeovers = _Takeovers()
app.on_partitions_assigned.connect(takeovers.on_assigned)


def settled_partitions(topic: Any) -> set[int]:
    """This worker's partitions of ``topic``, or none while a rebalance is on.

    What a stage checks for records Faust left unread
    (:meth:`dmp_faust.state.InputGate.unread`): in the middle of a rebalance the
    partitions may be on their way to another worker, and Faust's flow is stopped,
    so that nothing arriving then says nothing.
    """
    if app.rebalancing or not rebalances.settled or not app.flow_control.is_active():
        return set()
    name = topic.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}


def recovering_partitions() -> list[int]:
    """Active partitions of which some table's changelog is not read to its end here."""
    recovery = app.tables.recovery
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    remaining = recovery.active_remaining()
    return sorted(
        {
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic in changelogs
            and (tp not in recovery.active_highwaters or remaining.get(tp, 0) > 0)
        }
    )


def _foreign_partitions() -> list[int]:
    """Partitions another member at this worker's URL holds (see misplaced_partitions)."""
    changelogs = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    distribution = {str(url): topics for url, topics in app.assignor.tables_metadata().items()}
    held = [(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()]
    return misplaced_partitions(own_url(), distribution, held, changelogs)


_ready_since = [-1]  # the rebalance sequence at which readiness() last held


def readiness() -> tuple[bool, str | None]:
    """(True, None) when every active partition of every table is restored here.

    Once true, it stays true until the next rebalance event (nothing it reads
    changes in between), so each lookup does not have to check it all again.
    """
    if _ready_since[0] == rebalances.sequence and not app.rebalancing:
        return True, None
    recovery = app.tables.recovery
    if not recovery.completed.is_set():
        return False, "tables are recovering"
    if app.rebalancing or not rebalances.settled or recovery.signal_recovery_start.is_set():
        return False, "a rebalance is on"
    if recovery.in_recovery or recovering_partitions():
        return False, "tables are recovering"
    foreign = _foreign_partitions()
    if foreign:
        return False, (
            f"partitions {foreign} are assigned to another member at this worker's URL "
            "(a previous instance whose session has not expired yet?)"
        )
    _ready_since[0] = rebalances.sequence
    return True, None


class RecoveringPartitions(Collector):
    """``dmp_recovering_partitions``: active partitions whose tables are not restored
    here yet (what ``/health`` lists as ``recovering_partitions``); NaN when that
    cannot be read."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count: float = len(recovering_partitions())
        except Exception:  # the app not started yet: nothing to tell
            count = math.nan
        yield GaugeMetricFamily(
            "dmp_recovering_partitions",
            "Active partitions whose tables are not restored on this worker yet",
            value=count,
        )


REGISTRY.register(RecoveringPartitions())
