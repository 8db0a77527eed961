"""The dead-letter record: exactly the contract's shape, with the original bytes in base64."""

from __future__ import annotations

import base64

import msgspec
import pytest

from dmp_faust.domain.deadletter import Source, dead_letter
from dmp_faust.domain.events import Rejection, validate_bytes

NOW_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"event_id": "e-1", "type": "purchase"}', id="json"),
        pytest.param(b"\xff\xfe\x00\x01not utf-8\x80", id="non-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param('{"ip": "203.0.113.77", "name": "Zoë"}'.encode(), id="utf8-personal-data"),
        pytest.param(bytes(range(256)) * 300, id="large-binary"),
    ],
)
def test_dead_letter_shape_and_raw_bytes(raw: bytes) -> None:
    record = dead_letter(
        Rejection("malformed_json", "JSON is malformed"),
        raw,
        Source("dmp.events.raw", 3, 1234567),
        NOW_MS,
    )
    decoded = msgspec.json.decode(record)
    assert decoded == {
        "reason": "malformed_json",
        "detail": "JSON is malformed",
        "raw": base64.b64encode(raw).decode("ascii"),
        "source": {"topic": "dmp.events.raw", "partition": 3, "offset": 1234567},
        "received_at": "2023-11-14T22:13:20.123Z",
    }
    assert base64.b64decode(decoded["raw"], validate=True) == raw


def test_dead_letter_of_a_real_rejection() -> None:
    raw = (
        b'{"event_id": "e-9", "type": "click", "timestamp": "soon", "user_id": "u", '
        b'"campaign_id": "c"}'
    )
    rejection = validate_bytes(raw, NOW_MS)
    assert isinstance(rejection, Rejection)
    decoded = msgspec.json.decode(dead_letter(rejection, raw, Source("t", 0, 0), NOW_MS))
    assert list(decoded) == ["reason", "detail", "raw", "source", "received_at"]
    assert decoded["reason"] == "bad_timestamp"
    assert decoded["detail"] == rejection.detail
    assert base64.b64decode(decoded["raw"]) == raw


@pytest.mark.parametrize(
    ("now_ms", "received_at"),
    [
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param(1_700_000_000_000, "2023-11-14T22:13:20Z", id="whole-second"),
    ],
)
def test_received_at_is_rfc3339(now_ms: int, received_at: str) -> None:
    record = dead_letter(Rejection("too_old", "x"), b"{}", Source("t", 0, 0), now_ms)
    assert msgspec.json.decode(record)["received_at"] == received_at
