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
