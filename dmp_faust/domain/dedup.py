"""De-duplication by event_id over a horizon of stream time.

The table remembers, for each event_id, the stream time at which it was
first seen and the offset of that first record. A later record with the
same id is a duplicate while the first sighting is within the horizon;
once it has fallen out, the entry is expired (swept away) and a copy would
count as new.

The same record read again after a crash (at or below the remembered
offset, since event_ids are partitioned so one id lives in one partition)
is a *replay*, not a duplicate: it is processed again, because what it sent
downstream before the crash may not have reached Kafka. Downstream folds
skip what they have already applied (:mod:`dmp_faust.domain.watermarks`).
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class Verdict(Enum):
    NEW = "new"
    REPLAY = "replay"
    DUPLICATE = "duplicate"


class Seen(NamedTuple):
    first_seen: int  # stream time, epoch ms
    offset: int  # of the first record with this event_id

    def to_bytes(self) -> bytes:
        return f"{self.first_seen}:{self.offset}".encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Seen | None:
        if not raw:
            return None
        first_seen, _, offset = raw.partition(b":")
        return cls(int(first_seen), int(offset or -1))


def classify(seen: Seen | None, offset: int, stream_time: int, horizon_ms: int) -> Verdict:
    if seen is None or is_forgotten(seen.first_seen, stream_time, horizon_ms):
        return Verdict.NEW
    return Verdict.REPLAY if offset <= seen.offset else Verdict.DUPLICATE


def is_forgotten(first_seen: int, stream_time: int, horizon_ms: int) -> bool:
    return first_seen < stream_time - horizon_ms
