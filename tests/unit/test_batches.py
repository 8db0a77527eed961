"""Batch records: positions index at most MAX_ITEMS items, and the writer splits to stay within."""

from __future__ import annotations

import pytest

from dmp_faust.domain.batches import (
    MAX_ITEMS,
    DeltaItem,
    batch_length,
    decode_deltas,
    encode_batch,
    encode_within,
    position,
)


def test_positions_of_one_record_never_reach_into_the_next() -> None:
    assert position(7, MAX_ITEMS - 1) < position(8, 0)
    for index in (MAX_ITEMS, MAX_ITEMS + 1, -1):
        with pytest.raises(ValueError, match="item index"):
            position(7, index)


@pytest.mark.parametrize(
    ("count", "max_bytes", "records"),
    [
        pytest.param(MAX_ITEMS + 1, 1 << 30, 2, id="one-past-the-index-limit"),
        pytest.param(3 * MAX_ITEMS - 5, 1 << 30, 3, id="three-records"),
        pytest.param(10, 1 << 30, 1, id="small"),
        pytest.param(1000, 2000, None, id="split-by-bytes"),
    ],
)
def test_the_writer_splits_by_items_and_bytes_keeping_the_order(
    count: int, max_bytes: int, records: int | None
) -> None:
    items = [DeltaItem("s", i, 1) for i in range(count)]
    encoded = list(encode_within(items, max_bytes))
    if records is not None:
        assert len(encoded) == records
    decoded = [decode_deltas(raw) for raw in encoded]
    assert all(len(record) <= MAX_ITEMS for record in decoded)
    assert all(len(raw) <= max_bytes for raw in encoded)
    assert [item for record in decoded for item in record] == items


def test_an_item_larger_than_the_byte_limit_goes_alone() -> None:
    items = [DeltaItem("x" * 100, 1, 1), DeltaItem("y", 2, 1)]
    assert [decode_deltas(raw) for raw in encode_within(items, 50)] == [[items[0]], [items[1]]]


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65_535, 65_536, 70_000])
def test_batch_length_reads_the_item_count_from_the_header(count: int) -> None:
    items = [DeltaItem("s", 1, 1)] * count
    assert batch_length(encode_batch(items)) == count


@pytest.mark.parametrize("raw", [b"", b"\x01", b'{"a": 1}'])
def test_batch_length_refuses_what_is_not_a_batch(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a batch record"):
        batch_length(raw)
