"""Unique-user sketches: exact when small, within 2 % when large, mergeable, serializable."""

from __future__ import annotations

import pytest

from dmp_faust.domain.sketch import UniqueCounter, UniqueUnion


def counter(values: range | list[str], prefix: str = "user-") -> UniqueCounter:
    sketch = UniqueCounter()
    for value in values:
        sketch.add(f"{prefix}{value}")
    return sketch


@pytest.mark.parametrize("distinct", [0, 1, 2, 10, 100, 500], ids=lambda n: f"{n}-distinct")
def test_exact_for_small_counts(distinct: int) -> None:
    assert counter(range(distinct)).estimate() == distinct


def test_repeats_count_once() -> None:
    sketch = UniqueCounter()
    for _ in range(50):
        for value in ("a", "b", "c"):
            sketch.add(value)
    assert sketch.estimate() == 3


def test_relative_error_within_two_percent_at_100k() -> None:
    distinct = 100_000
    sketch = counter(range(distinct))
    error = abs(sketch.estimate() - distinct) / distinct
    assert error <= 0.02, f"estimate {sketch.estimate()} is {error:.2%} off"


@pytest.mark.parametrize(
    ("ranges", "distinct"),
    [
        pytest.param([], 0, id="nothing"),
        pytest.param([range(10)], 10, id="single"),
        pytest.param([range(10), range(10)], 10, id="identical"),
        pytest.param([range(0, 100), range(50, 150)], 150, id="overlapping-small"),
        pytest.param([range(0, 100), range(100, 200)], 200, id="disjoint-small"),
        pytest.param([range(0, 3), range(1, 4), range(2, 5)], 5, id="three-overlapping"),
        pytest.param([range(0, 20_000), range(10_000, 30_000)], 30_000, id="overlapping-large"),
        pytest.param([range(0, 20_000), range(5)], 20_000, id="large-and-small"),
    ],
)
def test_union(ranges: list[range], distinct: int) -> None:
    union = UniqueUnion()
    for values in ranges:
        union.merge(counter(values))
    if distinct <= 500:
        assert union.estimate() == distinct
    else:
        assert abs(union.estimate() - distinct) <= 0.02 * distinct


def test_union_does_not_change_its_inputs() -> None:
    left, right = counter(range(10)), counter(range(5, 20))
    union = UniqueUnion()
    union.merge(left)
    union.merge(right)
    assert (left.estimate(), right.estimate(), union.estimate()) == (10, 15, 20)


@pytest.mark.parametrize("distinct", [0, 1, 100, 5_000], ids=lambda n: f"{n}-distinct")
def test_bytes_round_trip(distinct: int) -> None:
    original = counter(range(distinct))
    restored = UniqueCounter.from_bytes(original.to_bytes())
    assert restored.estimate() == original.estimate()
    again = UniqueCounter.from_bytes(restored.to_bytes())
    assert again.estimate() == original.estimate()
    restored.add("someone-else")
    if distinct:
        restored.add("user-0")  # already counted: no change
    if distinct <= 500:  # exact modes; in HLL mode one more value moves the estimate by ~1
        assert restored.estimate() == original.estimate() + 1
    else:
        assert abs(restored.estimate() - (distinct + 1)) <= 0.02 * distinct


def test_from_empty_bytes_is_an_empty_counter() -> None:
    empty = UniqueCounter.from_bytes(b"")
    assert empty.estimate() == 0
    empty.add("x")
    assert empty.estimate() == 1


def test_restored_counters_merge() -> None:
    left = UniqueCounter.from_bytes(counter(range(0, 60)).to_bytes())
    right = UniqueCounter.from_bytes(counter(range(40, 100)).to_bytes())
    union = UniqueUnion()
    union.merge(left)
    union.merge(right)
    assert union.estimate() == 100
