"""Hostile input, property-based: the validator and the ``POST /collect`` body parser.

Whatever the bytes, ``validate_bytes`` and ``parse_body`` answer (an event or a
refusal with one of the contract's reasons) and never raise; what they accept
can travel on (re-validated, encoded into an ``events.valid`` micro-batch) and
comes out the same; no accepted event holds a whole IP address.

Expectations are computed here, from the contract, not by the project's code.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dmp_faust.domain.batches import decode_valid, encode_batch
from dmp_faust.domain.collect import BodyTooLarge, parse_body
from dmp_faust.domain.events import Event, Rejection, validate_bytes, validate_object

# The documented list (docs/API.md), written out here rather than imported.
CONTRACT_REASONS = {
    "malformed_json",
    "not_an_object",
    "too_large",
    "missing_field",
    "bad_type",
    "unknown_type",
    "bad_timestamp",
    "future_timestamp",
    "too_old",
    "field_too_long",
}
NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TOLERANCE_MS = 5 * 60_000
LIMIT = 64 * 1024
EPOCH = datetime(1970, 1, 1)
FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
TYPES = ("page_view", "impression", "click", "conversion", "identify")
ID_FIELDS = ("event_id", "anonymous_id", "user_id", "campaign_id")
TEXT_FIELDS = ("ad_id", "url", "referrer", "user_agent", "ip")
# The longest free text that reaches a parser (the contract's limits, in characters).
TEXT_LIMITS = {"url": 8192, "referrer": 8192, "user_agent": 1024}
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=128)
int64 = st.integers(-(2**63), 2**64 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers() | finite | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
# Free-form objects whose integers are those msgpack carries.
free_scalars = st.none() | st.booleans() | int64 | finite | text
free_objects = st.dictionaries(
    text,
    st.recursive(
        free_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)
addresses = (
    st.ip_addresses()
    | st.ip_addresses(network="2002::/16")  # 6to4: an IPv4 address in bits 16-47
    | st.ip_addresses(network="::ffff:0:0/96")  # IPv4-mapped
)
ip_texts = addresses.map(str) | st.sampled_from(["", "  ", "not-an-ip", "1.2.3.4:80"])
past_ms = st.integers(FIRST_MS, NOW_MS + TOLERANCE_MS)
wrong_for_text = (
    st.booleans()
    | st.integers()
    | finite
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(text, json_scalars, max_size=3)
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(TYPES))
    body: dict[str, Any] = {
        "event_id": draw(ids),
        "type": kind,
        "timestamp": draw(past_ms | past_ms.map(rfc3339_utc)),
    }
    who = draw(st.sampled_from(["anonymous_id", "user_id", "both"]))
    if who in ("anonymous_id", "both"):
        body["anonymous_id"] = draw(ids)
    if who in ("user_id", "both"):
        body["user_id"] = draw(ids)
    if kind in ("impression", "click", "conversion"):
        body["campaign_id"] = draw(ids)
    for name in TEXT_FIELDS:
        if draw(st.booleans()):
            body[name] = draw(ip_texts if name == "ip" else text)
    if draw(st.booleans()):
        body["revenue"] = draw(st.integers(0, 10**15) | st.floats(0, 1e15))
    for name in ("properties", "traits"):
        if draw(st.booleans()):
            body[name] = draw(free_objects)
    return body


def rfc3339(moment: datetime, sep: str = "T") -> str:
    """``YYYY-MM-DD<sep>hh:mm:ss`` (strftime does not zero-pad years before 1000)."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}{sep}"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


def rfc3339_utc(ms: int) -> str:
    moment = EPOCH + timedelta(milliseconds=ms)
    return rfc3339(moment) + f".{moment.microsecond // 1000:03d}Z"


def dumps(obj: Any) -> bytes:
    """Encode with the standard library, independently of the project's codec."""
    return json.dumps(obj, ensure_ascii=False).encode()


def expected_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    moment = datetime.fromisoformat(value[:-1])
    return (moment - EPOCH) // timedelta(milliseconds=1)


def rejection(result: Event | Rejection) -> Rejection:
    assert isinstance(result, Rejection), f"expected a refusal, got {result!r}"
    assert result.reason in CONTRACT_REASONS, result
    assert result.detail, "a refusal always explains itself"
    return result


# --- whatever the bytes ------------------------------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_get_an_answer_never_an_exception(raw: bytes) -> None:
    result = validate_bytes(raw, NOW_MS)
    if isinstance(result, Rejection):
        assert result.reason in CONTRACT_REASONS and result.detail
    for error in parse_body(raw, NOW_MS, LIMIT, 500).errors:
        assert error["reason"] in CONTRACT_REASONS and error["detail"]


@FAST
@given(json_values)
def test_any_json_value_gets_a_contract_reason(value: Any) -> None:
    result = validate_bytes(dumps(value), NOW_MS)
    if not isinstance(value, dict):
        assert rejection(result).reason == "not_an_object"
    elif isinstance(result, Rejection):
        assert rejection(result).reason != "not_an_object"


@FAST
@given(st.lists(json_values | valid_events(), max_size=8))
def test_any_batch_gets_one_answer_per_element(batch: list[Any]) -> None:
    collected = parse_body(dumps({"batch": batch}), NOW_MS, LIMIT, 500)
    assert collected.received == len(batch)
    indexes = [error["index"] for error in collected.errors]
    assert indexes == sorted(set(indexes)) and all(0 <= i < len(batch) for i in indexes)
    for error in collected.errors:
        assert error["reason"] in CONTRACT_REASONS and error["detail"]
    for event, raw in collected.accepted:
        assert validate_bytes(raw, NOW_MS) == event


# --- what is accepted goes on unchanged -----------------------------------------------


@FAST
@given(valid_events())
def test_a_valid_event_is_accepted_and_stable(body: dict[str, Any]) -> None:
    event = validate_bytes(dumps(body), NOW_MS)
    assert isinstance(event, Event), event
    assert event.ts == expected_ms(body["timestamp"])
    assert (event.event_id, event.type) == (body["event_id"], body["type"])
    assert event.properties == body.get("properties")
    assert validate_object(body, NOW_MS) == event
    # Re-validated from what it became, it stays the same event.
    again = msgspec.to_builtins(event)
    again["timestamp"] = again.pop("ts")
    assert validate_bytes(msgspec.json.encode(again), NOW_MS) == event
    # And the events.valid micro-batch carries it intact.
    assert decode_valid(encode_batch([event, event])) == [event, event]


@FAST
@given(valid_events(), st.integers(2**64, 10**40) | st.integers(-(10**40), -(2**63) - 1))
def test_an_integer_msgpack_cannot_carry_is_refused_not_accepted(
    body: dict[str, Any], huge: int
) -> None:
    """An accepted event must fit an ``events.valid`` batch: a 30-digit integer in
    ``properties`` once passed validation and then crashed the validate agent."""
    body["properties"] = {"n": [1, {"deep": huge}]}
    assert rejection(validate_bytes(dumps(body), NOW_MS)).reason == "bad_type"
    collected = parse_body(dumps({"batch": [body]}), NOW_MS, LIMIT, 500)
    assert [e["reason"] for e in collected.errors] == ["bad_type"] and not collected.accepted


@pytest.mark.parametrize("depth", range(985, 1005))
def test_nesting_the_validator_accepts_is_nesting_the_batch_codec_carries(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = (
        '{"event_id":"n","type":"page_view","timestamp":0,"anonymous_id":"a",'
        f'"properties":{{"p":{nested}}}}}'
    ).encode()
    result = validate_bytes(raw, NOW_MS)
    if isinstance(result, Event):
        assert decode_valid(encode_batch([result])) == [result]
    else:
        assert result.reason == "malformed_json"


# --- IP addresses ------------------------------------------------------------------


def embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[int]:
    """IPv4 addresses an address carries whole: itself, IPv4-mapped, 6to4."""
    if isinstance(address, ipaddress.IPv4Address):
        return [int(address)]
    found = [address.ipv4_mapped, address.sixtofour]
    return [int(v4) for v4 in found if v4 is not None]


@FAST
@given(addresses, st.sampled_from(["{}", " {} ", "{}\n"]), valid_events())
def test_no_accepted_event_holds_a_whole_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, form: str, body: dict[str, Any]
) -> None:
    body["ip"] = form.format(address)
    event = validate_bytes(dumps(body), NOW_MS)
    assert isinstance(event, Event) and event.ip is not None
    kept = ipaddress.ip_address(event.ip)
    if isinstance(kept, ipaddress.IPv4Address):
        assert int(kept) & 0xFF == 0
        assert int(kept) >> 8 in [v4 >> 8 for v4 in embedded_ipv4(address)]
    else:
        assert int(kept) & ((1 << 80) - 1) == 0, "IPv6 keeps its /48 at most"
        assert (int(kept) ^ int(address)) >> 88 == 0, "and the /40 at least"
    for v4 in embedded_ipv4(kept):
        assert v4 & 0xFF == 0, f"{event.ip} still holds a whole IPv4 address"


@pytest.mark.parametrize(
    ("ip", "kept"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("::ffff:203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),
        ("2002:cb00:714d::1", "2002:cb00:7100::"),  # 6to4 of 203.0.113.77
        ("fe80::1%eth0", "fe80::"),
        ("1.2.3.4:80", None),
        ("1.2.3", None),
        ("", None),
    ],
)
def test_ip_truncation_table(ip: str, kept: str | None) -> None:
    body = {"event_id": "e", "type": "page_view", "timestamp": 0, "user_id": "u", "ip": ip}
    event = validate_bytes(dumps(body), NOW_MS)
    assert isinstance(event, Event) and event.ip == kept


# --- wrong types ------------------------------------------------------------------


@FAST
@given(valid_events(), st.sampled_from((*ID_FIELDS, *TEXT_FIELDS, "type")), wrong_for_text)
def test_a_text_field_of_another_type_is_bad_type(
    body: dict[str, Any], name: str, value: Any
) -> None:
    body[name] = value
    assert rejection(validate_bytes(dumps(body), NOW_MS)).reason == "bad_type"


@FAST
@given(
    valid_events(),
    st.sampled_from(["revenue", "properties", "traits"]),
    text | st.booleans() | st.lists(json_scalars, max_size=2),
)
def test_a_number_or_object_field_of_another_type_is_bad_type(
    body: dict[str, Any], name: str, value: Any
) -> None:
    body[name] = value
    assert rejection(validate_bytes(dumps(body), NOW_MS)).reason == "bad_type"


@FAST
@given(valid_events(), st.sampled_from(["event_id", "type", "timestamp"]), st.booleans())
def test_a_required_field_absent_or_null_is_missing_field(
    body: dict[str, Any], name: str, as_null: bool
) -> None:
    if as_null:
        body[name] = None
    else:
        del body[name]
    assert rejection(validate_bytes(dumps(body), NOW_MS)).reason == "missing_field"


@FAST
@given(valid_events(), st.integers(129, 400), st.sampled_from(ID_FIELDS))
def test_an_id_over_128_characters_is_bad_type(body: dict[str, Any], n: int, name: str) -> None:
    body[name] = "é" * n
    assert rejection(validate_bytes(dumps(body), NOW_MS)).reason == "bad_type"
    body[name] = "é" * 128
    assert isinstance(validate_bytes(dumps(body), NOW_MS), Event)


@FAST
@given(
    valid_events(),
    st.booleans()
    | finite
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(text, st.integers(), max_size=2)
    | text.filter(lambda s: not s[:1].isdigit()),
)
def test_a_timestamp_of_another_type_is_bad_timestamp(body: dict[str, Any], value: Any) -> None:
    body["timestamp"] = value
    assert rejection(validate_bytes(dumps(body), NOW_MS)).reason == "bad_timestamp"


# --- timestamps at the edges ----------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "outcome"),
    [
        ("0", 0),
        ("-1", -1),
        (str(FIRST_MS), FIRST_MS),
        (str(FIRST_MS - 1), "bad_timestamp"),
        (str(NOW_MS + TOLERANCE_MS), NOW_MS + TOLERANCE_MS),
        (str(NOW_MS + TOLERANCE_MS + 1), "future_timestamp"),
        (str(LAST_MS), "future_timestamp"),
        (str(LAST_MS + 1), "bad_timestamp"),
        (str(2**63), "bad_timestamp"),
        (str(2**64), "bad_timestamp"),
        ("1" + "0" * 40, "bad_timestamp"),
        ("-" + "9" * 40, "bad_timestamp"),
        ("1700000000000.0", "bad_timestamp"),
        ("1.7e12", "bad_timestamp"),
        ("1e400", "malformed_json"),
        ("NaN", "malformed_json"),
        ("Infinity", "malformed_json"),
        ("-Infinity", "malformed_json"),
        ("true", "bad_timestamp"),
        ('"1700000000000"', "bad_timestamp"),
        ('"2023-11-14T22:13:20Z"', NOW_MS),
        ('"2023-11-14t22:13:20.5z"', NOW_MS + 500),
        ('"2023-11-14 22:13:20-00:00"', NOW_MS),
        ('"2023-11-15T09:58:20+11:45"', NOW_MS),
        ('"2023-11-14T09:13:20.999999999-13:00"', NOW_MS + 999),
        ('"2023-11-14T22:13:20"', "bad_timestamp"),
        ('"2023-11-14T22:13:20+24:00"', "bad_timestamp"),
        ('"2023-11-14T22:13:20+0530"', "bad_timestamp"),
        ('"2023-02-30T00:00:00Z"', "bad_timestamp"),
        ('"1970-01-01T00:00:00Z"', 0),
        ('"0001-01-01T00:00:00Z"', FIRST_MS),
        ('"0001-01-01T00:00:00+00:01"', "bad_timestamp"),
        ('"0000-12-31T23:59:59Z"', "bad_timestamp"),
        ('"9999-12-31T23:59:59.999Z"', "future_timestamp"),
        ('"9999-12-31T23:59:59-00:01"', "bad_timestamp"),
        ('"10000-01-01T00:00:00Z"', "bad_timestamp"),
        ('"' + "2023-11-14T22:13:20Z" * 10 + '"', "bad_timestamp"),
    ],
)
def test_timestamp_edges(literal: str, outcome: int | str) -> None:
    raw = f'{{"event_id":"t","type":"page_view","user_id":"u","timestamp":{literal}}}'.encode()
    result = validate_bytes(raw, NOW_MS)
    if isinstance(outcome, int):
        assert isinstance(result, Event) and result.ts == outcome, result
    else:
        assert rejection(result).reason == outcome


@FAST
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    st.sampled_from("Tt "),
    st.integers(0, 9),
)
def test_rfc3339_with_any_offset_is_the_instant_it_names(
    local: datetime, offset_min: int, sep: str, digits: int
) -> None:
    sign = "+" if offset_min >= 0 else "-"
    zone = (
        "Z" if offset_min == 0 else f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    )
    fraction = f"{local.microsecond:06d}000"[:digits]
    text_ts = rfc3339(local, sep) + (f".{fraction}" if digits else "") + zone
    body = {"event_id": "t", "type": "page_view", "user_id": "u", "timestamp": text_ts}
    result = validate_bytes(dumps(body), LAST_MS)  # a clock at the end of time: nothing is future
    truncated = local.replace(microsecond=int(f"{fraction:0<6}"[:6]))
    try:
        instant = truncated - timedelta(minutes=offset_min)
    except OverflowError:
        assert rejection(result).reason == "bad_timestamp"
        return
    assert isinstance(result, Event), (text_ts, result)
    assert result.ts == (instant - EPOCH) // timedelta(milliseconds=1)


# --- sizes, nesting, numbers ----------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes."""
    head = b'{"event_id":"big","type":"page_view","timestamp":0,"user_id":"u","ad_id":"'
    body = head + b"x" * (size - len(head) - 2) + b'"}'
    assert len(body) == size
    return body


def test_exactly_64_kib_is_accepted_and_one_byte_more_is_too_large() -> None:
    assert isinstance(validate_bytes(padded(LIMIT), NOW_MS), Event)
    assert rejection(validate_bytes(padded(LIMIT + 1), NOW_MS)).reason == "too_large"
    assert not parse_body(padded(LIMIT), NOW_MS, LIMIT, 500).errors
    with pytest.raises(BodyTooLarge):
        parse_body(padded(LIMIT + 1), NOW_MS, LIMIT, 500)
    # Inside a batch the limit applies to each event, refused by index.
    batch = b'{"batch":[' + padded(LIMIT) + b"," + padded(LIMIT + 1) + b"]}"
    collected = parse_body(batch, NOW_MS, LIMIT, 500)
    assert [(e["index"], e["reason"]) for e in collected.errors] == [(1, "too_large")]
    assert len(collected.accepted) == 1


@FAST
@given(
    valid_events(),
    st.sampled_from(sorted(TEXT_LIMITS)),
    st.integers(-3, 20_000),
    st.sampled_from(["x", "é", "\U0001d522"]),
)
def test_free_text_over_its_limit_is_field_too_long(
    body: dict[str, Any], name: str, over: int, char: str
) -> None:
    """Counted in characters, whatever their bytes; at the limit it is still accepted."""
    body[name] = char * (TEXT_LIMITS[name] + over)
    raw = dumps(body)
    assume(len(raw) <= LIMIT)
    result = validate_bytes(raw, NOW_MS)
    if over <= 0:
        assert isinstance(result, Event) and getattr(result, name) == body[name]
        return
    assert rejection(result).reason == "field_too_long"
    assert name in result.detail
    collected = parse_body(dumps({"batch": [body, {**body, name: "ok"}]}), NOW_MS, LIMIT, 500)
    assert [(e["index"], e["reason"]) for e in collected.errors] == [(0, "field_too_long")]
    assert len(collected.accepted) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,
        b'{"event_id":"x","properties":' + b'{"a":' * 50_000 + b"}" * 50_000 + b"}",
        b'{"batch":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["arrays", "objects", "unclosed", "in-properties", "in-batch"],
)
def test_deep_nesting_is_malformed_json_not_a_recursion_error(raw: bytes) -> None:
    assert rejection(validate_bytes(raw, NOW_MS)).reason == "too_large"
    assert rejection(validate_bytes(raw, NOW_MS, max_bytes=10**7)).reason == "malformed_json"
    collected = parse_body(raw, NOW_MS, LIMIT, 500)
    assert [e["reason"] for e in collected.errors] == ["malformed_json"]


@pytest.mark.parametrize(
    ("revenue", "reason"),
    [
        ("1e15", None),
        ("1000000000000001", "bad_type"),
        ("1e308", "bad_type"),
        ("1" + "0" * 400, "bad_type"),
        ("-0.0", None),
        ("-1e-300", "bad_type"),
        ("1e400", "malformed_json"),
        ("NaN", "malformed_json"),
        ("true", "bad_type"),
        ('"12.5"', "bad_type"),
    ],
)
def test_huge_and_odd_revenue(revenue: str, reason: str | None) -> None:
    raw = (
        '{"event_id":"r","type":"conversion","timestamp":0,"user_id":"u",'
        f'"campaign_id":"c","revenue":{revenue}}}'
    ).encode()
    result = validate_bytes(raw, NOW_MS)
    if reason is None:
        assert isinstance(result, Event), result
    else:
        assert rejection(result).reason == reason


@FAST
@given(st.binary(min_size=1, max_size=40), valid_events())
def test_non_utf8_bytes_inside_an_event_are_malformed_json(
    junk: bytes, body: dict[str, Any]
) -> None:
    assume(not _is_utf8(junk))
    body["url"] = "<>"
    raw = dumps(body).replace(b"<>", junk.replace(b'"', b"").replace(b"\\", b""))
    assume(not _is_utf8(raw))
    assert rejection(validate_bytes(raw, NOW_MS)).reason == "malformed_json"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FAST
@given(valid_events(), st.integers(0, 400))
def test_a_truncated_event_is_malformed_json(body: dict[str, Any], cut: int) -> None:
    raw = dumps(body)
    assert rejection(validate_bytes(raw[: min(cut, len(raw) - 1)], NOW_MS)).reason == (
        "malformed_json"
    )
