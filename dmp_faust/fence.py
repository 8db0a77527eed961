"""The fence: a worker that may have lost its partitions writes nothing.

A worker stopped for longer than the group session timeout (``SIGSTOP``, a
VM stall, a long pause of the whole process, a laptop lid) is dropped from
Faust's consumer group: its partitions go to another worker, which rebuilds
their tables from the changelogs and goes on. When the stopped worker wakes,
its take is half done, and nothing in Kafka stops it from writing: without
transactions, a producer is never fenced. Its late changelog records would
land after the new owner's, with values and next input offsets older than
theirs (see docs/RELIABILITY.md for what that did).

So before a take writes anything, it asks the fence for proof that this
worker still is a member of the group generation the take started in: an
answer of the group coordinator to a heartbeat sent in that generation (or
the join of it) less than half a session timeout ago. The coordinator drops
a member only after a whole session timeout without a heartbeat, so such a
member holds its partitions for at least another half session timeout: the
time the take has to get its writes to the broker. After a pause, the last
answer is old: the take waits for the next heartbeat, which the consumer
sends as soon as it wakes. Answered, the take goes on; refused, the
consumer resets its generation, and the take is abandoned without writing:
its records are read again by whoever owns them now (the input gate of each
stage, :class:`dmp_faust.state.InputGate`, makes that exact).

A check is a lease, and a lease alone cannot fence a process stopped between
the check and its send. Two things make such a late write harmless: each
changelog record carries the generation its take ran in, and the tables skip
records of a generation older than one already applied
(:mod:`dmp_faust.store`); and a worker that finds itself dropped from the
group empties its own databases before it joins again
(:func:`wipe_if_dropped`), so that it recovers from the changelogs, not from
writes it made after it lost the partitions.

Heartbeats are timed by wrapping methods of aiokafka's group coordinator (the
heartbeat, the end of a join, and the reset of its generation). They run in Faust's
consumer thread; the fence reads the two numbers they set from the event
loop's thread. Times are ``CLOCK_BOOTTIME`` where there is one: it goes on
counting while the machine is suspended, as the broker's clock does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
POLL_S = 0.05


def now_s() -> float:
    return time.clock_gettime(_CLOCK)


class Fenced(Exception):
    """This worker may no longer own the partitions of the take in hand."""


class Fence:
    """Proof, before a take writes, that this worker is still in its generation.

    ``coordinator`` returns aiokafka's ``GroupCoordinator`` of Faust's consumer
    (it exists only once the consumer started, so it is looked up on first use).
    """

    def __init__(self, coordinator: Callable[[], Any], session_timeout_s: float) -> None:
        self._lookup = coordinator
        self.fresh_s = session_timeout_s / 2
        self.patience_s = float(session_timeout_s)
        self._coordinator: Any = None
        self._answered_at = float("-inf")  # when the last answered request was sent
        self._answered_generation: int | None = None
        self._dropped = False

    def generation(self) -> int:
        """The generation a take starts in; pass it to :meth:`check`."""
        return int(self._watched().generation)

    async def write(self, generation: int, writes: Iterable[Any]) -> None:
        """Check, then commit ``writes`` (:class:`dmp_faust.bulk.TableWrites`) at once,
        their records tagged with ``generation``."""
        await self.check(generation)
        await asyncio.gather(*(table.commit(generation, self.holds) for table in writes))

    def holds(self, generation: int) -> bool:
        """Whether the consumer is still in ``generation`` (asked without waiting)."""
        return generation >= 0 and self._watched().generation == generation

    def take_dropped(self) -> bool:
        """Whether the group dropped this worker since last asked (and forget it).

        Set when the consumer resets its generation: the coordinator no longer
        knew it or its generation (a session expired while it was stopped), not
        an ordinary rebalance, in which a member keeps its generation until the
        next one.
        """
        dropped, self._dropped = self._dropped, False
        return dropped

    async def check(self, generation: int) -> None:
        """Return once this worker provably still holds ``generation``.

        Raises :class:`Fenced` when the consumer left it (dropped or rejoined)
        or when no heartbeat is answered within a session timeout.
        """
        coordinator = self._watched()
        deadline = now_s() + self.patience_s
        while True:
            current = coordinator.generation
            if generation < 0:
                raise Fenced("the consumer is not a member of the group")
            if current != generation:
                raise Fenced(f"the consumer left generation {generation} (now {current})")
            now = now_s()
            if self._answered_generation == generation and now - self._answered_at < self.fresh_s:
                return
            if now >= deadline:
                raise Fenced(f"no heartbeat answered for {self.patience_s:.0f} s")
            await asyncio.sleep(POLL_S)

    def _watched(self) -> Any:
        coordinator = self._lookup()
        if coordinator is not self._coordinator:
            self._watch(coordinator)
        return coordinator

    def _watch(self, coordinator: Any) -> None:
        heartbeat, joined = coordinator._do_heartbeat, coordinator._on_join_complete
        reset = coordinator.reset_generation

        async def timed_heartbeat() -> bool:
            sent, generation = now_s(), coordinator.generation
            answered = bool(await heartbeat())
            if answered:
                self._answered_at, self._answered_generation = sent, generation
            return answered

        async def timed_join(generation: int, *args: Any) -> Any:
            # Called on the coordinator's answer to SyncGroup: the session was just renewed.
            self._answered_at, self._answered_generation = now_s(), generation
            return await joined(generation, *args)

        def watched_reset() -> Any:
            # The coordinator did not know this member or its generation any more (a
            # heartbeat, a commit or a join refused); also called when it leaves the
            # group on close, which is no drop.
            if not coordinator._closing.done():
                self._dropped = True
            return reset()

        coordinator._do_heartbeat = timed_heartbeat
        coordinator._on_join_complete = timed_join
        coordinator.reset_generation = watched_reset
        self._coordinator = coordinator
        # Already in a generation when first watched: its join was not timed, so the
        # first check waits for the next heartbeat (one heartbeat interval at most).


def faust_coordinator(app: Any) -> Callable[[], Any]:
    """The lookup of the group coordinator under a Faust app's consumer."""

    def lookup() -> Any:
        return app.consumer._thread._ensure_consumer()._coordinator

    return lookup


def wipe_if_dropped(app: Any, fence: Fence) -> list[str]:
    """On an assignment, before Faust reads where to recover each table from: if the
    group had dropped this worker, empty its table databases.

    A dropped worker may have written its databases after its partitions went
    to another worker, and stored changelog offsets past that worker's records:
    recovering from them would skip those records. Emptied, every partition it
    is given again is rebuilt from its changelog, whose late records the store
    skips. Returns what was emptied (``table[partition]``), for the log.
    """
    from dmp_faust.store import EpochStore

    if not fence.take_dropped():
        return []
    emptied = []
    for table in app.tables.values():
        if isinstance(table.data, EpochStore):
            emptied += [f"{table.name}[{p}]" for p in table.data.wipe()]
    recovery = app.tables.recovery
    recovery.active_offsets.clear()  # or Faust would resume from where it had read
    recovery.standby_offsets.clear()
    for buffered in recovery.buffers.values():
        buffered.clear()  # changelog records read before: never applied to what was emptied
    return emptied
