"""``POST /collect`` bodies: one event, or ``{"batch": [event, ...]}``.

Each element is validated on its own (partial acceptance): the valid ones
go on to the raw topic, each invalid one becomes an error naming its index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from dmp_faust.domain.events import (
    FUTURE_TOLERANCE_MS,
    MALFORMED_JSON,
    TOO_LARGE,
    Event,
    Rejection,
    validate_object,
)

_decoder = msgspec.json.Decoder()


class BodyTooLarge(ValueError):
    """The request is refused whole with 413."""


@dataclass
class Collected:
    accepted: list[tuple[Event, bytes]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def received(self) -> int:
        return len(self.accepted) + len(self.errors)

    def refuse(self, index: int, rejection: Rejection) -> None:
        self.errors.append({"index": index, "reason": rejection.reason, "detail": rejection.detail})


def parse_body(
    body: bytes,
    now_ms: int,
    max_event_bytes: int,
    max_batch: int,
    tolerance_ms: int = FUTURE_TOLERANCE_MS,
) -> Collected:
    """Split a request body into accepted ``(event, raw bytes)`` pairs and errors.

    Raises :class:`BodyTooLarge` for a single event over ``max_event_bytes``
    or a batch of more than ``max_batch`` events.
    """
    result = Collected()
    try:
        decoded = _decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
        result.refuse(0, Rejection(MALFORMED_JSON, str(exc)[:200]))
        return result
    if isinstance(decoded, dict) and "batch" in decoded:
        batch = decoded["batch"]
        if not isinstance(batch, list):
            result.refuse(0, Rejection("bad_type", "batch must be an array of events"))
            return result
        if len(batch) > max_batch:
            raise BodyTooLarge(f"a batch holds at most {max_batch} events, got {len(batch)}")
        for index, item in enumerate(batch):
            raw = msgspec.json.encode(item)
            _collect_one(result, index, item, raw, now_ms, max_event_bytes, tolerance_ms)
        return result
    if len(body) > max_event_bytes:
        raise BodyTooLarge(f"an event is at most {max_event_bytes} bytes, got {len(body)}")
    _collect_one(result, 0, decoded, body, now_ms, max_event_bytes, tolerance_ms)
    return result


def _collect_one(
    result: Collected,
    index: int,
    item: object,
    raw: bytes,
    now_ms: int,
    max_bytes: int,
    tolerance_ms: int,
) -> None:
    if len(raw) > max_bytes:
        result.refuse(index, Rejection(TOO_LARGE, f"{len(raw)} bytes, the limit is {max_bytes}"))
        return
    checked = validate_object(item, now_ms, tolerance_ms)
    if isinstance(checked, Rejection):
        result.refuse(index, checked)
    else:
        result.accepted.append((checked, raw))
