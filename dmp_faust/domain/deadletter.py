"""The dead-letter record: a refused event, its reason and where it came from.

``raw`` is the original bytes, base64-encoded, so nothing is lost and the
record can be replayed once the cause is fixed. It holds personal data
exactly as the producer sent it (whole IP addresses included): access to
the dead-letter topic must be restricted like access to the raw topic.
"""

from __future__ import annotations

import base64

import msgspec

from dmp_faust.domain.events import Rejection
from dmp_faust.domain.timefmt import format_timestamp


class Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class DeadLetter(msgspec.Struct):
    reason: str
    detail: str
    raw: str
    source: Source
    received_at: str


def dead_letter(rejection: Rejection, raw: bytes, source: Source, now_ms: int) -> bytes:
    return msgspec.json.encode(
        DeadLetter(
            reason=rejection.reason,
            detail=rejection.detail,
            raw=base64.b64encode(raw).decode("ascii"),
            source=source,
            received_at=format_timestamp(now_ms),
        )
    )
