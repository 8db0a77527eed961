"""The event: its schema, and the validator that gives every refusal a reason.

``validate_bytes`` (raw topic) and ``validate_object`` (one element of an HTTP
batch) return either an :class:`Event` or a :class:`Rejection`. They never
raise on input, whatever the bytes are: bad input must be accounted for, not
crash a worker.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from dmp_faust.domain.privacy import truncate_ip
from dmp_faust.domain.timefmt import TimestampError, json_kind, parse_timestamp

EVENT_TYPES: Final = frozenset({"page_view", "impression", "click", "conversion", "identify"})
CAMPAIGN_TYPES: Final = frozenset({"impression", "click", "conversion"})
MAX_ID_CHARS: Final = 128
# Free text that reaches a parser (urlsplit and parse_qsl, ua-parser's regexes and
# crawler detection, both memoised by user agent) is capped, so a hostile event costs
# no more to parse, or to cache, than a real one. No browser sends a longer URL than a
# server takes in a request line (8 KiB is the common limit), nor a user agent over 1 KiB.
MAX_TEXT_CHARS: Final = {"url": 8192, "referrer": 8192, "user_agent": 1024}
FUTURE_TOLERANCE_MS: Final = 5 * 60_000

# Reasons an event is refused; the label values of dmp_events_invalid_total.
MALFORMED_JSON: Final = "malformed_json"
NOT_AN_OBJECT: Final = "not_an_object"
TOO_LARGE: Final = "too_large"
MISSING_FIELD: Final = "missing_field"
BAD_TYPE: Final = "bad_type"
UNKNOWN_TYPE: Final = "unknown_type"
BAD_TIMESTAMP: Final = "bad_timestamp"
FUTURE_TIMESTAMP: Final = "future_timestamp"
TOO_OLD: Final = "too_old"
FIELD_TOO_LONG: Final = "field_too_long"
REASONS: Final = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    TOO_LARGE,
    MISSING_FIELD,
    BAD_TYPE,
    UNKNOWN_TYPE,
    BAD_TIMESTAMP,
    FUTURE_TIMESTAMP,
    TOO_OLD,
    FIELD_TOO_LONG,
)


class Event(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A validated event. ``ts`` is its event time in epoch milliseconds; ``ip`` is
    already truncated (see :func:`truncate_ip`), so no topic after the raw one
    holds a whole address."""

    event_id: str
    type: str
    ts: int
    anonymous_id: str | None = None
    user_id: str | None = None
    campaign_id: str | None = None
    ad_id: str | None = None
    url: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    revenue: float | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None

    @property
    def profile_id(self) -> str:
        """The id the event's profile is known by: user_id once known, else anonymous_id."""
        return self.user_id or self.anonymous_id or ""


class Rejection(msgspec.Struct, frozen=True):
    reason: str
    detail: str


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.rejection = Rejection(reason, detail)


_ID_FIELDS: Final = ("event_id", "anonymous_id", "user_id", "campaign_id")
_TEXT_FIELDS: Final = ("ad_id", "url", "referrer", "user_agent", "ip")
_OBJECT_FIELDS: Final = ("properties", "traits")
_decoder: Final = msgspec.json.Decoder()
_carrier: Final = msgspec.msgpack.Encoder()  # what events.valid batches are encoded with


def validate_bytes(
    raw: bytes, now_ms: int, max_bytes: int = 64 * 1024, tolerance_ms: int = FUTURE_TOLERANCE_MS
) -> Event | Rejection:
    """Decode and validate one raw event.

    ``now_ms`` is the wall clock: an event more than ``tolerance_ms`` ahead of
    it is a future_timestamp (clock skew of a few minutes is tolerated).
    """
    if len(raw) > max_bytes:
        return Rejection(TOO_LARGE, f"{len(raw)} bytes, the limit is {max_bytes}")
    try:
        obj = _decoder.decode(raw)
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
        return Rejection(MALFORMED_JSON, str(exc)[:200])
    return validate_object(obj, now_ms, tolerance_ms)


def validate_object(
    obj: object, now_ms: int, tolerance_ms: int = FUTURE_TOLERANCE_MS
) -> Event | Rejection:
    """Validate an already decoded JSON value."""
    if not isinstance(obj, dict):
        return Rejection(NOT_AN_OBJECT, f"expected a JSON object, got {json_kind(obj)}")
    try:
        return _build(obj, now_ms, tolerance_ms)
    except _Invalid as invalid:
        return invalid.rejection


def _build(obj: dict[str, Any], now_ms: int, tolerance_ms: int) -> Event:
    for name in ("event_id", "type", "timestamp"):
        if obj.get(name) is None:
            raise _Invalid(MISSING_FIELD, f"{name} is required")
    fields: dict[str, Any] = {name: _text(obj, name, MAX_ID_CHARS) for name in _ID_FIELDS}
    fields.update((name, _free_text(obj, name)) for name in _TEXT_FIELDS)
    fields.update((name, _object(obj, name)) for name in _OBJECT_FIELDS)

    kind = _text(obj, "type")
    if kind not in EVENT_TYPES:
        raise _Invalid(UNKNOWN_TYPE, f"type {str(kind)[:64]!r} is not one of {sorted(EVENT_TYPES)}")
    if not fields["event_id"]:
        raise _Invalid(MISSING_FIELD, "event_id must not be empty")
    if not (fields["anonymous_id"] or fields["user_id"]):
        raise _Invalid(MISSING_FIELD, "one of anonymous_id or user_id is required")
    if kind in CAMPAIGN_TYPES and not fields["campaign_id"]:
        raise _Invalid(MISSING_FIELD, f"campaign_id is required for {kind}")
    fields["revenue"] = _revenue(obj.get("revenue"))
    fields["ip"] = truncate_ip(fields["ip"])

    try:
        ts = parse_timestamp(obj["timestamp"])
    except TimestampError as exc:
        raise _Invalid(BAD_TIMESTAMP, str(exc)) from None
    if ts > now_ms + tolerance_ms:
        raise _Invalid(FUTURE_TIMESTAMP, f"{ts - now_ms} ms ahead of the clock")
    return Event(type=kind, ts=ts, **fields)


def _text(obj: dict[str, Any], name: str, max_chars: int | None = None) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(BAD_TYPE, f"{name} must be a string, got {json_kind(value)}")
    if max_chars is not None and len(value) > max_chars:
        raise _Invalid(BAD_TYPE, f"{name} is longer than {max_chars} characters")
    return value


def _free_text(obj: dict[str, Any], name: str) -> Any:
    value = _text(obj, name)
    limit = MAX_TEXT_CHARS.get(name)
    if limit is not None and value is not None and len(value) > limit:
        raise _Invalid(FIELD_TOO_LONG, f"{name} is {len(value)} characters, the limit is {limit}")
    return value


def _object(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid(BAD_TYPE, f"{name} must be an object, got {json_kind(value)}")
    try:
        _carrier.encode(value)
    except OverflowError:
        # JSON numbers have no size limit; the events.valid micro-batches (msgpack)
        # carry integers of 64 bits. Accepting one that does not fit would fail the
        # batch downstream, so it is refused here, with its reason.
        raise _Invalid(BAD_TYPE, f"{name} holds an integer outside the 64-bit range") from None
    return value


def _revenue(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(BAD_TYPE, f"revenue must be a number, got {json_kind(value)}")
    if not 0 <= value <= 1e15:
        raise _Invalid(BAD_TYPE, f"revenue must be between 0 and 1e15, got {value}")
    return float(value)


def encode(event: msgspec.Struct) -> bytes:
    return msgspec.json.encode(event)
