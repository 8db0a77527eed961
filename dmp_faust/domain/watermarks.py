"""Offset watermarks: what makes a fold idempotent under at-least-once replay.

After a crash a stage re-reads its input from the last committed offset, and
the stage before it may re-send what it had sent. Every record sent
downstream carries its *source* coordinates (partition and offset of the
record it was made from, see :func:`encode_source`). A state value keeps,
per source partition, the highest source offset folded into it; a record at
or below that mark was folded already and is skipped.

This is exact because one source partition is processed in offset order and
its records for one key all go to one destination partition, in order: when
a key has seen source offset ``n`` it has seen every earlier record of that
source partition meant for it. The watermarks are stored inside the value
they guard, so state and marks change in one atomic write.
"""

from __future__ import annotations

import struct
from typing import Final

_COUNT: Final = struct.Struct("<H")
_MARK: Final = struct.Struct("<Hq")
SOURCE_HEADER: Final = "dmp-src"


class Watermarks:
    __slots__ = ("offsets",)

    def __init__(self, offsets: dict[int, int] | None = None) -> None:
        self.offsets: dict[int, int] = offsets if offsets is not None else {}

    def covers(self, partition: int, offset: int) -> bool:
        """Whether the record at (partition, offset) was folded in already."""
        return offset <= self.offsets.get(partition, -1)

    def advance(self, partition: int, offset: int) -> None:
        if offset > self.offsets.get(partition, -1):
            self.offsets[partition] = offset

    def to_bytes(self) -> bytes:
        marks = b"".join(_MARK.pack(p, o) for p, o in sorted(self.offsets.items()))
        return _COUNT.pack(len(self.offsets)) + marks

    @classmethod
    def read(cls, data: bytes, pos: int = 0) -> tuple[Watermarks, int]:
        """Decode from ``data[pos:]``; returns the marks and the position after them."""
        (count,) = _COUNT.unpack_from(data, pos)
        pos += _COUNT.size
        offsets = {}
        for _ in range(count):
            partition, offset = _MARK.unpack_from(data, pos)
            offsets[partition] = offset
            pos += _MARK.size
        return cls(offsets), pos

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Watermarks) and other.offsets == self.offsets

    def __repr__(self) -> str:
        return f"Watermarks({self.offsets})"


MAX_PARTITIONS: Final = 1024


def source_id(stream: int, partition: int) -> int:
    """One number for (input stream, partition), so that marks of several inputs coexist."""
    return stream * MAX_PARTITIONS + partition


def encode_source(partition: int, offset: int) -> bytes:
    return f"{partition}:{offset}".encode()


def decode_source(raw: bytes) -> tuple[int, int]:
    partition, _, offset = raw.partition(b":")
    return int(partition), int(offset)
