"""Read-route parameters: ``from``/``to`` parsing and the whole-window range they ask for."""

from __future__ import annotations

import pytest

from dmp_faust.domain.query import BadParameter, TimeRange, parse_time_param, resolve_range

W = 60_000
HOUR = 60 * W
DAY = 24 * HOUR
T = 1_614_600_000_000  # 2021-03-01T12:00:00Z, a window start
assert T % W == 0
MAX = DAY + W


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        pytest.param("2021-03-01T12:00:00Z", T, id="rfc3339-z"),
        pytest.param("2021-03-01T13:00:00+01:00", T, id="rfc3339-offset"),
        pytest.param("2021-03-01T12:00:00.250Z", T + 250, id="rfc3339-fraction"),
        pytest.param(str(T), T, id="digits"),
        pytest.param(f"  {T}\n", T, id="digits-whitespace"),
        pytest.param("0", 0, id="zero"),
        pytest.param("-60000", -W, id="negative-digits"),
    ],
)
def test_parse_time_param(text: str, ms: int) -> None:
    assert parse_time_param("from", text) == ms


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("yesterday", id="word"),
        pytest.param("2021-03-01", id="date-only"),
        pytest.param("2021-03-01T12:00:00", id="naive"),
        pytest.param("1614600000000.5", id="decimal"),
        pytest.param("1e12", id="exponent"),
        pytest.param("0x10", id="hex"),
        pytest.param("+5", id="plus-sign"),
        pytest.param("9" * 20, id="digits-out-of-range"),
        pytest.param("--5", id="double-minus"),
        pytest.param("-", id="minus-only"),
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("9" * 5000, id="5000-digits"),
    ],
)
def test_parse_time_param_refuses_with_bad_parameter(text: str) -> None:
    with pytest.raises(BadParameter) as raised:
        parse_time_param("to", text)
    assert str(raised.value).startswith("to:"), "the message names the parameter"


def test_bad_parameter_is_a_value_error() -> None:
    assert issubclass(BadParameter, ValueError)


@pytest.mark.parametrize(
    ("from_text", "to_text", "stream_time", "expected"),
    [
        pytest.param(None, None, T, TimeRange(T + W - HOUR, T + W), id="default-at-window-start"),
        pytest.param(
            None, None, T + 59_999, TimeRange(T + W - HOUR, T + W), id="default-window-last-ms"
        ),
        pytest.param(
            None, None, T + 30_000, TimeRange(T + W - HOUR, T + W), id="default-mid-window"
        ),
        pytest.param("", "", T, TimeRange(T + W - HOUR, T + W), id="empty-strings-are-missing"),
        pytest.param(None, None, -1, TimeRange(-HOUR, 0), id="default-negative-stream-time"),
        pytest.param(
            "2021-03-01T10:00:00Z", None, T, TimeRange(T - 2 * HOUR, T - HOUR), id="only-from"
        ),
        pytest.param(None, str(T), 0, TimeRange(T - HOUR, T), id="only-to"),
        pytest.param(str(T - 3 * W), str(T), 0, TimeRange(T - 3 * W, T), id="both-aligned"),
        pytest.param(
            str(T + 30_000), str(T + 2 * W + 1), 0, TimeRange(T, T + 3 * W), id="both-widened"
        ),
        pytest.param(str(T + 1), str(T + 2), 0, TimeRange(T, T + W), id="inside-one-window"),
        pytest.param(
            "2021-03-01T11:59:59.999Z",
            "2021-03-01T12:00:00.001Z",
            0,
            TimeRange(T - W, T + W),
            id="straddling-widened",
        ),
        pytest.param(str(-2 * W - 1), "-1", 0, TimeRange(-3 * W, 0), id="negative-bounds"),
        pytest.param(str(T), str(T + MAX), 0, TimeRange(T, T + MAX), id="exactly-max"),
    ],
)
def test_resolve_range(
    from_text: str | None, to_text: str | None, stream_time: int, expected: TimeRange
) -> None:
    span = resolve_range(from_text, to_text, stream_time, W, HOUR, MAX)
    assert span == expected
    assert span.from_ms % W == 0
    assert span.to_ms % W == 0


def test_default_range_ignores_the_wall_clock() -> None:
    """Only stream time decides the default: a replay of last year answers last year."""
    old = resolve_range(None, None, 1_000_000_000_000, W, HOUR, MAX)
    assert old == TimeRange(1_000_000_020_000 - HOUR, 1_000_000_020_000)


@pytest.mark.parametrize(
    ("from_text", "to_text"),
    [
        pytest.param(str(T), str(T), id="to-equals-from"),
        pytest.param(str(T + 1), str(T), id="to-before-from"),
        pytest.param("2021-03-01T12:00:00Z", "2021-03-01T12:00:00+00:00", id="same-instant"),
        pytest.param(str(T), str(T + MAX + 1), id="over-max"),
        pytest.param(str(T), str(T + 2 * MAX), id="far-over-max"),
        pytest.param(str(T + 1), str(T + MAX + 1), id="over-max-once-widened"),
        pytest.param("garbage", str(T), id="bad-from"),
        pytest.param(str(T), "garbage", id="bad-to"),
        pytest.param("garbage", None, id="bad-from-alone"),
    ],
)
def test_resolve_range_refuses(from_text: str | None, to_text: str | None) -> None:
    with pytest.raises(BadParameter):
        resolve_range(from_text, to_text, T, W, HOUR, MAX)


def test_only_to_before_the_epoch_still_spans_the_default() -> None:
    assert resolve_range(None, "0", T, W, HOUR, MAX) == TimeRange(-HOUR, 0)


@pytest.mark.parametrize(
    ("from_text", "to_text"),
    [
        pytest.param("9999-12-31T23:30:00Z", "9999-12-31T23:59:59Z", id="ends-in-year-10000"),
        pytest.param("253402300799999", None, id="default-length-past-9999"),
        pytest.param(None, "-62135596800000", id="starts-before-year-1"),
    ],
)
def test_a_range_widened_past_what_rfc3339_can_write_is_a_bad_parameter(
    from_text: str | None, to_text: str | None
) -> None:
    with pytest.raises(BadParameter, match="years 0001 to 9999"):
        resolve_range(from_text, to_text, 0, W, HOUR, DAY)
