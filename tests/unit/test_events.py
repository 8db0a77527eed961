"""The validator: every refusal has its reason, valid events keep their fields,
and no input whatsoever makes it raise."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from dmp_faust.domain.events import (
    BAD_TIMESTAMP,
    BAD_TYPE,
    FUTURE_TIMESTAMP,
    MALFORMED_JSON,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    REASONS,
    TOO_LARGE,
    UNKNOWN_TYPE,
    Event,
    Rejection,
    encode,
    validate_bytes,
    validate_object,
)

NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
LIMIT = 64 * 1024
FIVE_MINUTES_MS = 5 * 60_000


def decode_valid_event(raw: bytes) -> Event:
    return msgspec.json.decode(raw, type=Event)


def event(**changes: Any) -> dict[str, Any]:
    """A valid impression; ``changes`` set fields, a value of ``...`` removes one."""
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "impression",
        "timestamp": NOW_MS - 1_000,
        "anonymous_id": "anon-1",
        "campaign_id": "camp-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not ...}


def as_bytes(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def reason_of(result: Event | Rejection) -> str:
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.detail, "a rejection always explains itself"
    return result.reason


def padded_to(size: int) -> bytes:
    """A valid event whose JSON encoding is exactly ``size`` bytes."""
    raw = as_bytes(event(properties={"pad": ""}))
    padded = as_bytes(event(properties={"pad": "x" * (size - len(raw))}))
    assert len(padded) == size
    return padded


# --- malformed_json -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"{'event_id': 'x'}", id="single-quotes"),
        pytest.param(b"\xff\xfe{}", id="non-utf8-outside-string"),
        pytest.param(b'{"event_id": "\xff\xfe", "type": "click"}', id="non-utf8-inside-string"),
        pytest.param(b'{"event_id": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
        pytest.param(b"NaN", id="nan-bare"),
        pytest.param(b'{"revenue": NaN}', id="nan-in-object"),
        pytest.param(b'{"revenue": Infinity}', id="infinity"),
        pytest.param(b'{"revenue": 1e999}', id="1e999"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="array-nested-5000"),
        pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, id="object-nested-5000"),
        pytest.param(as_bytes(event()) + b" garbage", id="trailing-garbage"),
        pytest.param(as_bytes(event()) + as_bytes(event()), id="two-objects"),
        pytest.param(b'{"event_id": "x",}', id="trailing-comma"),
    ],
)
def test_malformed_json(raw: bytes) -> None:
    assert reason_of(validate_bytes(raw, NOW_MS)) == MALFORMED_JSON


# --- not_an_object ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="empty-array"),
        pytest.param(as_bytes([event()]), id="array-of-event"),
        pytest.param(b'"an event"', id="string"),
        pytest.param(b"42", id="integer"),
        pytest.param(b"4.5", id="float"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="boolean"),
    ],
)
def test_not_an_object(raw: bytes) -> None:
    assert reason_of(validate_bytes(raw, NOW_MS)) == NOT_AN_OBJECT


# --- too_large ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "accepted"),
    [
        pytest.param(LIMIT - 1, True, id="limit-minus-1"),
        pytest.param(LIMIT, True, id="exactly-64KiB"),
        pytest.param(LIMIT + 1, False, id="64KiB-plus-1"),
        pytest.param(10 * LIMIT, False, id="640KiB"),
    ],
)
def test_size_limit(size: int, accepted: bool) -> None:
    result = validate_bytes(padded_to(size), NOW_MS)
    if accepted:
        assert isinstance(result, Event)
    else:
        assert reason_of(result) == TOO_LARGE


def test_too_large_is_decided_before_parsing() -> None:
    garbage = b"\xff" * (LIMIT + 1)
    assert reason_of(validate_bytes(garbage, NOW_MS)) == TOO_LARGE


def test_size_limit_is_a_parameter() -> None:
    raw = as_bytes(event())
    assert isinstance(validate_bytes(raw, NOW_MS, max_bytes=len(raw)), Event)
    assert reason_of(validate_bytes(raw, NOW_MS, max_bytes=len(raw) - 1)) == TOO_LARGE


# --- missing_field ------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(event(event_id=...), id="no-event_id"),
        pytest.param(event(event_id=None), id="null-event_id"),
        pytest.param(event(event_id=""), id="empty-event_id"),
        pytest.param(event(type=...), id="no-type"),
        pytest.param(event(type=None), id="null-type"),
        pytest.param(event(timestamp=...), id="no-timestamp"),
        pytest.param(event(timestamp=None), id="null-timestamp"),
        pytest.param(event(anonymous_id=...), id="neither-id"),
        pytest.param(event(anonymous_id=None, user_id=None), id="both-ids-null"),
        pytest.param(event(anonymous_id="", user_id=""), id="both-ids-empty"),
        pytest.param(event(type="impression", campaign_id=...), id="impression-no-campaign"),
        pytest.param(event(type="click", campaign_id=...), id="click-no-campaign"),
        pytest.param(event(type="conversion", campaign_id=...), id="conversion-no-campaign"),
        pytest.param(event(type="click", campaign_id=""), id="click-empty-campaign"),
        pytest.param(event(type="conversion", campaign_id=None), id="conversion-null-campaign"),
    ],
)
def test_missing_field(obj: dict[str, Any]) -> None:
    assert reason_of(validate_object(obj, NOW_MS)) == MISSING_FIELD
    assert reason_of(validate_bytes(as_bytes(obj), NOW_MS)) == MISSING_FIELD


@pytest.mark.parametrize("kind", ["page_view", "identify"])
def test_campaign_id_is_optional_without_a_campaign(kind: str) -> None:
    result = validate_object(event(type=kind, campaign_id=...), NOW_MS)
    assert isinstance(result, Event)
    assert result.campaign_id is None


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param({"anonymous_id": "a"}, id="anonymous-only"),
        pytest.param({"anonymous_id": ..., "user_id": "u"}, id="user-only"),
        pytest.param({"anonymous_id": "a", "user_id": "u"}, id="both"),
    ],
)
def test_either_id_is_enough(ids: dict[str, Any]) -> None:
    assert isinstance(validate_object(event(**ids), NOW_MS), Event)


# --- bad_type -----------------------------------------------------------------------

_NOT_STRINGS = [
    pytest.param(1, id="int"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param([], id="array"),
    pytest.param({}, id="object"),
]
_STRING_FIELDS = [
    "event_id",
    "type",
    "anonymous_id",
    "user_id",
    "campaign_id",
    "ad_id",
    "url",
    "referrer",
    "user_agent",
    "ip",
]


@pytest.mark.parametrize("value", _NOT_STRINGS)
@pytest.mark.parametrize("name", _STRING_FIELDS)
def test_string_fields_refuse_other_types(name: str, value: Any) -> None:
    obj = event(**{name: value})
    assert reason_of(validate_object(obj, NOW_MS)) == BAD_TYPE
    assert reason_of(validate_bytes(as_bytes(obj), NOW_MS)) == BAD_TYPE


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("{}", id="string"),
        pytest.param(1, id="int"),
        pytest.param(True, id="bool"),
        pytest.param([{"a": 1}], id="array"),
    ],
)
@pytest.mark.parametrize("name", ["properties", "traits"])
def test_object_fields_refuse_other_types(name: str, value: Any) -> None:
    assert reason_of(validate_object(event(**{name: value}), NOW_MS)) == BAD_TYPE


@pytest.mark.parametrize(
    "revenue",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("12.5", id="string"),
        pytest.param([1], id="array"),
        pytest.param({"amount": 1}, id="object"),
        pytest.param(-0.01, id="negative-float"),
        pytest.param(-1, id="negative-int"),
        pytest.param(1e16, id="over-1e15"),
        pytest.param(10**400, id="huge-int"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("nan"), id="nan"),
    ],
)
def test_bad_revenue(revenue: Any) -> None:
    obj = event(type="conversion", revenue=revenue)
    assert reason_of(validate_object(obj, NOW_MS)) == BAD_TYPE


@pytest.mark.parametrize(
    ("revenue", "stored"),
    [
        pytest.param(0, 0.0, id="zero"),
        pytest.param(12, 12.0, id="int"),
        pytest.param(12.34, 12.34, id="float"),
        pytest.param(1e15, 1e15, id="max"),
    ],
)
def test_good_revenue_is_a_float(revenue: Any, stored: float) -> None:
    result = validate_bytes(as_bytes(event(type="conversion", revenue=revenue)), NOW_MS)
    assert isinstance(result, Event)
    assert result.revenue == stored
    assert type(result.revenue) is float


@pytest.mark.parametrize("name", ["event_id", "anonymous_id", "user_id", "campaign_id"])
def test_ids_at_most_128_characters(name: str) -> None:
    assert isinstance(validate_object(event(**{name: "x" * 128}), NOW_MS), Event)
    assert isinstance(validate_object(event(**{name: "é" * 128}), NOW_MS), Event)
    assert reason_of(validate_object(event(**{name: "x" * 129}), NOW_MS)) == BAD_TYPE


# --- unknown_type -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("purchase", id="other-word"),
        pytest.param("Click", id="capitalised"),
        pytest.param(" click", id="leading-space"),
        pytest.param("", id="empty"),
        pytest.param("x" * 10_000, id="long"),
    ],
)
def test_unknown_type(kind: str) -> None:
    result = validate_object(event(type=kind), NOW_MS)
    assert reason_of(result) == UNKNOWN_TYPE
    assert isinstance(result, Rejection)
    assert len(result.detail) < 300, "the detail does not echo a long value whole"


# --- bad_timestamp / future_timestamp -----------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("2023-11-14T22:00:00", id="naive"),
        pytest.param("2023-11-14T22:00:00.000", id="naive-fraction"),
        pytest.param("2023-11-14", id="date-only"),
        pytest.param("22:00:00Z", id="time-only"),
        pytest.param("yesterday", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param("2023-13-14T22:00:00Z", id="month-13"),
        pytest.param("2023-11-14T25:00:00Z", id="hour-25"),
        pytest.param("2023-11-14X22:00:00Z", id="bad-separator"),
        pytest.param(str(NOW_MS), id="digits-as-string"),
        pytest.param(1_700_000_000_000.0, id="float-ms"),
        pytest.param(1_700_000_000.5, id="float-seconds"),
        pytest.param(True, id="true"),
        pytest.param([NOW_MS], id="array"),
        pytest.param({"ms": NOW_MS}, id="object"),
        pytest.param(253_402_300_800_000, id="ms-after-year-9999"),
        pytest.param(-62_135_596_800_001, id="ms-before-year-1"),
        pytest.param(2**63, id="ms-over-int64"),
    ],
)
def test_bad_timestamp(timestamp: Any) -> None:
    obj = event(timestamp=timestamp)
    assert reason_of(validate_object(obj, NOW_MS)) == BAD_TIMESTAMP
    assert reason_of(validate_bytes(as_bytes(obj), NOW_MS)) == BAD_TIMESTAMP


@pytest.mark.parametrize(
    ("ahead_ms", "reason"),
    [
        pytest.param(FIVE_MINUTES_MS + 1, FUTURE_TIMESTAMP, id="5min-plus-1ms"),
        pytest.param(FIVE_MINUTES_MS + 1_000, FUTURE_TIMESTAMP, id="5min-plus-1s"),
        pytest.param(365 * 86_400_000, FUTURE_TIMESTAMP, id="a-year"),
        pytest.param(FIVE_MINUTES_MS, None, id="exactly-5min"),
        pytest.param(FIVE_MINUTES_MS - 1, None, id="5min-minus-1ms"),
        pytest.param(0, None, id="now"),
        pytest.param(-10 * 365 * 86_400_000, None, id="ten-years-ago"),
    ],
)
def test_future_timestamp(ahead_ms: int, reason: str | None) -> None:
    result = validate_object(event(timestamp=NOW_MS + ahead_ms), NOW_MS)
    if reason is None:
        assert isinstance(result, Event)
        assert result.ts == NOW_MS + ahead_ms
    else:
        assert reason_of(result) == reason


def test_future_timestamp_for_rfc3339_strings() -> None:
    # NOW_MS is 2023-11-14T22:13:20Z
    assert isinstance(validate_object(event(timestamp="2023-11-14T22:18:20Z"), NOW_MS), Event)
    late = event(timestamp="2023-11-14T22:18:20.001Z")
    assert reason_of(validate_object(late, NOW_MS)) == FUTURE_TIMESTAMP
    offset = event(timestamp="2023-11-14T23:18:21+01:00")
    assert reason_of(validate_object(offset, NOW_MS)) == FUTURE_TIMESTAMP


def test_future_tolerance_is_a_parameter() -> None:
    obj = event(timestamp=NOW_MS + 2_000)
    assert reason_of(validate_object(obj, NOW_MS, tolerance_ms=1_000)) == FUTURE_TIMESTAMP
    assert isinstance(validate_object(obj, NOW_MS, tolerance_ms=2_000), Event)


# --- valid events -------------------------------------------------------------------


def test_valid_event_keeps_its_fields() -> None:
    obj = {
        "event_id": "e-42",
        "type": "conversion",
        "timestamp": "2023-11-14T22:13:19.250Z",
        "anonymous_id": "anon-42",
        "user_id": "user-42",
        "campaign_id": "camp-7",
        "ad_id": "ad-3",
        "url": "https://shop.example/checkout?utm_source=news",
        "referrer": "https://news.example/",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "ip": "203.0.113.77",
        "revenue": 19.99,
        "properties": {"sku": "A-1", "qty": 2, "tags": ["x", None]},
        "traits": {"plan": "pro"},
    }
    result = validate_bytes(as_bytes(obj), NOW_MS)
    assert result == Event(
        event_id="e-42",
        type="conversion",
        ts=NOW_MS - 750,
        anonymous_id="anon-42",
        user_id="user-42",
        campaign_id="camp-7",
        ad_id="ad-3",
        url="https://shop.example/checkout?utm_source=news",
        referrer="https://news.example/",
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        ip="203.0.113.0",
        revenue=19.99,
        properties={"sku": "A-1", "qty": 2, "tags": ["x", None]},
        traits={"plan": "pro"},
    )


@pytest.mark.parametrize(
    ("ip", "stored"),
    [
        pytest.param("203.0.113.77", "203.0.113.0", id="ipv4"),
        pytest.param("2001:db8:abcd:12:3456::1", "2001:db8:abcd::", id="ipv6"),
        pytest.param("::ffff:198.51.100.9", "198.51.100.0", id="ipv4-mapped"),
        pytest.param("not an ip", None, id="garbage-dropped"),
        pytest.param("", None, id="empty-dropped"),
    ],
)
def test_ip_is_truncated_in_the_event(ip: str, stored: str | None) -> None:
    result = validate_object(event(ip=ip), NOW_MS)
    assert isinstance(result, Event)
    assert result.ip == stored
    assert ip not in encode(result).decode() or not ip


def test_unknown_fields_are_ignored() -> None:
    result = validate_object(event(extra={"x": 1}, context="web"), NOW_MS)
    assert isinstance(result, Event)
    assert b"extra" not in encode(result)


@pytest.mark.parametrize(
    ("ids", "profile_id"),
    [
        pytest.param({"anonymous_id": "a", "user_id": "u"}, "u", id="both-user-wins"),
        pytest.param({"anonymous_id": "a"}, "a", id="anonymous-only"),
        pytest.param({"anonymous_id": ..., "user_id": "u"}, "u", id="user-only"),
        pytest.param({"anonymous_id": "a", "user_id": ""}, "a", id="empty-user"),
    ],
)
def test_profile_id(ids: dict[str, Any], profile_id: str) -> None:
    result = validate_object(event(**ids), NOW_MS)
    assert isinstance(result, Event)
    assert result.profile_id == profile_id


def test_encode_decode_round_trip() -> None:
    result = validate_object(
        event(type="conversion", revenue=3, properties={"k": [1, "2"]}), NOW_MS
    )
    assert isinstance(result, Event)
    assert decode_valid_event(encode(result)) == result
    assert b"null" not in encode(result), "absent fields are omitted, not null"


# --- never raises -------------------------------------------------------------------


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice(
            [0, -1, 1, NOW_MS, -(2**63), 2**64, 10**30, rng.randrange(-(10**16), 10**16)]
        )
    if pick == 3:
        return rng.choice([0.0, -0.5, 1e300, rng.uniform(-1e6, 1e6)])
    if pick == 4:
        alphabet = "aZ09 -_:.TtzZ+\x00\x1f\u00e9\u4e2d\U0001f600"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
    if pick == 5:
        return rng.choice(
            [
                "2023-11-14T22:00:00Z",
                "2023-11-14t22:00:00+99:99",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00",
                "::ffff:1.2.3.4",
                "fe80::1%eth0",
                "click",
                "page_view",
            ]
        )
    if pick == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    fields = [
        "event_id",
        "type",
        "timestamp",
        "anonymous_id",
        "user_id",
        "campaign_id",
        "revenue",
        "ip",
        "user_agent",
        "url",
        "properties",
        "traits",
        "x",
    ]
    return {rng.choice(fields): _random_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))}


def _check(result: object) -> None:
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
    else:
        assert decode_valid_event(encode(result)) == result


def test_never_raises_on_random_bytes() -> None:
    rng = random.Random(20231114)
    seeds = [as_bytes(event()), b'{"a": [1, 2, {"b": "c"}]}', b"\xff\xfe\x00"]
    for _ in range(400):
        if rng.random() < 0.5:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        else:
            mutated = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            raw = bytes(mutated)
        _check(validate_bytes(raw, NOW_MS))


def test_never_raises_on_random_json_values() -> None:
    rng = random.Random(7)
    for _ in range(400):
        value = _random_value(rng)
        _check(validate_object(value, NOW_MS))
        _check(validate_bytes(as_bytes(value), NOW_MS))


def test_never_raises_on_random_field_values() -> None:
    rng = random.Random(99)
    names = [
        "event_id",
        "type",
        "timestamp",
        "anonymous_id",
        "user_id",
        "campaign_id",
        "ad_id",
        "url",
        "referrer",
        "user_agent",
        "ip",
        "revenue",
        "properties",
        "traits",
    ]
    accepted = 0
    for _ in range(400):
        obj = event(type=rng.choice(["impression", "click", "conversion", "page_view"]))
        for name in rng.sample(names, rng.randrange(1, 3)):
            obj[name] = _random_value(rng)
        result = validate_object(obj, NOW_MS)
        _check(result)
        accepted += isinstance(result, Event)
    assert 0 < accepted < 400, "the mutations exercise both outcomes"
