"""Whether a worker's tables have settled since its partitions last moved.

Faust's own flags cannot say it: ``recovery.completed`` is set at the end of
the first recovery and never cleared, and the end of one rebalance's
recovery clears ``app.rebalancing`` even when the next rebalance has begun
(its partitions revoked) meanwhile. So the worker counts the three events
of a rebalance in the order they happen, and is settled only when a
recovery completed after the latest assignment, which came after the latest
revocation:

    revoke, assign, complete          settled
    revoke, assign, revoke, complete  not settled (the completion is the old one's)
    revoke, assign, complete, revoke  not settled (a new rebalance is on)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class RebalanceLog:
    def __init__(self) -> None:
        self._sequence = 0
        self.revoked = 0
        self.assigned = 0
        self.completed = 0

    @property
    def sequence(self) -> int:
        """Changes at each event: what was true at one value may not be at the next."""
        return self._sequence

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def revoke(self) -> None:
        self.revoked = self._next()

    def assign(self) -> None:
        self.assigned = self._next()

    def complete(self) -> None:
        self.completed = self._next()

    @property
    def settled(self) -> bool:
        return self.revoked < self.assigned < self.completed


def misplaced_partitions(
    own_url: str,
    distribution: Mapping[str, Mapping[str, Iterable[int]]],
    held: Iterable[tuple[str, int]],
    changelogs: Iterable[str],
) -> list[int]:
    """Partitions on which the cluster's view and this worker's own disagree.

    ``distribution`` is the assignment as every worker sees it (URL → changelog
    topic → active partitions), ``held`` the (topic, partition) pairs this
    worker holds as active. They differ when another member of the group
    announced this worker's URL: a previous instance of it, killed or still
    shutting down, whose session has not lapsed. The distribution is keyed by
    URL, so one of the two members' partitions shows under the URL and the
    other's nowhere; either way this worker would answer, from tables it does
    not have, for keys it does not own.
    """
    own = own_url.rstrip("/")
    held_set = set(held)
    odd: set[int] = set()
    for topic in changelogs:
        listed = {
            partition
            for url, topics in distribution.items()
            if url.rstrip("/") == own
            for partition in topics.get(topic, ())
        }
        odd |= listed ^ {partition for name, partition in held_set if name == topic}
    return sorted(odd)


class CatchUp:
    """A taken-over partition's stage on its way to ``target``, the partition's end
    offset when it was assigned here (see ``dmp_faust.readiness``).

    :meth:`state` says ``"behind"`` while the stage has not reached the target and
    has moved within the last ``stall_s`` seconds (lookups wait), ``"caught_up"``
    once it has, and ``"stalled"`` when it has not moved for ``stall_s`` short of
    it (lookups are answered from the table as it is).
    """

    def __init__(self, target: int, now: float, stall_s: float) -> None:
        self.target = target
        self.stall_s = stall_s
        self.seen = -1  # the stage's next offset when last asked
        self.since = now  # when it became that

    def state(self, reached: int, now: float) -> str:
        if reached >= self.target:
            return "caught_up"
        if reached != self.seen:
            self.seen, self.since = reached, now
            return "behind"
        return "behind" if now - self.since < self.stall_s else "stalled"
