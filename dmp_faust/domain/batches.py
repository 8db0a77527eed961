"""Micro-batches: how the internal topics carry many events in one record.

Faust spends tens of microseconds on every record it reads or sends, far
more than validating or folding an event costs. So the internal topics
(``events.valid``, ``events.by_campaign``, ``profiles.in``,
``segments.deltas``) carry one record per destination partition per batch,
sent to that partition explicitly, holding a list of items. A stage then
handles a whole record inside one Faust event, which is also the event whose
partition Faust writes table changelogs to: every item of a record belongs
to that partition.

Each item has a *position* within its source: ``offset << 16 | index``, the
offset of the record it was made from and its index there. Positions order
items exactly as they were processed, so they serve as watermarks
(:mod:`dmp_faust.domain.watermarks`) at item granularity.

A batch is split into several records (:func:`encode_within`) so that none
is over a size limit below Kafka's (1 MiB by default) nor holds more items
than an index can number. One item is never split: what the items carry is
bounded (an event by the 64 KiB input limit, a merge fragment by the profile
limits of :mod:`dmp_faust.domain.profiles`), so an item over the limit is a
bug, refused with :class:`ItemTooLarge` before Kafka would refuse it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import msgspec

from dmp_faust.domain.events import Event
from dmp_faust.domain.identity import Command

INDEX_BITS: Final = 16
MAX_ITEMS: Final = 1 << INDEX_BITS
# A batch record is split when its encoding is larger: half the broker's default limit
# (1 MiB), and twice the largest item (a merge fragment: at most MAX_PROFILE_BYTES).
RECORD_MAX_BYTES: Final = 512 * 1024


def position(offset: int, index: int) -> int:
    """The position of item ``index`` of the record at ``offset``.

    An index past :data:`MAX_ITEMS` would spill into the offset bits and name an
    item of the next record, which the watermarks would then skip: refused.
    """
    if not 0 <= index < MAX_ITEMS:
        raise ValueError(f"item index {index} outside 0..{MAX_ITEMS - 1}: the record is too long")
    return (offset << INDEX_BITS) | index


class CampaignItem(msgspec.Struct, array_like=True, frozen=True):
    position: int  # in the events.valid record it came from
    campaign_id: str
    type: str
    ts: int
    profile_id: str
    revenue: float | None


class CommandItem(msgspec.Struct, array_like=True):
    key: str
    position: int  # in the record it came from (see the record's dmp-src header)
    command: Command


class DeltaItem(msgspec.Struct, array_like=True, frozen=True):
    segment: str
    position: int
    delta: int


_valid = msgspec.msgpack.Decoder(list[Event])
_campaign = msgspec.msgpack.Decoder(list[CampaignItem])
_commands = msgspec.msgpack.Decoder(list[CommandItem])
_deltas = msgspec.msgpack.Decoder(list[DeltaItem])
_encoder = msgspec.msgpack.Encoder()


def encode_batch(
    items: list[Event] | list[CampaignItem] | list[CommandItem] | list[DeltaItem],
) -> bytes:
    return _encoder.encode(items)


class ItemTooLarge(ValueError):
    """One batch item encodes to more than a record may hold."""


def encode_within(
    items: Sequence[Any], max_bytes: int, max_items: int = MAX_ITEMS
) -> Iterator[bytes]:
    """``items`` as batch records of at most ``max_bytes`` and ``max_items`` each, in order.

    Halves until each part fits: one encoding when the batch fits, as it mostly does.
    No items, no record.
    """
    if not items:
        return
    if len(items) > max_items:
        half = len(items) // 2
        yield from encode_within(items[:half], max_bytes, max_items)
        yield from encode_within(items[half:], max_bytes, max_items)
        return
    encoded = _encoder.encode(items)
    if len(encoded) <= max_bytes:
        yield encoded
        return
    if len(items) == 1:
        raise ItemTooLarge(f"a batch item of {len(encoded)} bytes, the limit is {max_bytes}")
    half = len(items) // 2
    yield from encode_within(items[:half], max_bytes, max_items)
    yield from encode_within(items[half:], max_bytes, max_items)


def batch_length(raw: bytes) -> int:
    """How many items the batch record ``raw`` holds, read from its msgpack array
    header alone (a take counts its items before decoding them)."""
    first = raw[0] if raw else 0
    if 0x90 <= first <= 0x9F:  # fixarray
        return first & 0x0F
    if first == 0xDC:  # array 16
        return int.from_bytes(raw[1:3], "big")
    if first == 0xDD:  # array 32
        return int.from_bytes(raw[1:5], "big")
    raise ValueError(f"not a batch record (first byte {first:#04x})")


def decode_valid(raw: bytes) -> list[Event]:
    return _valid.decode(raw)


def decode_campaign(raw: bytes) -> list[CampaignItem]:
    return _campaign.decode(raw)


def decode_commands(raw: bytes) -> list[CommandItem]:
    return _commands.decode(raw)


def decode_deltas(raw: bytes) -> list[DeltaItem]:
    return _deltas.decode(raw)
