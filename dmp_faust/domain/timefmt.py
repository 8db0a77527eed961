"""Event timestamps: RFC 3339 strings or epoch milliseconds, to integer ms.

Everything downstream of parsing works in integer milliseconds since the Unix
epoch (UTC); strings appear again only at the HTTP edge.
"""

from __future__ import annotations

from datetime import datetime, timezone

# 0001-01-01 .. 9999-12-31: what datetime can represent; outside it is a bad timestamp.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999


class TimestampError(ValueError):
    pass


def parse_timestamp(value: object) -> int:
    """Return ``value`` as epoch milliseconds, or raise :class:`TimestampError`.

    Integers are epoch milliseconds. Strings are RFC 3339 date-times with an
    explicit offset (``Z`` or ``±hh:mm``); a string without one is ambiguous
    and refused. Booleans and floats are refused: ``true`` is not a time, and
    a float has lost precision before it got here.
    """
    if isinstance(value, bool):
        raise TimestampError("boolean is not a timestamp")
    if isinstance(value, int):
        if not MIN_MS <= value <= MAX_MS:
            raise TimestampError(f"epoch milliseconds {value} out of range")
        return value
    if isinstance(value, str):
        return _parse_rfc3339(value)
    raise TimestampError(f"expected an RFC 3339 string or epoch milliseconds, got {json_kind(value)}")


def _parse_rfc3339(text: str) -> int:
    if len(text) > 64 or len(text) < 20 or text[10] not in "Tt ":
        raise TimestampError(f"not an RFC 3339 date-time: {text[:64]!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise TimestampError(f"not an RFC 3339 date-time: {text!r}") from None
    if parsed.tzinfo is None:
        raise TimestampError(f"RFC 3339 needs an offset (Z or +hh:mm): {text!r}")
    delta = parsed - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_timestamp(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 in UTC: ``2021-03-01T12:00:00Z`` (ms when not zero)."""
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def json_kind(value: object) -> str:
    return {dict: "object", list: "array", float: "number", type(None): "null"}.get(
        type(value), type(value).__name__
    )
