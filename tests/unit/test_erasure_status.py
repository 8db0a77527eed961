"""The erasure status table keeps the latest erasures of each partition, no more.

``keep_note`` against a dict standing for one partition of the table: pushed far
past its limit the table holds exactly the latest statuses (the oldest evicted
in the order they were created), whatever was noted; replays change nothing.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from dmp_faust.domain.erasure_status import (
    MAX_ERASURE_STATUSES,
    StatusLog,
    is_erasure_id,
    keep_note,
    log_key,
    read_status,
)
from dmp_faust.domain.identity import ErasureNote, ErasureState

LIMIT = 5
PARTITION = 3


class Table(dict[bytes, bytes]):
    """One partition of the table (a ``put`` of None deletes, as a tombstone does)."""

    def put(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.pop(key, None)
        else:
            self[key] = value


def notes(count: int, seed: int = 0) -> list[ErasureNote]:
    """``count`` erasures, each started, given ids, then done, interleaved at random
    (each in its own order)."""
    rng = random.Random(seed)
    pending = [
        [
            ErasureNote(f"er-{n}", False, [f"{n:02x}"]),
            ErasureNote(f"er-{n}", False, [f"{n + 1:02x}"]),
            ErasureNote(f"er-{n}", True),
        ]
        for n in range(count)
    ]
    out = []
    while any(pending):
        steps = [p for p in pending if p]
        # mostly in order of their start, so that most are done before they expire
        out.append(min(steps, key=lambda p: int(p[0].erasure_id[3:]) + rng.random() * 3).pop(0))
    return out


def kept(table: Table) -> dict[str, ErasureState | None]:
    return {k.decode(): read_status(v) for k, v in table.items() if is_erasure_id(k.decode())}


def run(table: Table, sequence: list[ErasureNote], start: int = 0) -> Table:
    for position, note in enumerate(sequence, start):
        keep_note(table, PARTITION, note, position, LIMIT)
    return table


@pytest.mark.parametrize("seed", range(5))
def test_far_past_the_limit_the_latest_statuses_stay(seed: int) -> None:
    sequence = notes(20 * LIMIT, seed)
    table = run(Table(), sequence)
    created = list(dict.fromkeys(n.erasure_id for n in sequence))  # in order of creation
    latest = created[-LIMIT:]
    assert set(kept(table)) == set(latest)
    assert len(table) == 2 * LIMIT + 1  # each status, its sequence entry, the log
    log = msgspec.msgpack.decode(table[log_key(PARTITION)], type=StatusLog)
    assert (log.next - log.first, log.applied) == (LIMIT, len(sequence) - 1)


@pytest.mark.parametrize("seed", range(5))
def test_replays_change_nothing(seed: int) -> None:
    sequence = notes(4 * LIMIT, seed)
    table = run(Table(), sequence)
    before = dict(table)
    again = random.Random(seed).randrange(len(sequence))  # read again from there
    assert run(table, sequence[again:], again) == before


def test_a_status_folds_its_notes_and_a_late_report_of_an_expired_one_is_kept_anew() -> None:
    table = run(Table(), [ErasureNote("er-a", False, ["01"]), ErasureNote("er-a", True)])
    assert kept(table) == {"er-a": ErasureState("erased", ["01"])}
    run(table, [ErasureNote(f"er-{n}", False) for n in range(LIMIT)], start=2)
    assert "er-a" not in kept(table)  # expired: GET /erasures/er-a answers 404
    keep_note(table, PARTITION, ErasureNote("er-a", True), 1, LIMIT)  # read again: stays out
    assert "er-a" not in kept(table)
    keep_note(table, PARTITION, ErasureNote("er-a", True), 99, LIMIT)  # a late report
    assert kept(table)["er-a"] == ErasureState("erased", []) and len(kept(table)) == LIMIT


def test_the_default_limit_and_the_keys_that_are_not_erasure_ids() -> None:
    assert MAX_ERASURE_STATUSES == 4096
    assert is_erasure_id("er-5f0c") and not is_erasure_id("#log:3")
    assert not is_erasure_id("#seq:3:0")
