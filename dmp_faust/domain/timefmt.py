"""Event timestamps: RFC 3339 strings or epoch milliseconds, to integer ms.

Everything downstream of parsing works in integer milliseconds since the Unix
epoch (UTC); strings appear again only at the HTTP edge.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# 0001-01-01 .. 9999-12-31: what datetime can represent; outside it is a bad timestamp.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999


_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
_RFC3339 = re.compile(_DATE_TIME + r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
_NAIVE = re.compile(_DATE_TIME)


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
    raise TimestampError(
        f"expected an RFC 3339 string or epoch milliseconds, got {json_kind(value)}"
    )


def _parse_rfc3339(text: str) -> int:
    if len(text) > 64 or not _RFC3339.fullmatch(text):
        if len(text) <= 64 and _NAIVE.fullmatch(text):
            raise TimestampError(f"RFC 3339 needs an offset (Z or +hh:mm): {text!r}")
        raise TimestampError(f"not an RFC 3339 date-time: {text[:64]!r}")
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise TimestampError(f"not an RFC 3339 date-time: {text!r}") from None
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if not MIN_MS <= ms <= MAX_MS:
        raise TimestampError(f"{text!r} is out of range")
    return ms


def format_timestamp(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 in UTC: ``2021-03-01T12:00:00Z`` (ms when not zero)."""
    seconds, millis = divmod(ms, 1000)
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


_JSON_KINDS = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
}


def json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, for error details."""
    return _JSON_KINDS.get(type(value), type(value).__name__)
