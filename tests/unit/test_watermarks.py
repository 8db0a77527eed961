"""Offset watermarks and the counter they guard: what makes folds idempotent on replay."""

from __future__ import annotations

import pytest

from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.watermarks import (
    MAX_PARTITIONS,
    Watermarks,
    decode_source,
    encode_source,
    source_id,
)

# --- covers / advance -----------------------------------------------------------------


def test_empty_marks_cover_nothing() -> None:
    marks = Watermarks()
    assert not marks.covers(0, 0)
    assert not marks.covers(7, 123)


@pytest.mark.parametrize(
    ("partition", "offset", "covered"),
    [
        pytest.param(3, 0, True, id="first-offset"),
        pytest.param(3, 9, True, id="below-mark"),
        pytest.param(3, 10, True, id="at-mark"),
        pytest.param(3, 11, False, id="above-mark"),
        pytest.param(4, 0, False, id="other-partition"),
    ],
)
def test_covers_is_at_or_below_the_mark(partition: int, offset: int, covered: bool) -> None:
    marks = Watermarks()
    marks.advance(3, 10)
    assert marks.covers(partition, offset) is covered


def test_advance_never_goes_back() -> None:
    marks = Watermarks()
    marks.advance(1, 10)
    marks.advance(1, 4)
    marks.advance(1, 10)
    assert marks.offsets == {1: 10}
    marks.advance(1, 11)
    marks.advance(2, 0)
    assert marks.offsets == {1: 11, 2: 0}


def test_marks_share_the_dict_they_are_built_on() -> None:
    """``Profile.watermarks`` relies on this: advancing the view advances the record."""
    offsets: dict[int, int] = {}
    Watermarks(offsets).advance(5, 3)
    assert offsets == {5: 3}


def test_equality_and_repr() -> None:
    assert Watermarks({1: 2}) == Watermarks({1: 2})
    assert Watermarks({1: 2}) != Watermarks({1: 3})
    assert Watermarks() != {1: 2}
    assert repr(Watermarks({1: 2})) == "Watermarks({1: 2})"


# --- bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offsets",
    [
        pytest.param({}, id="empty"),
        pytest.param({0: 0}, id="zero"),
        pytest.param({3: 17, 1: 5, source_id(1, 3): 2**40}, id="several-large"),
    ],
)
def test_round_trip_from_a_non_zero_position(offsets: dict[int, int]) -> None:
    marks = Watermarks(dict(offsets))
    encoded = marks.to_bytes()
    data = b"head" + encoded + b"tail"
    read, end = Watermarks.read(data, 4)
    assert read == marks
    assert end == 4 + len(encoded)
    assert data[end:] == b"tail"


def test_bytes_do_not_depend_on_insertion_order() -> None:
    assert Watermarks({2: 1, 1: 2}).to_bytes() == Watermarks({1: 2, 2: 1}).to_bytes()


def test_read_defaults_to_the_start() -> None:
    marks = Watermarks({9: 99})
    assert Watermarks.read(marks.to_bytes()) == (marks, len(marks.to_bytes()))


# --- sources --------------------------------------------------------------------------


def test_source_id_of_stream_zero_is_the_partition() -> None:
    assert source_id(0, 5) == 5
    assert source_id(1, 3) == MAX_PARTITIONS + 3


def test_source_ids_of_distinct_streams_and_partitions_differ() -> None:
    ids = {source_id(s, p) for s in range(3) for p in range(MAX_PARTITIONS)}
    assert len(ids) == 3 * MAX_PARTITIONS


@pytest.mark.parametrize(
    ("partition", "offset", "raw"),
    [
        pytest.param(0, 0, b"0:0", id="zeros"),
        pytest.param(3, 42, b"3:42", id="valid-events"),
        pytest.param(source_id(1, 2), 2**40, b"1026:1099511627776", id="profiles-stream"),
    ],
)
def test_encode_and_decode_source(partition: int, offset: int, raw: bytes) -> None:
    assert encode_source(partition, offset) == raw
    assert decode_source(raw) == (partition, offset)


# --- the guarded counter --------------------------------------------------------------


def test_counter_applies_each_source_once() -> None:
    size = GuardedCounter()
    assert size.apply_once((1, 10), +1)
    assert not size.apply_once((1, 10), +1)  # replayed
    assert not size.apply_once((1, 9), -1)  # older, so folded already
    assert size.apply_once((2, 0), +1)  # another partition
    assert size.apply_once((1, 11), -1)
    assert size.value == 1
    assert size.applied == Watermarks({1: 11, 2: 0})


def test_counter_counts_a_replayed_longer_take_once() -> None:
    # The profile count of one profiles.in partition (source 5). A take of offsets
    # 10..12 created three profiles; its count was committed, then the worker died
    # before the profiles were (all) written. The replay takes 10..14, finds the
    # profile of offset 11 written already (no creation there now) and creates two
    # more at 13 and 14: only those two are new to the count.
    count = GuardedCounter()
    count.apply_offsets(5, {10: 1, 11: 1, 12: 1})
    count.apply_offsets(5, {10: 1, 12: 1, 13: 1, 14: 1})
    assert count.value == 5
    count.apply_offsets(5, {15: -1, 16: 1, 18: -1})  # an erasure, a profile, a merge
    assert (count.value, count.applied) == (4, Watermarks({5: 18}))


def test_counter_round_trip() -> None:
    size = GuardedCounter()
    size.apply_once((source_id(1, 3), 7), -4)
    size.apply_once((0, 2), +1)
    back = GuardedCounter.from_bytes(size.to_bytes())
    assert back == size
    assert back.value == -3
    assert not back.apply_once((source_id(1, 3), 7), -4)


def test_counter_reads_a_plain_count_as_stored_before_it_was_guarded() -> None:
    legacy = GuardedCounter.from_stored(b"1207")
    assert legacy == GuardedCounter(1207, Watermarks())
    assert legacy.apply_once((3, 0), -1)
    guarded = GuardedCounter(0x3030, Watermarks({1: 0x3939}))  # digits in its bytes
    assert GuardedCounter.from_stored(guarded.to_bytes()) == guarded
    assert GuardedCounter.from_stored(None) == GuardedCounter()


@pytest.mark.parametrize("raw", [None, b""])
def test_counter_from_nothing_is_zero(raw: bytes | None) -> None:
    assert GuardedCounter.from_bytes(raw) == GuardedCounter(0, Watermarks())
