"""``POST /collect`` bodies: one event or a batch, partial acceptance, size limits."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from dmp_faust.domain.collect import BodyTooLarge, Collected, parse_body
from dmp_faust.domain.events import Event

NOW_MS = 1_700_000_000_000
MAX_EVENT = 64 * 1024
MAX_BATCH = 500


def event(n: int = 0, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"e-{n}",
        "type": "click",
        "timestamp": NOW_MS - n,
        "anonymous_id": f"anon-{n}",
        "campaign_id": "camp-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not ...}


def body(value: Any) -> bytes:
    return msgspec.json.encode(value)


def parse(raw: bytes, max_event: int = MAX_EVENT, max_batch: int = MAX_BATCH) -> Collected:
    return parse_body(raw, NOW_MS, max_event, max_batch)


def reasons(collected: Collected) -> list[tuple[int, str]]:
    for error in collected.errors:
        assert set(error) == {"index", "reason", "detail"}
        assert isinstance(error["detail"], str) and error["detail"]
    return [(error["index"], error["reason"]) for error in collected.errors]


def test_single_event() -> None:
    raw = (
        b'{"event_id": "e-1", "type": "page_view", "timestamp": "2023-11-14T22:13:00Z",\n'
        b' "user_id": "u-1", "ip": "198.51.100.23"}'
    )
    collected = parse(raw)
    assert collected.errors == []
    assert collected.received == 1
    [(accepted, accepted_raw)] = collected.accepted
    assert isinstance(accepted, Event)
    assert (accepted.event_id, accepted.ts, accepted.ip) == ("e-1", NOW_MS - 20_000, "198.51.100.0")
    assert accepted_raw == raw, "a single event goes on as it was sent"


def test_single_invalid_event() -> None:
    collected = parse(body(event(type="purchase")))
    assert collected.accepted == []
    assert reasons(collected) == [(0, "unknown_type")]
    assert collected.received == 1


def test_batch_with_partial_acceptance() -> None:
    batch = [
        event(0),
        event(1, anonymous_id=...),
        event(2),
        event(3, type="purchase"),
        "not an event",
        event(5, timestamp=NOW_MS + 3_600_000),
        event(6, revenue="12"),
        event(7, type="page_view", campaign_id=...),
    ]
    collected = parse(body({"batch": batch}))
    assert [accepted.event_id for accepted, _ in collected.accepted] == ["e-0", "e-2", "e-7"]
    assert reasons(collected) == [
        (1, "missing_field"),
        (3, "unknown_type"),
        (4, "not_an_object"),
        (5, "future_timestamp"),
        (6, "bad_type"),
    ]
    assert collected.received == len(batch)
    for accepted, raw in collected.accepted:
        assert msgspec.json.decode(raw) == batch[int(accepted.event_id[2:])]


def test_all_invalid_batch() -> None:
    batch = [event(n, timestamp="whenever") for n in range(3)]
    collected = parse(body({"batch": batch}))
    assert collected.accepted == []
    assert reasons(collected) == [(0, "bad_timestamp"), (1, "bad_timestamp"), (2, "bad_timestamp")]
    assert collected.received == 3


def test_empty_batch() -> None:
    collected = parse(body({"batch": []}))
    assert (collected.accepted, collected.errors, collected.received) == ([], [], 0)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"event_id=e-1&type=click", id="form-encoded"),
        pytest.param(b"\xff\xfe\x00", id="binary"),
        pytest.param(b'{"event_id": "\xff", "type": "click"}', id="non-utf8-in-string"),
        pytest.param(b'{"batch": [{"event_id": "\xc3\x28"}]}', id="non-utf8-in-batch"),
        pytest.param(b'{"batch": [' + b"[" * 5000 + b"]" * 5000 + b"]}", id="nested-5000"),
        pytest.param(body(event()) + b"]", id="trailing-garbage"),
        pytest.param(b'{"revenue": NaN}', id="nan"),
    ],
)
def test_malformed_body(raw: bytes) -> None:
    collected = parse(raw)
    assert collected.accepted == []
    assert reasons(collected) == [(0, "malformed_json")]
    assert collected.received == 1


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param({}, id="object"),
        pytest.param("events", id="string"),
        pytest.param(None, id="null"),
        pytest.param(3, id="number"),
    ],
)
def test_batch_not_a_list(batch: Any) -> None:
    collected = parse(body({"batch": batch}))
    assert collected.accepted == []
    assert reasons(collected) == [(0, "bad_type")]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(body([event()]), id="bare-array-of-events"),
        pytest.param(b"null", id="null"),
        pytest.param(b"17", id="number"),
    ],
)
def test_body_not_an_object(raw: bytes) -> None:
    assert reasons(parse(raw)) == [(0, "not_an_object")]


@pytest.mark.parametrize(
    ("size", "too_large"),
    [
        pytest.param(MAX_BATCH - 1, False, id="max-minus-1"),
        pytest.param(MAX_BATCH, False, id="exactly-max"),
        pytest.param(MAX_BATCH + 1, True, id="max-plus-1"),
    ],
)
def test_batch_size_limit(size: int, too_large: bool) -> None:
    raw = body({"batch": [event(n) for n in range(size)]})
    if too_large:
        with pytest.raises(BodyTooLarge):
            parse(raw)
    else:
        collected = parse(raw)
        assert len(collected.accepted) == size
        assert collected.received == size


def _single_of_size(size: int) -> bytes:
    raw = body(event(properties={"pad": ""}))
    padded = body(event(properties={"pad": "x" * (size - len(raw))}))
    assert len(padded) == size
    return padded


@pytest.mark.parametrize(
    ("size", "too_large"),
    [
        pytest.param(MAX_EVENT, False, id="exactly-max"),
        pytest.param(MAX_EVENT + 1, True, id="max-plus-1"),
        pytest.param(4 * MAX_EVENT, True, id="four-times"),
    ],
)
def test_single_event_size_limit(size: int, too_large: bool) -> None:
    raw = _single_of_size(size)
    if too_large:
        with pytest.raises(BodyTooLarge):
            parse(raw)
    else:
        assert len(parse(raw).accepted) == 1


def test_batch_element_over_the_event_limit_is_refused_alone() -> None:
    big = event(1, properties={"pad": "x" * MAX_EVENT})
    collected = parse(body({"batch": [event(0), big, event(2)]}))
    assert [accepted.event_id for accepted, _ in collected.accepted] == ["e-0", "e-2"]
    assert reasons(collected) == [(1, "too_large")]
    assert collected.received == 3


def test_limits_are_parameters() -> None:
    raw = body({"batch": [event(0), event(1), event(2)]})
    with pytest.raises(BodyTooLarge):
        parse(raw, max_batch=2)
    small = parse(raw, max_event=len(body(event(0))) - 1)
    assert reasons(small) == [(0, "too_large"), (1, "too_large"), (2, "too_large")]


def test_errors_are_json_serialisable() -> None:
    collected = parse(body({"batch": [event(0), {"type": 5}]}))
    encoded = msgspec.json.decode(msgspec.json.encode({"errors": collected.errors}))
    assert encoded["errors"][0]["index"] == 1
    assert encoded["errors"][0]["reason"] == "missing_field"
