"""When a worker counts as settled after its partitions moved (dmp_faust.domain.rebalances)."""

from __future__ import annotations

import pytest

from dmp_faust.domain.rebalances import CatchUp, RebalanceLog, misplaced_partitions


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


ME, OTHER = "http://w1:6066", "http://w2:6066"
TOPICS = ["p-profiles-changelog", "p-windows-changelog"]


def _held(*partitions: int) -> list[tuple[str, int]]:
    return [(topic, p) for topic in TOPICS for p in partitions]


def _listed(*partitions: int) -> dict[str, list[int]]:
    return {topic: list(partitions) for topic in TOPICS}


def test_no_partition_is_misplaced_when_the_views_agree() -> None:
    distribution = {ME + "/": _listed(0, 1), OTHER: _listed(2, 3)}
    assert misplaced_partitions(ME, distribution, _held(0, 1), TOPICS) == []


@pytest.mark.parametrize(
    "listed_at_my_url",
    [(2, 3), (0, 1, 2, 3), (0,)],
    ids=["the-ghost-won-the-url", "merged", "partial"],
)
def test_a_previous_instance_at_my_url_shows_as_misplaced_partitions(
    listed_at_my_url: tuple[int, ...],
) -> None:
    """This worker holds 0 and 1; a member at its URL that is not it holds 2 and 3."""
    distribution = {ME: _listed(*listed_at_my_url), OTHER: _listed(4, 5, 6, 7)}
    found = misplaced_partitions(ME, distribution, _held(0, 1), TOPICS)
    assert found == sorted(set(listed_at_my_url) ^ {0, 1})
    assert found


def test_only_changelog_topics_of_this_app_count() -> None:
    distribution = {ME: {**_listed(0), "other-topic": [5]}}
    assert misplaced_partitions(ME, distribution, _held(0), TOPICS) == []


def test_a_stage_that_keeps_moving_is_waited_for_however_long_it_takes() -> None:
    catch_up = CatchUp(target=30_000, now=0.0, stall_s=20.0)
    # 100 offsets every 10 s: 300 s behind the end it had at the assignment
    states = [catch_up.state(100 * step, now=10.0 * step) for step in range(300)]
    assert set(states) == {"behind"}
    assert catch_up.state(30_000, now=3000.0) == "caught_up"


def test_a_stage_that_stops_short_is_stalled_after_the_bound() -> None:
    catch_up = CatchUp(target=500, now=0.0, stall_s=20.0)
    assert catch_up.state(120, now=1.0) == "behind"
    assert catch_up.state(120, now=20.9) == "behind"  # 19.9 s without moving
    assert catch_up.state(120, now=21.0) == "stalled"
    assert catch_up.state(121, now=22.0) == "behind"  # moved again: waited for again


def test_a_stage_that_never_moves_is_stalled_from_the_first_look_on() -> None:
    catch_up = CatchUp(target=500, now=0.0, stall_s=20.0)
    assert catch_up.state(0, now=5.0) == "behind"
    assert catch_up.state(0, now=25.1) == "stalled"
