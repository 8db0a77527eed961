"""Timestamps: RFC 3339 strings and epoch milliseconds to integer ms, and back."""

from __future__ import annotations

import random
from typing import Any

import pytest

from dmp_faust.domain.timefmt import (
    MAX_MS,
    MIN_MS,
    TimestampError,
    format_timestamp,
    json_kind,
    parse_timestamp,
)

T0 = 1_614_600_000_000  # 2021-03-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        pytest.param("2021-03-01T12:00:00Z", T0, id="zulu"),
        pytest.param("2021-03-01t12:00:00z", T0, id="lowercase-t-z"),
        pytest.param("2021-03-01 12:00:00Z", T0, id="space-separator"),
        pytest.param("2021-03-01T12:00:00+00:00", T0, id="plus-zero"),
        pytest.param("2021-03-01T12:00:00-00:00", T0, id="minus-zero"),
        pytest.param("2021-03-01T13:30:00+01:30", T0, id="positive-offset"),
        pytest.param("2021-03-01T07:00:00-05:00", T0, id="negative-offset"),
        pytest.param("2021-03-02T01:59:00+13:59", T0, id="large-offset"),
        pytest.param("2021-03-01T12:00:00.5Z", T0 + 500, id="fraction-1-digit"),
        pytest.param("2021-03-01T12:00:00.123Z", T0 + 123, id="fraction-ms"),
        pytest.param("2021-03-01T12:00:00.123999Z", T0 + 123, id="fraction-us-truncated"),
        pytest.param("2021-03-01T12:00:00.001+02:00", T0 + 1 - 7_200_000, id="fraction-offset"),
        pytest.param("1970-01-01T00:00:00Z", 0, id="epoch"),
        pytest.param("1969-12-31T23:59:59.999Z", -1, id="one-ms-before-epoch"),
        pytest.param("1969-12-31T23:59:59.9995Z", -1, id="sub-ms-before-epoch-floors"),
        pytest.param("1900-01-01T00:00:00Z", -2_208_988_800_000, id="year-1900"),
        pytest.param("2016-12-31T23:59:60Z", None, id="leap-second"),
    ],
)
def test_parse_rfc3339(text: str, ms: int | None) -> None:
    if ms is None:  # a leap second is RFC 3339 but datetime cannot hold it: refused, not crashed
        with pytest.raises(TimestampError):
            parse_timestamp(text)
    else:
        assert parse_timestamp(text) == ms


@pytest.mark.parametrize(
    "ms",
    [
        pytest.param(0, id="zero"),
        pytest.param(T0, id="2021"),
        pytest.param(-1, id="minus-1"),
        pytest.param(-86_400_000, id="a-day-before-epoch"),
        pytest.param(MIN_MS, id="min"),
        pytest.param(MAX_MS, id="max"),
    ],
)
def test_parse_epoch_ms(ms: int) -> None:
    assert parse_timestamp(ms) == ms


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(MIN_MS - 1, id="below-min"),
        pytest.param(MAX_MS + 1, id="above-max"),
        pytest.param(2**63, id="int64-overflow"),
        pytest.param(-(2**63) - 1, id="int64-underflow"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(1.0, id="float"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(None, id="none"),
        pytest.param([T0], id="list"),
        pytest.param({"ms": T0}, id="dict"),
        pytest.param("2021-03-01T12:00:00", id="naive"),
        pytest.param("2021-03-01T12:00:00.000000", id="naive-fraction"),
        pytest.param("2021-03-01", id="date-only"),
        pytest.param("1614600000000", id="digits-string"),
        pytest.param("", id="empty"),
        pytest.param("2021-03-01T12:00:00Z" + " " * 100, id="too-long"),
        pytest.param("2021-02-30T12:00:00Z", id="feb-30"),
        pytest.param("2021-03-01T12:00:00+24:00", id="offset-24h"),
        pytest.param("2021-03-01T12:00:00Zjunk", id="trailing-junk"),
        pytest.param("next tuesday at noon!", id="words"),
    ],
)
def test_parse_refuses(value: Any) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2021-W09-1T12:00:00Z", id="iso-week-date"),
        pytest.param("2021-03-01T12:00+01:00", id="no-seconds"),
        pytest.param("2021-03-01T12:00:00,5Z", id="comma-fraction"),
        pytest.param("2021-03-01T12:00:00+0100", id="basic-offset"),
        pytest.param("2021-03-01T12:00:00+01", id="hour-offset"),
        pytest.param("2021-03-01T12:00:00+01:00:30", id="offset-with-seconds"),
    ],
)
def test_parse_refuses_iso8601_forms_that_are_not_rfc3339(text: str) -> None:
    """The contract says RFC 3339; what else Python's fromisoformat takes varies by version."""
    with pytest.raises(TimestampError):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0001-01-01T00:00:00+01:00", id="before-year-1-utc"),
        pytest.param("9999-12-31T23:59:59-01:00", id="after-year-9999-utc"),
    ],
)
def test_parse_keeps_strings_in_the_same_range_as_integers(text: str) -> None:
    """A string that lands outside [MIN_MS, MAX_MS] in UTC is as bad as such an integer
    (format_timestamp cannot even write it back)."""
    with pytest.raises(TimestampError):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(T0, "2021-03-01T12:00:00Z", id="whole-second"),
        pytest.param(T0 + 7, "2021-03-01T12:00:00.007Z", id="with-ms"),
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param(-1, "1969-12-31T23:59:59.999Z", id="minus-1"),
        pytest.param(-1_000, "1969-12-31T23:59:59Z", id="minus-1s"),
        pytest.param(MAX_MS, "9999-12-31T23:59:59.999Z", id="max"),
        pytest.param(MIN_MS, "0001-01-01T00:00:00Z", id="min-four-digit-year"),
        pytest.param(-59_011_459_200_000, "0100-01-01T00:00:00Z", id="year-100"),
    ],
)
def test_format_timestamp(ms: int, text: str) -> None:
    assert format_timestamp(ms) == text
    assert parse_timestamp(text) == ms


def test_format_parse_round_trip() -> None:
    rng = random.Random(3339)
    year_1000 = -30_610_224_000_000  # years before 1000 have their own cases above
    samples = [rng.randrange(year_1000, MAX_MS + 1) for _ in range(300)]
    samples += [rng.randrange(-(10**12), 10**12) for _ in range(300)]
    for ms in samples:
        assert parse_timestamp(format_timestamp(ms)) == ms, ms


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param({}, "object", id="object"),
        pytest.param([], "array", id="array"),
        pytest.param(1.5, "number", id="float"),
        pytest.param(None, "null", id="null"),
    ],
)
def test_json_kind(value: object, kind: str) -> None:
    assert json_kind(value) == kind
