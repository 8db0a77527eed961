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
"""

from __future__ import annotations

from typing import Final

import msgspec

from dmp_faust.domain.events import Event
from dmp_faust.domain.identity import Command

INDEX_BITS: Final = 16
MAX_ITEMS: Final = 1 << INDEX_BITS


def position(offset: int, index: int) -> int:
    """The position of item ``index`` of the record at ``offset``."""
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


def decode_valid(raw: bytes) -> list[Event]:
    return _valid.decode(raw)


def decode_campaign(raw: bytes) -> list[CampaignItem]:
    return _campaign.decode(raw)


def decode_commands(raw: bytes) -> list[CommandItem]:
    return _commands.decode(raw)


def decode_deltas(raw: bytes) -> list[DeltaItem]:
    return _deltas.decode(raw)
