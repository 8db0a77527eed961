"""Which partitions a stage reads itself, and how far (dmp_faust.domain.stalls)."""

from __future__ import annotations

from dmp_faust.domain.stalls import quiet_partitions, unread_tails


def test_a_partition_is_quiet_only_after_nothing_arrived_for_the_whole_while() -> None:
    seen = {1: 100.0, 2: 97.0}
    assert quiet_partitions([1, 2], seen, now=101.0, quiet_s=2.0) == [2]
    assert quiet_partitions([1, 2], seen, now=102.0, quiet_s=2.0) == [1, 2]


def test_a_newly_assigned_partition_starts_its_clock_and_a_lost_one_is_forgotten() -> None:
    """Just assigned, Faust is about to deliver its records: reading them would be wasted.
    Given away and back again, it starts afresh."""
    seen = {1: 10.0, 7: 10.0}
    assert quiet_partitions([1, 3], seen, now=50.0, quiet_s=2.0) == [1]
    assert seen == {1: 10.0, 3: 50.0}
    assert quiet_partitions([1, 3], seen, now=52.0, quiet_s=2.0) == [1, 3]
    assert quiet_partitions([1, 3, 7], seen, now=53.0, quiet_s=2.0) == [1, 3]


def test_unread_tails_are_what_lies_between_the_next_offset_and_the_end() -> None:
    # 0: caught up; 1: the tail Faust dropped; 2: no end offset read; 3: next past the end
    # (the end was read before the stage's latest write)
    tails = unread_tails({0: 61, 1: 4, 2: 0, 3: 12}, {0: 61, 1: 61, 3: 10}, budget=1000)
    assert tails == {1: (4, 61)}


def test_unread_tails_share_the_budget_and_leave_the_rest_for_the_next_check() -> None:
    tails = unread_tails({0: 0, 1: 100, 2: 5}, {0: 1000, 1: 110, 2: 6}, budget=64)
    assert tails == {0: (0, 21), 1: (100, 110), 2: (5, 6)}
    assert unread_tails({0: 0, 1: 0}, {0: 9, 1: 9}, budget=1) == {0: (0, 1), 1: (0, 1)}
    assert unread_tails({}, {0: 9}, budget=64) == {}
