"""A counter of +1/-1 deltas, guarded by source watermarks (segment sizes, profile counts)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from dmp_faust.domain.watermarks import Watermarks

_SIZE: Final = struct.Struct("<q")


@dataclass
class GuardedCounter:
    value: int = 0
    applied: Watermarks = field(default_factory=Watermarks)

    def apply_once(self, source: tuple[int, int], delta: int) -> bool:
        if self.applied.covers(*source):
            return False
        self.value += delta
        self.applied.advance(*source)
        return True

    def apply_offsets(self, source: int, deltas: Mapping[int, int]) -> None:
        """Apply the deltas of one source's records (offset -> delta), in offset order,
        each at most once: a replay of a longer run of records adds only the new ones."""
        for offset, delta in sorted(deltas.items()):
            self.apply_once((source, offset), delta)

    def to_bytes(self) -> bytes:
        return _SIZE.pack(self.value) + self.applied.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> GuardedCounter:
        if not data:
            return cls()
        (value,) = _SIZE.unpack_from(data)
        applied, _ = Watermarks.read(data, _SIZE.size)
        return cls(value, applied)

    @classmethod
    def from_stored(cls, data: bytes | None) -> GuardedCounter:
        """Like :meth:`from_bytes`, and also reads a plain count in ASCII digits, as
        ``profile_counts`` held before it was guarded, as that count, unguarded.

        A guarded counter never looks like one: its first 8 bytes, the value in
        little-endian, would all be digits only for values above 3.4e18.
        """
        if data and data.isdigit():
            return cls(int(data))
        return cls.from_bytes(data)
