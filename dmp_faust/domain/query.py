"""Parameters of the read routes, parsed and checked before any table is read."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dmp_faust.domain.timefmt import MAX_MS, MIN_MS, TimestampError, parse_timestamp
from dmp_faust.domain.windows import window_start

_EPOCH_MS = re.compile(r"-?[0-9]{1,16}")


class BadParameter(ValueError):
    """A query parameter the route cannot answer; the HTTP edge makes it a 400."""


def parse_time_param(name: str, text: str) -> int:
    """``from``/``to``: RFC 3339, or epoch milliseconds written as digits."""
    text = text.strip()
    try:
        if _EPOCH_MS.fullmatch(text):
            return parse_timestamp(int(text))
        return parse_timestamp(text)
    except TimestampError as exc:
        raise BadParameter(f"{name}: {exc}") from None


@dataclass(frozen=True)
class TimeRange:
    from_ms: int
    to_ms: int


def resolve_range(
    from_text: str | None,
    to_text: str | None,
    stream_time: int,
    window_ms: int,
    default_ms: int,
    max_ms: int,
) -> TimeRange:
    """The whole windows that answer ``?from=&to=``.

    Missing bounds default to the ``default_ms`` ending with the window that
    holds ``stream_time``. ``from`` is widened down and ``to`` up to window
    edges, so the range is always whole windows and ``to`` stays exclusive.
    """
    from_ms = parse_time_param("from", from_text) if from_text else None
    if to_text:
        to_ms = parse_time_param("to", to_text)
    elif from_ms is not None:
        to_ms = window_start(from_ms, window_ms) + default_ms
    else:
        to_ms = window_start(stream_time, window_ms) + window_ms
    if from_ms is None:
        from_ms = to_ms - default_ms
    if to_ms <= from_ms:
        raise BadParameter(f"to must be after from ({to_ms} <= {from_ms})")
    from_ms = window_start(from_ms, window_ms)
    to_ms = -window_start(-to_ms, window_ms)
    if to_ms - from_ms > max_ms:
        raise BadParameter(f"range is longer than {max_ms // window_ms} windows")
    if from_ms < MIN_MS or to_ms > MAX_MS:
        # Widened to window edges, a range can end in year 10000 or start in year 0,
        # which no RFC 3339 date-time can write.
        raise BadParameter("the range must lie within years 0001 to 9999")
    return TimeRange(from_ms, to_ms)
