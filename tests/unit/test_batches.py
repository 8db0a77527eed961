"""Batch records on the internal topics: split below a size limit, never past an index.

Whatever is gathered for one partition in one take (many events, or a few
large merge fragments of bounded profiles), every record the stage sends is
at most ``RECORD_MAX_BYTES`` (half Kafka's default limit) and holds at most
``MAX_ITEMS`` items, and the records decode to the same items in order.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.batches import (
    MAX_ITEMS,
    RECORD_MAX_BYTES,
    CampaignItem,
    CommandItem,
    DeltaItem,
    ItemTooLarge,
    batch_length,
    decode_campaign,
    decode_commands,
    decode_valid,
    encode_batch,
    encode_within,
    position,
)
from dmp_faust.domain.events import Event
from dmp_faust.domain.identity import FoldEvent, MergeFragment
from dmp_faust.domain.profiles import MAX_PROFILE_BYTES, Profile, ProfileEvent
from tests.unit.test_profile_bounds import worst_fragment

KAFKA_MAX_MESSAGE_BYTES = 1024 * 1024
T0 = 1_700_000_000_000


def test_the_record_limit_is_below_kafkas_and_above_the_largest_item() -> None:
    assert MAX_PROFILE_BYTES < RECORD_MAX_BYTES <= KAFKA_MAX_MESSAGE_BYTES // 2


def test_events_of_a_large_take_are_split_below_the_limit() -> None:
    # Events as large as the input limit lets them be: 1,000 of them make about 60 MiB.
    events = [
        Event(event_id=f"e{n}", type="page_view", ts=T0, anonymous_id="a", referrer="r" * 60_000)
        for n in range(1_000)
    ]
    records = list(encode_within(events, RECORD_MAX_BYTES))
    assert len(records) > 100
    assert max(map(len, records)) <= RECORD_MAX_BYTES
    assert [e for r in records for e in decode_valid(r)] == events


def test_merge_fragments_of_bounded_profiles_are_split_below_the_limit() -> None:
    # Far-over-the-limits fragments, bounded as frozen_copy bounds them on the way out.
    items = [
        CommandItem(f"u{n}", n, MergeFragment(pf.frozen_copy(worst_fragment(n), f"u{n}")))
        for n in range(12)
    ]
    records = list(encode_within(items, RECORD_MAX_BYTES))
    assert max(map(len, records)) <= RECORD_MAX_BYTES
    assert [i for r in records for i in decode_commands(r)] == items


def test_no_record_holds_more_items_than_an_index_can_number() -> None:
    items = [CampaignItem(n, "c", "click", T0, "p", None) for n in range(MAX_ITEMS * 2 + 3)]
    records = list(encode_within(items, RECORD_MAX_BYTES))
    assert max(len(decode_campaign(r)) for r in records) <= MAX_ITEMS
    assert [i for r in records for i in decode_campaign(r)] == items


def test_one_item_over_the_limit_is_refused_not_sent() -> None:
    fragment = Profile(profile_id="u", ids=["x" * 100 for _ in range(10_000)])  # not bounded
    with pytest.raises(ItemTooLarge, match="limit is"):
        list(encode_within([CommandItem("u", 0, MergeFragment(fragment))], RECORD_MAX_BYTES))


sizes = st.lists(st.integers(0, 3_000), max_size=60)


@settings(max_examples=100, deadline=None)
@given(sizes, st.integers(4_000, 20_000), st.integers(1, 50))
def test_any_split_keeps_the_items_in_order_within_both_limits(
    lengths: list[int], max_bytes: int, max_items: int
) -> None:
    items = [
        CommandItem(
            "a",
            n,
            FoldEvent(ProfileEvent(event_id="x" * size, type="click", ts=T0), resolve=True),
        )
        for n, size in enumerate(lengths)
    ]
    records = list(encode_within(items, max_bytes, max_items))
    decoded = [decode_commands(r) for r in records]
    assert [i for part in decoded for i in part] == items
    assert all(
        len(r) <= max_bytes and 1 <= len(p) <= max_items
        for r, p in zip(records, decoded, strict=True)
    )


def test_positions_of_one_record_never_reach_into_the_next() -> None:
    assert position(7, MAX_ITEMS - 1) < position(8, 0)
    for index in (MAX_ITEMS, MAX_ITEMS + 1, -1):
        with pytest.raises(ValueError, match="item index"):
            position(7, index)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65_535, 65_536, 70_000])
def test_batch_length_reads_the_item_count_from_the_header(count: int) -> None:
    items = [DeltaItem("s", 1, 1)] * count
    assert batch_length(encode_batch(items)) == count


@pytest.mark.parametrize("raw", [b"", b"\x01", b'{"a": 1}'])
def test_batch_length_refuses_what_is_not_a_batch(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a batch record"):
        batch_length(raw)
