"""What ``dmp-faust dlq replay`` does with one dead letter: pure, so it is tested alone.

A dead letter (:mod:`dmp_faust.domain.deadletter`) is selected by its reason
and the time it was refused (``received_at``); its original bytes are
validated again with today's rules. Those that now pass go back to the raw
topic, whole and with their original key, marked as replayed; the intake
then handles them like any raw record (the ``too_old`` check against stream
time included), and de-duplication by event id drops an event replayed
twice. Those that still fail stay where they are, and the report says why.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

import msgspec

from dmp_faust.domain.deadletter import DeadLetter
from dmp_faust.domain.events import Event, validate_bytes
from dmp_faust.domain.timefmt import TimestampError, parse_timestamp

UNREADABLE: Final = "unreadable"  # the record is no dead letter of ours
_DECODER = msgspec.json.Decoder(DeadLetter)


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: any reason when ``reasons`` is empty; ``received_at``
    in ``[since_ms, until_ms)`` (epoch ms; None: open)."""

    reasons: Collection[str] = ()
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and until <= since:
            raise ValueError("--until must be after --since")

    def takes(self, letter: DeadLetter, received_ms: int) -> bool:
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (self.since_ms is None or received_ms >= self.since_ms)
            and (self.until_ms is None or received_ms < self.until_ms)
        )


@dataclass(frozen=True)
class Decision:
    """``replay`` (with the original bytes), ``skip`` (not selected), ``refused`` (fails
    again, with today's reason) or ``unreadable`` (no dead letter)."""

    action: str
    reason: str  # the dead letter's reason (UNREADABLE when there is none)
    raw: bytes = b""
    now_reason: str | None = None


def decide(
    value: bytes | None, selection: Selection, now_ms: int, max_bytes: int, tolerance_ms: int
) -> Decision:
    """What to do with one record of the dead-letter topic."""
    try:
        letter = _DECODER.decode(value or b"")
        received_ms = parse_timestamp(letter.received_at)
        raw = base64.b64decode(letter.raw, validate=True)
    except (msgspec.DecodeError, TimestampError, binascii.Error, ValueError):
        return Decision("unreadable", UNREADABLE)
    if not selection.takes(letter, received_ms):
        return Decision("skip", letter.reason)
    result = validate_bytes(raw, now_ms, max_bytes, tolerance_ms)
    if isinstance(result, Event):
        return Decision("replay", letter.reason, raw)
    return Decision("refused", letter.reason, now_reason=result.reason)


@dataclass
class Report:
    """What a replay did, by the reason each dead letter had."""

    read: int = 0
    by_reason: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, decision: Decision) -> None:
        self.read += 1
        counts = self.by_reason.setdefault(decision.reason, Counter())
        counts[decision.action] += 1
        if decision.now_reason is not None:
            counts[f"refused: {decision.now_reason}"] += 1

    def total(self, action: str) -> int:
        return sum(counts[action] for counts in self.by_reason.values())

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would replay" if dry_run else "replayed"
        rows = [f"{'reason':<20} {'read':>8} {'selected':>9} {verb:>13} {'still refused':>14}"]
        for reason in sorted(self.by_reason):
            counts = self.by_reason[reason]
            read = sum(counts[a] for a in ("replay", "skip", "refused", "unreadable"))
            selected = counts["replay"] + counts["refused"]
            why = sorted(
                (k.removeprefix("refused: "), n)
                for k, n in counts.items()
                if k.startswith("refused: ")
            )
            now = ", ".join(f"{n} {r}" for r, n in why)
            rows.append(
                f"{reason:<20} {read:>8} {selected:>9} {counts['replay']:>13} "
                f"{counts['refused']:>14}" + (f"  (now {now})" if now else "")
            )
        return rows
