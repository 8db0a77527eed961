"""Deciding on each dead letter for ``dmp-faust dlq replay`` (dmp_faust.domain.replay)."""

from __future__ import annotations

import base64
import json

import pytest

from dmp_faust.domain.deadletter import Source, dead_letter
from dmp_faust.domain.events import Rejection
from dmp_faust.domain.replay import Report, Selection, decide

NOW = 1_614_600_000_000  # 2021-03-01T12:00:00Z
LIMIT, TOLERANCE = 64 * 1024, 5 * 60_000
GOOD = json.dumps(
    {"event_id": "e-1", "type": "page_view", "timestamp": NOW, "anonymous_id": "a-1"}
).encode()
BAD = b'{"event_id": "e-2", "type": "page_view"}'  # no timestamp, no id


def letter(raw: bytes, reason: str = "bad_type", at: int = NOW - 60_000) -> bytes:
    return dead_letter(
        Rejection(reason, "as refused then"), raw, Source("dmp.events.raw", 0, 7), at
    )


def test_a_dead_letter_that_passes_today_is_replayed_whole() -> None:
    decision = decide(letter(GOOD), Selection(), NOW, LIMIT, TOLERANCE)
    assert (decision.action, decision.reason, decision.raw) == ("replay", "bad_type", GOOD)


def test_one_that_still_fails_stays_with_todays_reason() -> None:
    decision = decide(letter(BAD, "missing_field"), Selection(), NOW, LIMIT, TOLERANCE)
    assert (decision.action, decision.now_reason) == ("refused", "missing_field")


@pytest.mark.parametrize(
    ("selection", "action"),
    [
        (Selection(reasons=("bad_type",)), "replay"),
        (Selection(reasons=("too_old", "malformed_json")), "skip"),
        (Selection(since_ms=NOW - 60_000), "replay"),  # since is inclusive
        (Selection(since_ms=NOW - 59_999), "skip"),
        (Selection(until_ms=NOW - 60_000), "skip"),  # until is exclusive
        (Selection(until_ms=NOW - 59_999), "replay"),
    ],
)
def test_reason_and_time_select(selection: Selection, action: str) -> None:
    assert decide(letter(GOOD), selection, NOW, LIMIT, TOLERANCE).action == action


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not json", b'{"reason": "x"}', letter(GOOD).replace(b'"raw":"', b'"raw":"!!')],
)
def test_records_that_are_no_dead_letter_are_unreadable(value: bytes | None) -> None:
    assert decide(value, Selection(), NOW, LIMIT, TOLERANCE).action == "unreadable"


def test_an_event_still_in_the_future_is_refused_again() -> None:
    future = GOOD.replace(str(NOW).encode(), str(NOW + 3_600_000).encode())
    decision = decide(letter(future, "future_timestamp"), Selection(), NOW, LIMIT, TOLERANCE)
    assert decision.now_reason == "future_timestamp"
    later = NOW + 3_600_000
    assert (
        decide(letter(future, "future_timestamp"), Selection(), later, LIMIT, TOLERANCE).action
        == "replay"
    )


def test_until_must_be_after_since() -> None:
    with pytest.raises(ValueError, match="--until"):
        Selection(since_ms=NOW, until_ms=NOW)


def test_the_report_counts_by_the_reason_each_had() -> None:
    report = Report()
    selection = Selection(reasons=("bad_type", "missing_field"))
    for value in (
        letter(GOOD),
        letter(GOOD),
        letter(BAD, "missing_field"),
        letter(GOOD, "too_old"),
        b"x",
    ):
        report.add(decide(value, selection, NOW, LIMIT, TOLERANCE))
    assert report.read == 5
    assert (report.total("replay"), report.total("refused"), report.total("skip")) == (2, 1, 1)
    assert report.total("unreadable") == 1
    lines = report.lines(dry_run=True)
    assert "would replay" in lines[0]
    row = next(line for line in lines if line.startswith("missing_field"))
    assert row.split()[:5] == ["missing_field", "1", "1", "0", "1"]
    assert row.endswith("(now 1 missing_field)")
    assert base64.b64decode(json.loads(letter(GOOD))["raw"]) == GOOD
