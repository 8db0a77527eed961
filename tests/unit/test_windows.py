"""Event-time windows, retention in stream time, the WindowStats fold, range summaries,
table keys; and the de-duplication horizon, which is measured the same way."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from dmp_faust.domain.dedup import Seen, Verdict, classify, is_forgotten
from dmp_faust.domain.sketch import UniqueCounter
from dmp_faust.domain.windows import (
    WindowRow,
    WindowStats,
    advance_stream_time,
    ctr,
    is_too_old,
    is_window_expired,
    parse_window_key,
    summarise,
    window_key,
    window_start,
    window_starts,
)

W = 60_000  # one minute
DAY = 86_400_000
T = 1_700_000_040_000  # a window start: 2023-11-14T22:14:00Z
assert T % W == 0


# --- window maths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "start"),
    [
        pytest.param(T, T, id="at-start"),
        pytest.param(T + 1, T, id="just-after-start"),
        pytest.param(T + W - 1, T, id="last-ms-of-window"),
        pytest.param(T + W, T + W, id="end-is-next-window"),
        pytest.param(0, 0, id="epoch"),
        pytest.param(W - 1, 0, id="epoch-last-ms"),
        pytest.param(-1, -W, id="minus-1-floors"),
        pytest.param(-W, -W, id="minus-window"),
        pytest.param(-W - 1, -2 * W, id="minus-window-minus-1"),
        pytest.param(-62_135_596_800_000, -62_135_596_800_000, id="year-1"),
    ],
)
def test_window_start(ts: int, start: int) -> None:
    assert window_start(ts, W) == start
    assert start <= ts < start + W, "[start, end) holds ts"
    assert start % W == 0, "aligned to the epoch"


@pytest.mark.parametrize(
    ("from_ms", "to_ms", "starts"),
    [
        pytest.param(T, T + W, [T], id="one-whole-window"),
        pytest.param(T, T + 3 * W, [T, T + W, T + 2 * W], id="three-whole-windows"),
        pytest.param(T + 1, T + W - 1, [T], id="inside-one-window"),
        pytest.param(T - 1, T + 1, [T - W, T], id="straddling-a-boundary"),
        pytest.param(T + 30_000, T + 2 * W + 1, [T, T + W, T + 2 * W], id="widened-both-ends"),
        pytest.param(T, T + W + 1, [T, T + W], id="end-exclusive-plus-1"),
        pytest.param(-2 * W, 0, [-2 * W, -W], id="negative"),
        pytest.param(-1, 1, [-W, 0], id="across-epoch"),
        pytest.param(T, T, [], id="empty"),
        pytest.param(T + W, T, [], id="reversed"),
    ],
)
def test_window_starts(from_ms: int, to_ms: int, starts: list[int]) -> None:
    assert list(window_starts(from_ms, to_ms, W)) == starts


@pytest.mark.parametrize(
    ("stream_time", "ts", "advanced"),
    [
        pytest.param(None, T, T, id="first-event"),
        pytest.param(None, -5, -5, id="first-event-negative"),
        pytest.param(T, T + 1, T + 1, id="forward"),
        pytest.param(T, T - 1, T, id="late-event-does-not-rewind"),
        pytest.param(T, T, T, id="equal"),
    ],
)
def test_advance_stream_time(stream_time: int | None, ts: int, advanced: int) -> None:
    assert advance_stream_time(stream_time, ts) == advanced


@pytest.mark.parametrize(
    ("ts", "too_old"),
    [
        pytest.param(T - DAY, False, id="exactly-retention"),
        pytest.param(T - DAY - 1, True, id="retention-plus-1ms"),
        pytest.param(T - DAY + 1, False, id="retention-minus-1ms"),
        pytest.param(T, False, id="at-stream-time"),
        pytest.param(T + W, False, id="ahead-of-stream-time"),
    ],
)
def test_is_too_old(ts: int, too_old: bool) -> None:
    assert is_too_old(ts, T, DAY) is too_old


@pytest.mark.parametrize(
    ("start", "expired"),
    [
        pytest.param(T - DAY - W, True, id="end-equals-horizon"),
        pytest.param(T - DAY - W - 1, True, id="end-before-horizon"),
        pytest.param(T - DAY - W + 1, False, id="end-just-after-horizon"),
        pytest.param(T - DAY, False, id="window-holding-horizon"),
        pytest.param(T, False, id="current-window"),
    ],
)
def test_is_window_expired(start: int, expired: bool) -> None:
    assert is_window_expired(start, W, T, DAY) is expired


def test_an_event_that_is_not_too_old_never_lands_in_an_expired_window() -> None:
    rng = random.Random(42)
    retention_options = [W, 2 * W, DAY, DAY + 1, 7 * DAY + 12_345]
    checked = 0
    for _ in range(5_000):
        retention = rng.choice(retention_options)
        stream_time = rng.randrange(-3 * DAY, 3 * DAY)
        # aim near the horizon, where an off-by-one would show
        ts = stream_time - retention + rng.randrange(-2 * W, 2 * W)
        start = window_start(ts, W)
        if not is_too_old(ts, stream_time, retention):
            checked += 1
            assert not is_window_expired(start, W, stream_time, retention), (ts, stream_time)
        else:
            # and a too-old event's window is never one that is still served past the horizon
            assert start < stream_time - retention
    assert checked > 1_000


# --- the WindowStats fold -----------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "impressions", "clicks", "conversions", "revenue", "users"),
    [
        pytest.param([], 0, 0, 0, 0.0, 0, id="empty"),
        pytest.param([("impression", "u1", None)], 1, 0, 0, 0.0, 1, id="impression"),
        pytest.param([("click", "u1", None)], 0, 1, 0, 0.0, 1, id="click"),
        pytest.param([("conversion", "u1", 12.5)], 0, 0, 1, 12.5, 1, id="conversion"),
        pytest.param([("conversion", "u1", None)], 0, 0, 1, 0.0, 1, id="conversion-no-revenue"),
        pytest.param([("page_view", "u1", None)], 0, 0, 0, 0.0, 0, id="page_view-ignored"),
        pytest.param([("identify", "u1", None)], 0, 0, 0, 0.0, 0, id="identify-ignored"),
        pytest.param(
            [("impression", "u1", 5.0), ("click", "u1", 7.0), ("page_view", "u2", 9.0)],
            1,
            1,
            0,
            0.0,
            1,
            id="revenue-only-from-conversions",
        ),
        pytest.param(
            [
                ("impression", "u1", None),
                ("impression", "u2", None),
                ("click", "u2", None),
                ("conversion", "u3", 1.25),
                ("conversion", "u3", 2.5),
                ("page_view", "u4", None),
            ],
            2,
            1,
            2,
            3.75,
            3,
            id="mixed",
        ),
    ],
)
def test_window_stats_fold(
    events: list[tuple[str, str, float | None]],
    impressions: int,
    clicks: int,
    conversions: int,
    revenue: float,
    users: int,
) -> None:
    stats = WindowStats()
    for event_type, profile_id, value in events:
        assert stats.apply(event_type, profile_id, value) is stats
    assert (stats.impressions, stats.clicks, stats.conversions) == (
        impressions,
        clicks,
        conversions,
    )
    assert stats.revenue == pytest.approx(revenue)
    assert stats.users.estimate() == users


def _stats(
    impressions: int, clicks: int, conversions: int, revenue: float, users: list[str]
) -> WindowStats:
    stats = WindowStats()
    for index in range(impressions):
        stats.apply("impression", users[index % len(users)], None)
    for index in range(clicks):
        stats.apply("click", users[index % len(users)], None)
    for index in range(conversions):
        stats.apply("conversion", users[index % len(users)], revenue / conversions)
    return stats


# Built in the test, not at collection: a sketch held by pytest's items until the
# interpreter exits makes nanobind print leak warnings after the summary.
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(WindowStats, id="empty"),
        pytest.param(lambda: _stats(3, 1, 1, 9.99, ["a", "b"]), id="small"),
        pytest.param(
            lambda: _stats(5_000, 200, 10, 1234.5, [f"u{i}" for i in range(5_000)]),
            id="hll-mode",
        ),
    ],
)
def test_window_stats_bytes_round_trip(make: Callable[[], WindowStats]) -> None:
    stats = make()
    back = WindowStats.from_bytes(stats.to_bytes())
    assert (back.impressions, back.clicks, back.conversions, back.revenue) == (
        stats.impressions,
        stats.clicks,
        stats.conversions,
        stats.revenue,
    )
    assert back.users.estimate() == stats.users.estimate()
    back.apply("click", "someone-new", None)
    assert back.clicks == stats.clicks + 1, "a restored window folds on"


@pytest.mark.parametrize("data", [None, b""], ids=["none", "empty"])
def test_window_stats_from_nothing_is_empty(data: bytes | None) -> None:
    stats = WindowStats.from_bytes(data)
    assert (stats.impressions, stats.clicks, stats.conversions, stats.revenue) == (0, 0, 0, 0.0)
    assert stats.users.estimate() == 0


@pytest.mark.parametrize(
    ("clicks", "impressions", "rate"),
    [
        pytest.param(0, 0, 0.0, id="nothing"),
        pytest.param(3, 0, 0.0, id="clicks-without-impressions"),
        pytest.param(1, 4, 0.25, id="quarter"),
        pytest.param(5, 5, 1.0, id="all"),
    ],
)
def test_ctr(clicks: int, impressions: int, rate: float) -> None:
    assert ctr(clicks, impressions) == rate


# --- summarise ----------------------------------------------------------------------


def test_summarise_totals_are_sums_of_rows() -> None:
    first = _stats(4, 1, 1, 10.0, ["a", "b"])
    second = _stats(6, 2, 2, 5.5, ["b", "c", "d"])
    summary = summarise([(T, first), (T + W, None), (T + 2 * W, second)], W, T, T + 3 * W)

    assert summary.windows == [
        WindowRow(T, T + W, 4, 1, 1, 10.0, 0.25, 2),
        WindowRow(T + W, T + 2 * W, 0, 0, 0, 0.0, 0.0, 0),
        WindowRow(T + 2 * W, T + 3 * W, 6, 2, 2, 5.5, round(2 / 6, 6), 3),
    ]
    # "b" is in both windows: counted once in the totals
    assert summary.totals == WindowRow(T, T + 3 * W, 10, 3, 3, 15.5, 0.3, 4)
    for name in ("impressions", "clicks", "conversions", "revenue"):
        assert getattr(summary.totals, name) == sum(getattr(r, name) for r in summary.windows)


def test_summarise_same_user_in_every_window_counts_once() -> None:
    windows = [(T + i * W, _stats(1, 0, 0, 0.0, ["same-user"])) for i in range(60)]
    summary = summarise(windows, W, T, T + 60 * W)
    assert [row.unique_users for row in summary.windows] == [1] * 60
    assert summary.totals.unique_users == 1
    assert summary.totals.impressions == 60


def test_summarise_nothing_answers_zeros() -> None:
    summary = summarise([(T, None), (T + W, None)], W, T, T + 2 * W)
    assert summary.totals == WindowRow(T, T + 2 * W, 0, 0, 0, 0.0, 0.0, 0)
    assert len(summary.windows) == 2


def test_summarise_does_not_change_the_windows() -> None:
    stats = _stats(2, 1, 0, 0.0, ["a", "b"])
    before = stats.to_bytes()
    summarise([(T, stats)], W, T, T + W)
    assert stats.to_bytes() == before


def test_summarise_rounds_revenue_and_ctr() -> None:
    stats = WindowStats(
        impressions=3, clicks=1, conversions=3, revenue=0.1 + 0.2, users=UniqueCounter()
    )
    row = summarise([(T, stats)], W, T, T + W).windows[0]
    assert row.revenue == 0.3
    assert row.ctr == 0.333333


# --- table keys ---------------------------------------------------------------------


def test_window_keys_sort_by_time_within_a_campaign() -> None:
    starts = [-3 * W, -2 * W, -W, 0, W, 2 * W, T, T + W]
    keys = [window_key("camp-1", start) for start in starts]
    assert sorted(keys) == keys
    assert [parse_window_key(key)[1] for key in sorted(reversed(keys))] == starts


def test_window_keys_group_by_campaign() -> None:
    keys = [window_key(c, s) for c in ("a", "ab", "b") for s in (0, W, T)]
    assert sorted(keys) == keys


@pytest.mark.parametrize(
    "campaign_id",
    [
        pytest.param("camp-1", id="plain"),
        pytest.param("", id="empty"),
        pytest.param("a\x1fb", id="separator-inside"),
        pytest.param("x\x1f+00000000000000000001", id="looks-like-a-key"),
        pytest.param("spring/sale:2024 #1", id="punctuation"),
        pytest.param("\u00e9t\u00e9 \u4e2d\u6587 \U0001f600", id="unicode"),
        pytest.param("-42", id="looks-like-a-number"),
        pytest.param("c" * 128, id="128-chars"),
    ],
)
@pytest.mark.parametrize("start", [0, T, -W, -62_135_596_800_000, 253_402_300_740_000])
def test_parse_window_key_round_trip(campaign_id: str, start: int) -> None:
    assert parse_window_key(window_key(campaign_id, start)) == (campaign_id, start)


# --- de-duplication horizon ---------------------------------------------------------


@pytest.mark.parametrize(
    ("first_seen", "duplicate", "forgotten"),
    [
        pytest.param(T, True, False, id="same-time"),
        pytest.param(T - 1, True, False, id="just-before"),
        pytest.param(T - DAY + 1, True, False, id="horizon-minus-1ms"),
        pytest.param(T - DAY, True, False, id="exactly-horizon"),
        pytest.param(T - DAY - 1, False, True, id="horizon-plus-1ms"),
        pytest.param(T - 10 * DAY, False, True, id="long-ago"),
        pytest.param(T + W, True, False, id="seen-ahead-of-stream-time"),
    ],
)
def test_dedup_horizon(first_seen: int, duplicate: bool, forgotten: bool) -> None:
    verdict = classify(Seen(first_seen, offset=5), 6, T, DAY)  # a later record
    assert (verdict is Verdict.DUPLICATE) is duplicate
    assert is_forgotten(first_seen, T, DAY) is forgotten


def test_never_seen_is_new_and_the_same_record_read_again_is_a_replay() -> None:
    assert classify(None, 6, T, DAY) is Verdict.NEW
    assert classify(Seen(T, offset=6), 6, T, DAY) is Verdict.REPLAY
    assert classify(Seen(T, offset=6), 4, T, DAY) is Verdict.REPLAY


def test_dedup_and_retention_share_the_boundary() -> None:
    """An id forgotten by de-duplication is one whose event would be too old by now."""
    for offset in range(-3, 4):
        first_seen = T - DAY + offset
        assert is_forgotten(first_seen, T, DAY) is is_too_old(first_seen, T, DAY)
