"""When a worker counts as settled after its partitions moved (dmp_faust.domain.rebalances)."""

from __future__ import annotations

import pytest

from dmp_faust.domain.rebalances import RebalanceLog


@pytest.mark.parametrize(
    ("events", "settled"),
    [
        ("", False),  # started, never assigned
        ("a", False),  # first assignment, recovery under way
        ("ac", True),  # first join: no revocation before it
        ("rac", True),
        ("racr", False),  # a new rebalance began: partitions revoked
        ("racra", False),  # assigned again, recovery under way
        ("racrac", True),
        ("rarc", False),  # the old rebalance's recovery ended after the new revocation
        ("rarca", False),  # ...and the new assignment came later still
        ("rarcac", True),
        ("rc", False),  # a completion without an assignment after the revocation
    ],
)
def test_settled_only_after_a_recovery_of_the_latest_assignment(events: str, settled: bool) -> None:
    log = RebalanceLog()
    for step in events:
        {"r": log.revoke, "a": log.assign, "c": log.complete}[step]()
    assert log.settled is settled
