"""Event-time tumbling windows and the campaign statistics folded into them.

Time is integer epoch milliseconds. A window of size ``window_ms`` is the
half-open interval ``[start, start + window_ms)`` with ``start`` a multiple of
``window_ms`` (aligned to the epoch), so every instant is in exactly one window.

Retention is measured in *stream time*, the highest event time a partition
has seen, never the wall clock: replaying last year's topic builds the same
tables as the live run did. With stream time ``t`` and retention ``R``:

* an event with ``ts < t - R`` is too old, and refused;
* a window whose ``end <= t - R`` is expired: not served, and swept away.

Every event that is not too old lands in a window that is not expired, since
``end > ts >= t - R``; late events within the retention update their window.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from dmp_faust.domain.sketch import UniqueCounter, UniqueUnion
from dmp_faust.domain.timefmt import MIN_MS
from dmp_faust.domain.watermarks import Watermarks


def window_start(ts_ms: int, window_ms: int) -> int:
    """Start of the window that holds ``ts_ms`` (floor, also for negative times)."""
    return ts_ms - ts_ms % window_ms


def window_starts(from_ms: int, to_ms: int, window_ms: int) -> range:
    """Starts of the whole windows covering ``[from_ms, to_ms)``, widened to window edges."""
    first = window_start(from_ms, window_ms)
    last = window_start(to_ms - 1, window_ms) if to_ms > from_ms else first - window_ms
    return range(first, last + 1, window_ms)


def advance_stream_time(stream_time: int | None, ts_ms: int) -> int:
    return ts_ms if stream_time is None or ts_ms > stream_time else stream_time


def is_too_old(ts_ms: int, stream_time: int, retention_ms: int) -> bool:
    return ts_ms < stream_time - retention_ms


def is_window_expired(start: int, window_ms: int, stream_time: int, retention_ms: int) -> bool:
    return start + window_ms <= stream_time - retention_ms


IMPRESSION: Final = "impression"
CLICK: Final = "click"
CONVERSION: Final = "conversion"
_HEADER: Final = struct.Struct("<qqqd")


@dataclass
class WindowStats:
    """Campaign counts of one window: a fold over the campaign's events in it.

    ``apply`` is the fold step and ``apply_once`` the same step guarded by
    source watermarks (:mod:`dmp_faust.domain.watermarks`), so a replayed
    record is not counted twice. ``to_bytes``/``from_bytes`` are the table
    format: a fixed header, the watermarks, then the unique-user sketch.
    """

    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: float = 0.0
    users: UniqueCounter = field(default_factory=UniqueCounter)
    applied: Watermarks = field(default_factory=Watermarks)

    def apply_once(
        self, source: tuple[int, int], event_type: str, profile_id: str, revenue: float | None
    ) -> bool:
        """Fold the event unless its source record was folded already; True if it was new."""
        if self.applied.covers(*source):
            return False
        self.apply(event_type, profile_id, revenue)
        self.applied.advance(*source)
        return True

    def apply(self, event_type: str, profile_id: str, revenue: float | None) -> WindowStats:
        if event_type == IMPRESSION:
            self.impressions += 1
        elif event_type == CLICK:
            self.clicks += 1
        elif event_type == CONVERSION:
            self.conversions += 1
            self.revenue += revenue or 0.0
        else:
            return self
        self.users.add(profile_id)
        return self

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(self.impressions, self.clicks, self.conversions, self.revenue)
        return header + self.applied.to_bytes() + self.users.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> WindowStats:
        if not data:
            return cls()
        impressions, clicks, conversions, revenue = _HEADER.unpack_from(data)
        applied, end = Watermarks.read(data, _HEADER.size)
        users = UniqueCounter.from_bytes(data[end:])
        return cls(impressions, clicks, conversions, revenue, users, applied)


def ctr(clicks: int, impressions: int) -> float:
    """Click-through rate; 0.0 when there were no impressions."""
    return clicks / impressions if impressions else 0.0


@dataclass(frozen=True)
class WindowRow:
    start: int
    end: int
    impressions: int
    clicks: int
    conversions: int
    revenue: float
    ctr: float
    unique_users: int


@dataclass(frozen=True)
class RangeSummary:
    totals: WindowRow
    windows: list[WindowRow]


def summarise(
    stats: Iterable[tuple[int, WindowStats | None]], window_ms: int, from_ms: int, to_ms: int
) -> RangeSummary:
    """Sum whole windows and merge their sketches into one row for the range.

    ``stats`` yields ``(start, stats or None)`` for every window of the range in
    order; missing windows count as zeros.
    """
    union = UniqueUnion()
    rows: list[WindowRow] = []
    for start, window in stats:
        window = window or WindowStats()
        union.merge(window.users)
        rows.append(_row(start, start + window_ms, window, window.users.estimate()))
    total = WindowStats(
        impressions=sum(r.impressions for r in rows),
        clicks=sum(r.clicks for r in rows),
        conversions=sum(r.conversions for r in rows),
        revenue=sum(r.revenue for r in rows),
    )
    return RangeSummary(_row(from_ms, to_ms, total, union.estimate()), rows)


def _row(start: int, end: int, stats: WindowStats, unique_users: int) -> WindowRow:
    return WindowRow(
        start=start,
        end=end,
        impressions=stats.impressions,
        clicks=stats.clicks,
        conversions=stats.conversions,
        revenue=round(stats.revenue, 6),
        ctr=round(ctr(stats.clicks, stats.impressions), 6),
        unique_users=unique_users,
    )


def window_key(campaign_id: str, start: int) -> str:
    """Table key of one campaign window; sorts by campaign, then time.

    The start is written as its distance from the earliest representable
    time, so it is never negative and zero-padded digits sort numerically.
    """
    return f"{campaign_id}\x1f{start - MIN_MS:016d}"


def parse_window_key(key: str) -> tuple[str, int]:
    campaign_id, _, start = key.rpartition("\x1f")
    return campaign_id, int(start) + MIN_MS
