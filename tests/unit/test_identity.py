"""Identity stitching: ``identity.handle`` case by case, then its key property.

The property: a user's profile does not depend on the order in which the
partitions of ``profiles.in`` happen to run, nor on replays. A small in-memory
simulator plays the agent (``agents/profiles.py``): one log per partition of
``events.valid`` and of ``profiles.in`` with a reading position each, records
stored as bytes, erased marks under ``erasure_key``, sends (EraseLink and
EraseDone included) appended to the target key's log stamped with the (partition,
offset) of the record handled, and a random scheduler. A crash moves reading
positions back: the same records are read again at their offsets; a crash of
stage 2 re-sends its commands as new records of ``profiles.in`` with the same
source.

In the case-by-case tests every key lives on ``profiles.in`` partition 1 (its
sends are stamped ``FROM_P1``) unless a test says otherwise.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import pytest

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.identity import (
    MAX_HOPS,
    Command,
    Context,
    Erase,
    EraseDone,
    EraseLink,
    ErasureNote,
    ErasureState,
    FoldEvent,
    MergeFragment,
    Outcome,
    command_time,
    decode_erased,
    encode_erased,
    erasure_key,
    handle,
    note_erasure,
    record_state,
    route_event,
)
from dmp_faust.domain.profiles import MINUTE_MS, Profile, ProfileEvent
from dmp_faust.domain.segments import evaluate, load_rules
from dmp_faust.domain.watermarks import Watermarks, source_id

DAY_MS = 24 * 60 * MINUTE_MS
T0 = 28_333_333 * MINUTE_MS  # the start of a minute
RULES = load_rules(None)  # clickers: click >= 1, converters: conversion >= 1, engaged: 5 views
VALID = source_id(0, 2)  # events.valid partition 2, as stage 2 stamps it
FROM_P1 = source_id(1, 1)  # profiles.in partition 1, as this agent stamps its sends
FROM_P2 = source_id(1, 2)
VIEWS = 2  # the source stream of commands sent by views (no source header)
VIEW_P1 = source_id(VIEWS, 1)  # profiles.in partition 2, for a key a test keeps apart from a1's
LATER = (FROM_P1, 99)  # where a command is handled, when the test does not look at it


_commands = msgspec.msgpack.Decoder(Command)


def encode_command(command: Command) -> bytes:
    return msgspec.msgpack.encode(command)


def decode_command(raw: bytes) -> Command:
    decoded: Command = _commands.decode(raw)
    return decoded


def segments_of(profile: Profile) -> frozenset[str]:
    return evaluate(RULES, pf.facts(profile))


def ctx(
    source: tuple[int, int],
    erased: Watermarks | None = None,
    stream_time: int = T0,
    here: tuple[int, int] = LATER,
) -> Context:
    """``source``: the command's source header; ``here``: the profiles.in record handled."""
    return Context(source, here, stream_time, DAY_MS, segments_of, erased)


def http(here: tuple[int, int], erased: Watermarks | None = None) -> Context:
    """The context of an Erase sent by a view: no source header, so its source is its
    offset ``here`` in the stream of view commands of that partition."""
    source = (source_id(VIEWS, here[0] % 1024), here[1])
    return Context(source, here, T0, DAY_MS, segments_of, erased, from_view=True)


_ids = iter(range(1_000_000))


def ev(
    type_: str = "page_view",
    ts: int = T0,
    anon: str | None = "a1",
    user: str | None = None,
    campaign: str | None = None,
    url: str | None = None,
) -> ProfileEvent:
    return ProfileEvent(
        event_id=f"e{next(_ids)}",
        type=type_,
        ts=ts,
        anonymous_id=anon,
        user_id=user,
        campaign_id=campaign,
        url=url,
    )


def run(
    key: str, record: Profile | None, steps: Sequence[tuple[Command, int]], at: int = 0
) -> Profile:
    """Handle ``(command, offset)`` pairs from VALID in order, the i-th at profiles.in
    partition 1, offset ``at + i``; the final record."""
    for i, (command, offset) in enumerate(steps):
        here = (FROM_P1, at + i)
        record = handle(key, record, command, ctx((VALID, offset), here=here)).record
    assert record is not None
    return record


def folds(*events: ProfileEvent) -> list[tuple[Command, int]]:
    return [(route_event(e)[1], 10 + i) for i, e in enumerate(events)]


def snapshot(record: Profile | None) -> bytes | None:
    return None if record is None else pf.to_bytes(record)


def receive(
    key: str,
    record: Profile | None,
    outcome: Outcome,
    here: tuple[int, int],
    at: tuple[int, int] = LATER,
) -> Profile | None:
    """``key``'s record after it handled the sends of ``outcome`` (handled at ``here``),
    stamped as the agent stamps them; ``at``: where the first of them is handled."""
    for i, (target, command) in enumerate(outcome.sends):
        assert target == key
        record = handle(key, record, command, ctx(here, here=(at[0], at[1] + i))).record
    return record


# --- routing and the wire -------------------------------------------------------------


@pytest.mark.parametrize(
    ("anon", "user", "key", "resolve"),
    [
        pytest.param("a1", None, "a1", True, id="anonymous"),
        pytest.param("a1", "u1", "a1", True, id="both-ids"),
        pytest.param(None, "u1", "u1", False, id="user-only"),
    ],
)
def test_route_event(anon: str | None, user: str | None, key: str, resolve: bool) -> None:
    event = ev(anon=anon, user=user)
    assert route_event(event) == (key, FoldEvent(event, resolve=resolve))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(FoldEvent(ev(campaign="c1"), resolve=True), id="fold"),
        pytest.param(MergeFragment(Profile(profile_id="u1", frequency={"c": {T0: 1}})), id="merge"),
        pytest.param(Erase(), id="erase"),
        pytest.param(EraseLink("u1"), id="erase-link"),
        pytest.param(EraseDone("a1"), id="erase-done"),
        pytest.param(FoldEvent(ev(), resolve=False, path=["a1", "u1"]), id="fold-with-path"),
        pytest.param(MergeFragment(Profile(profile_id="u1"), path=["a1"]), id="merge-with-path"),
        pytest.param(Erase(T0, "er-1", ["a1"]), id="erase-with-cutoff"),
        pytest.param(EraseLink("u1", T0, "er-1"), id="erase-link-with-cutoff"),
        pytest.param(EraseDone("a1", "er-1"), id="erase-done-of-an-erasure"),
        pytest.param(ErasureNote("er-1", True, ["ab" * 32]), id="erasure-note"),
    ],
)
def test_commands_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


def test_commands_written_before_paths_and_cutoffs_still_decode() -> None:
    """Records of profiles.in written by the previous version (no path, no cutoff)."""
    old = msgspec.msgpack.encode({"type": "erase"})
    assert decode_command(old) == Erase(None, "", [])
    old_link = msgspec.msgpack.encode({"type": "erase_link", "user_id": "u1"})
    assert decode_command(old_link) == EraseLink("u1", None, "")


@pytest.mark.parametrize("before_ms", [None, T0, 0])
def test_erased_values_round_trip_and_old_ones_have_no_cutoff(before_ms: int | None) -> None:
    marks = Watermarks({VALID: 14, FROM_P1: 4})
    assert decode_erased(encode_erased(marks, before_ms)) == (marks, before_ms)
    assert decode_erased(marks.to_bytes()) == (marks, None)  # a value of the previous version


def test_erasure_status_adds_ids_and_erased_is_final() -> None:
    started = note_erasure(None, ErasureNote("er-1", False, ["b", "a"]))
    assert started == ErasureState("erasing", ["a", "b"])
    done = note_erasure(started, ErasureNote("er-1", True, []))
    assert done == ErasureState("erased", ["a", "b"])
    assert note_erasure(done, ErasureNote("er-1", False, ["c"])) == ErasureState(
        "erased", ["a", "b", "c"]
    )


def test_a_command_that_closes_a_cycle_stops_at_its_smallest_id() -> None:
    """x is linked to y, y to x. A fragment that left x and came back through y is merged
    at x, which cuts its link and becomes the root (a new canonical profile); at y, a
    command that came round from y is sent on, since y is not the smallest."""
    x = Profile(profile_id="x", ids=["x", "y"], counts={"identify": 1}, merged_into="y")
    x.linked_at, x.applied = 0, {VALID: 1}
    back = MergeFragment(Profile(profile_id="y", ids=["x", "y"], counts={"identify": 1}))
    back.path = ["x", "y"]
    cut = handle("x", x, back, ctx((FROM_P2, 3)))
    assert cut.record is not None
    assert (cut.record.merged_into, cut.record.linked_at) == (None, 0)
    assert (cut.record.counts, cut.record.ids) == ({"identify": 1}, ["x", "y"])
    assert cut.record.applied == {VALID: 1, FROM_P2: 3}  # its own marks are kept
    assert (cut.sends, cut.profiles_delta) == ([], 1)
    y = Profile(profile_id="y", ids=["y", "x"], counts={"identify": 1}, merged_into="x")
    y.linked_at = 0
    around = MergeFragment(Profile(profile_id="x", counts={"click": 1}), path=["y", "x"])
    sent_on = handle("y", y, around, ctx((FROM_P1, 5)))
    assert sent_on.sends == [("x", MergeFragment(around.fragment, path=["y", "x", "y"]))]
    # a later link request at the cut root never links it again: it goes to its user
    again = handle("x", cut.record, FoldEvent(ev(anon="x", user="y"), True), ctx((VALID, 9)))
    assert again.record is not None and again.record.merged_into is None
    assert [target for target, _ in again.sends] == ["y"]


def test_a_walk_stops_after_max_hops() -> None:
    record = Profile(profile_id="k", ids=["k"], counts={"click": 1}, merged_into="n")
    record.linked_at = 0
    far = FoldEvent(ev(), resolve=False, path=[f"i{n}" for n in range(MAX_HOPS)])
    outcome = handle("k", record, far, ctx((FROM_P1, 5)))
    assert outcome.sends == []
    assert outcome.record is not None and outcome.record.merged_into is None
    assert outcome.record.counts == {"page_view": 1}


def test_erasure_key_is_a_hash_per_namespace() -> None:
    key = erasure_key("app", "u1")
    assert len(key) == 32
    assert b"u1" not in key
    assert key != erasure_key("other", "u1")
    assert key != erasure_key("app", "u2")


# --- folds ----------------------------------------------------------------------------


def test_anonymous_fold() -> None:
    event = ev("click", anon="a1")
    outcome = handle("a1", None, FoldEvent(event, resolve=True), ctx((VALID, 5)))
    assert outcome.write
    assert outcome.sends == []
    assert outcome.entered == ["clickers"]
    assert outcome.profiles_delta == 1
    assert outcome.record == Profile(
        profile_id="a1",
        ids=["a1"],
        first_seen=T0,
        last_seen=T0,
        counts={"click": 1},
        segments=["clickers"],
        applied={VALID: 5},
    )


def test_user_only_fold() -> None:
    key, command = route_event(ev("page_view", anon=None, user="u1", url="/sports/x"))
    outcome = handle(key, None, command, ctx((VALID, 5)))
    assert outcome.record is not None
    assert (outcome.record.profile_id, outcome.record.ids) == ("u1", ["u1"])
    assert outcome.record.interests == {"sports": 1}
    assert (outcome.write, outcome.profiles_delta, outcome.sends) == (True, 1, [])


def test_second_fold_adds_and_is_not_a_new_profile() -> None:
    record = run("a1", None, folds(ev("page_view")))
    outcome = handle("a1", record, FoldEvent(ev("click"), resolve=True), ctx((VALID, 11)))
    assert outcome.record is not None
    assert outcome.record.counts == {"page_view": 1, "click": 1}
    assert outcome.record.applied == {VALID: 11}
    assert (outcome.profiles_delta, outcome.entered, outcome.exited) == (0, ["clickers"], [])


def test_segments_are_entered_once() -> None:
    record = run("a1", None, folds(*(ev("page_view") for _ in range(4))))
    entered = handle("a1", record, FoldEvent(ev(), resolve=True), ctx((VALID, 20)))
    assert entered.entered == ["engaged"]
    assert entered.record is not None
    again = handle("a1", entered.record, FoldEvent(ev(), resolve=True), ctx((VALID, 21)))
    assert (again.entered, again.exited) == ([], [])
    assert again.record is not None
    assert again.record.segments == ["engaged"]


# --- linking --------------------------------------------------------------------------


def test_link_with_no_prior_anonymous_record() -> None:
    link = ev("identify", anon="a1", user="u1")
    outcome = handle("a1", None, FoldEvent(link, resolve=True), ctx((VALID, 7), here=(FROM_P1, 3)))
    record = outcome.record
    assert record is not None
    assert record.merged_into == "u1"
    assert record.linked_at == 3  # the offset of the linking record
    assert record.applied == {VALID: 7}
    assert record.segments == []
    assert (outcome.write, outcome.profiles_delta, outcome.exited) == (True, 0, [])
    assert outcome.sends == [
        (
            "u1",
            MergeFragment(
                Profile(
                    profile_id="u1",
                    ids=["a1", "u1"],
                    first_seen=T0,
                    last_seen=T0,
                    counts={"identify": 1},
                )
            ),
        )
    ]


LINK_AT = (FROM_P1, 4)  # where linked_record()'s link is handled: its merge's source


def linked_record() -> tuple[Profile, Outcome]:
    """a1 saw two clicks, a page view and an impression (VALID 10-13, handled at
    profiles.in P1:0-3), then the link to u1 (VALID 14, handled at P1:4)."""
    record = run(
        "a1",
        None,
        folds(
            ev("click", T0 + 10),
            ev("click", T0 + 20),
            ev("page_view", T0 + 30, url="/sports/x"),
            ev("impression", T0 + 40, campaign="c1"),
        ),
    )
    link = ev("identify", T0 + 50, anon="a1", user="u1")
    outcome = handle("a1", record, FoldEvent(link, resolve=True), ctx((VALID, 14), here=LINK_AT))
    assert outcome.record is not None
    return outcome.record, outcome


def test_link_after_anonymous_events_freezes_and_sends_everything() -> None:
    record, outcome = linked_record()
    assert record.merged_into == "u1"
    assert record.linked_at == LINK_AT[1]
    assert record.segments == []
    assert record.applied == {VALID: 14}
    assert record.forwarded == {}
    assert (outcome.write, outcome.exited, outcome.entered) == (True, ["clickers"], [])
    assert outcome.profiles_delta == -1
    assert len(outcome.sends) == 1
    target, command = outcome.sends[0]
    assert target == "u1"
    assert isinstance(command, MergeFragment)
    assert command.fragment == Profile(
        profile_id="u1",
        ids=["a1", "u1"],
        first_seen=T0 + 10,
        last_seen=T0 + 50,
        counts={"click": 2, "page_view": 1, "impression": 1, "identify": 1},
        interests={"sports": 1},
        frequency={"c1": {T0: 1}},
    )


def test_merge_fragment_creates_the_user_profile() -> None:
    _, outcome = linked_record()
    merge = outcome.sends[0][1]
    created = handle("u1", None, merge, ctx(LINK_AT))
    user = created.record
    assert user is not None
    assert (created.write, created.profiles_delta, created.entered) == (True, 1, ["clickers"])
    assert user.profile_id == "u1"
    assert sorted(user.ids) == ["a1", "u1"]
    assert user.counts == {"click": 2, "page_view": 1, "impression": 1, "identify": 1}
    assert user.applied == {FROM_P1: 4}
    assert user.merged_into is None


def test_merge_fragment_adds_to_an_existing_user() -> None:
    user = run("u1", None, folds(ev("page_view", T0 + 5, anon=None, user="u1", url="/news")))
    _, outcome = linked_record()
    merged = handle("u1", user, outcome.sends[0][1], ctx(LINK_AT))
    assert merged.record is not None
    assert merged.record.counts == {"page_view": 2, "click": 2, "impression": 1, "identify": 1}
    assert merged.record.interests == {"news": 1, "sports": 1}
    assert (merged.record.first_seen, merged.record.last_seen) == (T0 + 5, T0 + 50)
    assert merged.record.applied == {VALID: 10, FROM_P1: 4}
    assert merged.profiles_delta == 0
    replay = handle("u1", merged.record, outcome.sends[0][1], ctx(LINK_AT))
    assert (replay.write, replay.sends) == (False, [])
    assert replay.record is not None
    assert replay.record.counts == merged.record.counts


def without_forwarded(record: Profile | None) -> bytes | None:
    """The record's bytes without its forwarded marks: what forwarding must not change."""
    assert record is not None
    return snapshot(msgspec.structs.replace(record, forwarded={}, forwarded_at=None))


def test_forwarding_after_the_link() -> None:
    record, _ = linked_record()
    before = snapshot(record)
    later = ev("conversion", T0 + 60, anon="a1")
    outcome = handle("a1", record, FoldEvent(later, resolve=True), ctx((VALID, 15)))
    assert outcome.sends == [("u1", FoldEvent(later, resolve=False, path=["a1"]))]
    assert (outcome.profiles_delta, outcome.entered, outcome.exited) == (0, [], [])
    assert outcome.write  # the record keeps what it forwarded
    assert outcome.record is not None
    assert outcome.record.forwarded == {VALID: 15}
    assert outcome.record.forwarded_at == LATER[1]  # where it was forwarded from
    assert outcome.record.applied == {VALID: 14}
    assert without_forwarded(outcome.record) == before


def test_event_with_another_user_after_the_link_goes_to_that_user() -> None:
    record, _ = linked_record()
    before = snapshot(record)
    other = ev("click", T0 + 60, anon="a1", user="u2")
    outcome = handle("a1", record, FoldEvent(other, resolve=True), ctx((VALID, 15)))
    # it counts for u2, without a1, which is u1's: u2's ids do not list it
    counted = msgspec.structs.replace(other, anonymous_id=None)
    assert outcome.sends == [("u2", FoldEvent(counted, resolve=False))]
    assert outcome.record is not None
    assert outcome.record.merged_into == "u1"
    assert outcome.record.forwarded == {VALID: 15}
    assert without_forwarded(outcome.record) == before


def test_event_whose_user_is_its_anonymous_id_folds() -> None:
    outcome = handle("x", None, FoldEvent(ev(anon="x", user="x"), resolve=True), ctx((VALID, 1)))
    assert outcome.record is not None
    assert (outcome.record.merged_into, outcome.sends) == (None, [])


# --- replays --------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [10, 11, 12], ids=["first", "middle", "last"])
def test_replay_covered_by_the_watermark_changes_nothing(offset: int) -> None:
    steps = folds(ev("click"), ev("page_view"), ev("impression", campaign="c1"))
    record = run("a1", None, steps)
    before = snapshot(record)
    command = steps[offset - 10][0]
    outcome = handle("a1", record, command, ctx((VALID, offset), here=(FROM_P1, offset - 10)))
    assert (outcome.write, outcome.sends, outcome.entered, outcome.exited) == (False, [], [], [])
    assert outcome.profiles_delta == 0
    assert snapshot(outcome.record) == before


def test_new_copy_covered_by_the_watermark_changes_nothing() -> None:
    """Stage 2 re-sent a command after its own crash: a new profiles.in record, same source."""
    steps = folds(ev("click"), ev("page_view"))
    record = run("a1", None, steps)
    before = snapshot(record)
    outcome = handle("a1", record, steps[0][0], ctx((VALID, 10), here=(FROM_P1, 7)))
    assert (outcome.write, outcome.sends, outcome.profiles_delta) == (False, [], 0)
    assert snapshot(outcome.record) == before


def test_replay_at_a_user_changes_nothing() -> None:
    steps = folds(ev(anon=None, user="u1"), ev("click", anon=None, user="u1"))
    record = run("u1", None, steps)
    before = snapshot(record)
    outcome = handle("u1", record, steps[0][0], ctx((VALID, 10), here=(FROM_P1, 0)))
    assert (outcome.write, outcome.sends, outcome.profiles_delta) == (False, [], 0)
    assert snapshot(outcome.record) == before


def test_the_linking_record_read_again_resends_the_frozen_state() -> None:
    """A crash may have lost the merge: re-reading the linking record (at its offset, so
    its sends get the first copy's stamp) sends the same frozen state again."""
    record, linked = linked_record()
    before = snapshot(record)
    replayed = ev("click")  # the command's content does not matter: its source does
    outcome = handle(
        "a1", record, FoldEvent(replayed, resolve=True), ctx((VALID, 14), here=LINK_AT)
    )
    assert outcome.sends == [("u1", MergeFragment(record_state(record)))]
    assert outcome.sends == linked.sends
    assert (outcome.write, outcome.profiles_delta, outcome.exited) == (False, 0, [])
    assert snapshot(outcome.record) == before


@pytest.mark.parametrize(
    ("offset", "here"),
    [
        pytest.param(10, (FROM_P1, 0), id="first-fold-re-read"),
        pytest.param(13, (FROM_P1, 3), id="last-fold-re-read"),
        pytest.param(10, (FROM_P1, 20), id="first-fold-new-copy"),
        pytest.param(13, (FROM_P1, 20), id="last-fold-new-copy"),
        pytest.param(14, (FROM_P1, 20), id="the-link-new-copy"),
    ],
)
def test_other_replays_at_a_linked_record_change_nothing(
    offset: int, here: tuple[int, int]
) -> None:
    """Records before the link, read again, are in the merge already; a new copy of any
    of them (or of the link) comes at a later offset, after the merge was sent."""
    record, _ = linked_record()
    before = snapshot(record)
    replayed = ev("click")
    outcome = handle(
        "a1", record, FoldEvent(replayed, resolve=True), ctx((VALID, offset), here=here)
    )
    assert (outcome.write, outcome.sends, outcome.profiles_delta) == (False, [], 0)
    assert (outcome.entered, outcome.exited) == ([], [])
    assert snapshot(outcome.record) == before


def forwarded_once() -> tuple[Profile, Profile, ProfileEvent]:
    """a1 linked to u1 (linked_record), u1 merged its state; then a conversion (VALID 15)
    handled at P1:5 was forwarded to u1. a1's record, u1's record, the conversion."""
    record, linked = linked_record()
    user = receive("u1", None, linked, LINK_AT, at=(FROM_P2, 0))
    conversion = ev("conversion", T0 + 60)
    here = (FROM_P1, 5)
    forward = handle("a1", record, FoldEvent(conversion, True), ctx((VALID, 15), here=here))
    user = receive("u1", user, forward, here, at=(FROM_P2, 1))
    assert forward.record is not None
    assert user is not None
    assert user.counts["conversion"] == 1
    return forward.record, user, conversion


def test_a_forwarded_command_read_again_is_forwarded_again_and_counted_once() -> None:
    """The conversion is re-read by a1 after a crash of the agent, at its position: a1
    forwards it again with the same stamp (the first forward may have been lost); the
    user must not count it twice."""
    record, user, conversion = forwarded_once()
    assert (record.forwarded, record.forwarded_at) == ({VALID: 15}, 5)
    before = snapshot(record)
    here = (FROM_P1, 5)
    again = handle("a1", record, FoldEvent(conversion, True), ctx((VALID, 15), here=here))
    assert again.sends == [("u1", FoldEvent(conversion, resolve=False, path=["a1"]))]
    assert snapshot(again.record) == before  # the forwarded marks were there already
    after = receive("u1", user, again, here, at=(FROM_P2, 2))
    assert after is not None
    assert after.counts["conversion"] == 1


def test_a_forwarded_command_lost_then_read_again_is_counted() -> None:
    """The forward of the conversion was lost in a crash; re-reading it forwards it."""
    record, linked = linked_record()
    user = receive("u1", None, linked, LINK_AT, at=(FROM_P2, 0))
    conversion = ev("conversion", T0 + 60)
    here = (FROM_P1, 5)
    first = handle("a1", record, FoldEvent(conversion, True), ctx((VALID, 15), here=here))
    assert first.record is not None  # written; its send is lost
    again = handle("a1", first.record, FoldEvent(conversion, True), ctx((VALID, 15), here=here))
    after = receive("u1", user, again, here, at=(FROM_P2, 1))
    assert after is not None
    assert after.counts["conversion"] == 1


def test_a_new_copy_of_a_forwarded_command_is_dropped() -> None:
    """Stage 2 re-sent the conversion after its own crash: a new record of profiles.in (a
    later position), the same source. a1 forwarded it already and drops it: a later stamp
    would get past the user's watermark."""
    record, user, conversion = forwarded_once()
    before = snapshot(record)
    here = (FROM_P1, 9)
    again = handle("a1", record, FoldEvent(conversion, True), ctx((VALID, 15), here=here))
    assert (again.write, again.sends, again.profiles_delta) == (False, [], 0)
    assert snapshot(again.record) == before
    after = receive("u1", user, again, here, at=(FROM_P2, 2))
    assert after is not None
    assert after.counts["conversion"] == 1


@pytest.mark.parametrize("lost", [False, True], ids=["merge-arrived", "merge-lost"])
def test_frozen_state_after_a_replay_is_counted_once(lost: bool) -> None:
    """A crash after the link (P1:4) was handled: the agent re-reads a1's partition from
    P1:2. The folds before the link (P1:2 and P1:3) send nothing; the link (P1:4) re-sends
    the frozen state, stamped with its position. Whether the first merge reached u1 or was
    lost, u1 counts the state once."""
    record, linked = linked_record()
    user = None if lost else receive("u1", None, linked, LINK_AT, at=(FROM_P2, 0))
    for position, source in ((2, 12), (3, 13), (4, 14)):
        here = (FROM_P1, position)
        resent = handle("a1", record, FoldEvent(ev(), True), ctx((VALID, source), here=here))
        assert len(resent.sends) == (1 if here == LINK_AT else 0)
        user = receive("u1", user, resent, here, at=(FROM_P2, 1 + position))
    assert user is not None
    assert user.counts == {"click": 2, "page_view": 1, "impression": 1, "identify": 1}
    assert user.applied == {FROM_P1: 4}


def test_lost_sends_of_two_records_do_not_drop_the_earlier_one() -> None:
    """a3 and a1 live on partition 1, both linked to u1 in the end. P1:0 links a3 (its merge
    reaches u1), P1:1 folds a page view into a1, P1:2 has a3 forward a click, P1:3 links a1.
    A crash loses the sends of P1:2 and P1:3 (their records were written), and the agent
    re-reads from P1:1: a1 re-sends its frozen state stamped P1:3, then a3 re-forwards the
    click stamped P1:2. The user must count the click."""
    a3_link = FoldEvent(ev("identify", anon="a3", user="u1"), True)
    a3 = handle("a3", None, a3_link, ctx((VALID, 9), here=(FROM_P1, 0)))
    user = receive("u1", None, a3, (FROM_P1, 0), at=(FROM_P2, 0))
    a1 = run("a1", None, folds(ev("page_view")), at=1)
    click = ev("click", anon="a3")
    forward = handle("a3", a3.record, FoldEvent(click, True), ctx((VALID, 11), here=(FROM_P1, 2)))
    link = ev("identify", anon="a1", user="u1")
    linked = handle("a1", a1, FoldEvent(link, True), ctx((VALID, 12), here=(FROM_P1, 3)))
    assert [target for target, _ in forward.sends + linked.sends] == ["u1", "u1"]  # both lost
    replays = [
        ("a1", linked.record, FoldEvent(ev(), True), (VALID, 10), (FROM_P1, 1)),
        ("a3", forward.record, FoldEvent(click, True), (VALID, 11), (FROM_P1, 2)),
        ("a1", linked.record, FoldEvent(link, True), (VALID, 12), (FROM_P1, 3)),
    ]
    for i, (key, record, command, source, here) in enumerate(replays):
        outcome = handle(key, record, command, ctx(source, here=here))
        user = receive("u1", user, outcome, here, at=(FROM_P2, 1 + i))
    assert user is not None
    assert user.counts == {"identify": 2, "page_view": 1, "click": 1}


# --- erasure --------------------------------------------------------------------------

HTTP = (FROM_P1, 40)  # where an Erase sent by a view is handled (its source: VIEW_P1, 40)


def user_with_two_anonymous_ids() -> Profile:
    user = run("u1", None, folds(ev("click", anon=None, user="u1")))
    for anon, offset in (("a1", 3), ("a2", 4)):
        fragment = Profile(profile_id="u1", ids=[anon, "u1"], counts={"page_view": 1})
        merged = handle("u1", user, MergeFragment(fragment), ctx((FROM_P1, offset))).record
        assert merged is not None
        user = merged
    return user


def erase_done(record: Profile | None, *linked_ids: str, at: int = 50) -> Outcome:
    """u1's outcome after the ``EraseDone`` of each linked id, handled from P1:``at`` on."""
    outcome = Outcome(record)
    for i, linked_id in enumerate(linked_ids):
        here = (FROM_P1, at + i)
        outcome = handle("u1", outcome.record, EraseDone(linked_id), ctx(here, here=here))
    return outcome


def test_erase_at_a_canonical_id_with_linked_ids_waits_for_them() -> None:
    user = user_with_two_anonymous_ids()
    outcome = handle("u1", user, Erase(), http(HTTP))
    assert outcome.write
    assert outcome.sends == [
        ("a1", EraseLink("u1")),
        ("a2", EraseLink("u1")),
    ]
    assert outcome.exited == ["clickers"]
    assert outcome.profiles_delta == -1
    assert outcome.erased is None  # not yet: the record stays until the links are erased
    # no data; what it had seen, and the Erase itself (FROM_P1: 4 -> 40)
    assert outcome.record == Profile(
        profile_id="u1",
        ids=["u1"],
        applied={VALID: 10, FROM_P1: 4, VIEW_P1: 40},
        erasing=["a1", "a2"],
    )
    assert not pf.has_data(outcome.record)


def test_erase_done_of_the_last_linked_id_deletes_the_record() -> None:
    erasing = handle("u1", user_with_two_anonymous_ids(), Erase(), http(HTTP)).record
    first = erase_done(erasing, "a2")
    assert first.record is not None
    assert (first.write, first.erased, first.sends) == (True, None, [])
    assert first.record.erasing == ["a1"]
    assert not pf.has_data(first.record)
    again = erase_done(first.record, "a2")  # a replay of it
    assert (again.write, again.record) == (False, first.record)
    last = erase_done(first.record, "a1")
    assert (last.record, last.write, last.profiles_delta) == (None, True, 0)
    assert last.erased == Watermarks({VALID: 10, FROM_P1: 4, VIEW_P1: 40})


def test_erase_at_a_canonical_id_without_linked_ids_deletes_it_at_once() -> None:
    user = run("u1", None, folds(ev("click", anon=None, user="u1")))
    outcome = handle("u1", user, Erase(), http(HTTP))
    assert (outcome.record, outcome.write, outcome.sends) == (None, True, [])
    assert (outcome.exited, outcome.profiles_delta) == (["clickers"], -1)
    assert outcome.erased == Watermarks({VALID: 10, VIEW_P1: 40})


def test_events_during_an_erasure_start_a_new_profile_that_stays() -> None:
    erasing = handle("u1", user_with_two_anonymous_ids(), Erase(), http(HTTP)).record
    later = FoldEvent(ev("conversion", T0 + 90, anon=None, user="u1"), resolve=False)
    fresh = handle("u1", erasing, later, ctx((VALID, 20), here=(FROM_P1, 41)))
    assert fresh.record is not None
    assert (fresh.write, fresh.profiles_delta, fresh.entered) == (True, 1, ["converters"])
    assert fresh.record.counts == {"conversion": 1}
    assert pf.has_data(fresh.record)
    done = erase_done(fresh.record, "a1", "a2")
    assert done.record is not None
    assert (done.write, done.erased, done.profiles_delta) == (True, None, 0)
    assert done.record.erasing == []
    assert done.record.counts == {"conversion": 1}
    assert done.record.segments == ["converters"]


def test_erase_at_a_linked_anonymous_record_goes_to_the_user() -> None:
    record, _ = linked_record()
    before = without_forwarded(record)
    outcome = handle("a1", record, Erase(), http(HTTP))
    assert outcome.sends == [("u1", Erase(path=["a1"]))]
    assert (outcome.profiles_delta, outcome.erased) == (0, None)
    assert outcome.write  # it keeps what it forwarded
    assert outcome.record is not None
    assert (outcome.record.forwarded, outcome.record.forwarded_at) == ({VIEW_P1: 40}, 40)
    assert without_forwarded(outcome.record) == before


def test_erase_link_deletes_the_linked_record() -> None:
    record, _ = linked_record()
    outcome = handle("a1", record, EraseLink("u1"), ctx((FROM_P1, 9)))
    assert (outcome.record, outcome.write) == (None, True)
    assert outcome.sends == [("u1", EraseDone("a1"))]
    assert (outcome.profiles_delta, outcome.exited) == (0, [])
    assert outcome.erased == Watermarks({VALID: 14, FROM_P1: 9})


def test_erase_link_at_an_unlinked_record_deletes_the_profile() -> None:
    """A view read u1 while its merge from a1 was on its way; a1 was not linked yet."""
    record = run("a1", None, folds(ev("click")))
    outcome = handle("a1", record, EraseLink("u1"), ctx((FROM_P1, 9)))
    assert (outcome.record, outcome.write) == (None, True)
    assert outcome.sends == [("u1", EraseDone("a1"))]
    assert (outcome.profiles_delta, outcome.exited) == (-1, ["clickers"])
    assert outcome.erased == Watermarks({VALID: 10, FROM_P1: 9})


def test_erasing_another_user_leaves_the_link_alone() -> None:
    """After a1 was linked to u1, an event carrying a1 and u2 went to u2 without a1 (a1 is
    u1's): erasing u2 erases u2 at once and sends a1 nothing."""
    record, _ = linked_record()
    other = ev("click", T0 + 60, anon="a1", user="u2")
    here = (FROM_P1, 5)
    forward = handle("a1", record, FoldEvent(other, resolve=True), ctx((VALID, 15), here=here))
    u2 = receive("u2", None, forward, here, at=(FROM_P2, 0))
    assert u2 is not None
    assert (u2.ids, u2.counts) == (["u2"], {"click": 1})
    erase_u2 = handle("u2", u2, Erase(), http((FROM_P2, 1)))
    assert (erase_u2.record, erase_u2.sends, erase_u2.profiles_delta) == (None, [], -1)


def test_erasing_nothing_keeps_the_cutoff_for_data_in_flight() -> None:
    """An id with no record (yet): its data may still be travelling. The cutoff is kept,
    with the Erase's own mark (so that a replay of it is recognised), and the erasure
    reports it is done at once."""
    outcome = handle("u1", None, Erase(T0, "er-1"), http((FROM_P1, 9)))
    assert (outcome.record, outcome.write, outcome.before_ms) == (None, False, T0)
    assert outcome.erased == Watermarks({VIEW_P1: 9})
    hashed = [erasure_key("", "u1").hex()]
    assert outcome.sends == [
        ("er-1", ErasureNote("er-1", False, hashed)),
        ("er-1", ErasureNote("er-1", True, hashed)),
    ]
    assert handle("u1", None, EraseDone("a1"), ctx((FROM_P1, 9))) == Outcome(None)


def test_erase_link_at_no_record_answers_done() -> None:
    """The linked id was erased already (a replay), or never had a record (it was
    unlinked, or its data is still in flight): the user's erasure must still complete,
    and the id keeps the cutoff (for what is in flight) and the mark (for replays)."""
    outcome = handle("a1", None, EraseLink("u1", T0), ctx((FROM_P1, 9)))
    assert outcome.sends == [("u1", EraseDone("a1"))] and outcome.record is None
    assert (outcome.erased, outcome.before_ms) == (Watermarks({FROM_P1: 9}), T0)
    again = handle("a1", None, EraseLink("u1", T0), ctx((FROM_P1, 9), outcome.erased))
    assert again == Outcome(None, sends=[("u1", EraseDone("a1"))])


def test_replay_of_an_http_erase_keeps_the_profile_started_after_it() -> None:
    """u1 is erased by an Erase from a view (handled at HTTP, its source). A newer event
    starts a new u1 profile; a crash re-reads the Erase: it must not delete that profile.
    A new erasure request, a new record of profiles.in, does."""
    erase = handle("u1", user_with_two_anonymous_ids(), Erase(), http(HTTP))
    done = erase_done(erase.record, "a1", "a2")
    assert done.record is None
    assert done.erased is not None
    assert done.erased.covers(VIEW_P1, HTTP[1])
    later = FoldEvent(ev("click", T0 + 90, anon=None, user="u1"), resolve=False)
    fresh = handle("u1", None, later, ctx((VALID, 20), done.erased, here=(FROM_P1, 52)))
    assert fresh.record is not None
    assert fresh.profiles_delta == 1
    before = snapshot(fresh.record)
    replay = handle("u1", fresh.record, Erase(), http(HTTP, done.erased))
    assert snapshot(replay.record) == before
    assert (replay.write, replay.sends, replay.profiles_delta, replay.erased) == (
        False,
        [],
        0,
        None,
    )
    again = handle("u1", fresh.record, Erase(), ctx((FROM_P1, 55), done.erased, here=(FROM_P1, 55)))
    assert (again.record, again.write, again.profiles_delta) == (None, True, -1)


def test_replay_of_a_forwarded_erase_keeps_the_profile_started_after_it() -> None:
    """A view read a1 before its link and sent the Erase to a1 (handled at HTTP); a1 was
    linked by then, so it forwarded the Erase to u1 (partition 2), whose EraseLink deleted
    a1. A newer event starts a new a1 profile; a crash re-reads the Erase at a1: it must not
    delete that profile."""
    record, linked = linked_record()
    forwarded = handle("a1", record, Erase(), http(HTTP))
    assert forwarded.sends == [("u1", Erase(path=["a1"]))]
    user = receive("u1", None, linked, LINK_AT, at=(FROM_P2, 0))
    erase_u1 = handle("u1", user, Erase(), ctx(HTTP, here=(FROM_P2, 1)))
    assert erase_u1.sends == [("a1", EraseLink("u1"))]
    link_erased = handle(
        "a1", forwarded.record, EraseLink("u1"), ctx((FROM_P2, 1), here=(FROM_P1, 41))
    )
    assert link_erased.sends == [("u1", EraseDone("a1"))]
    assert link_erased.erased is not None
    later = FoldEvent(ev("click", T0 + 90), resolve=True)
    fresh = handle("a1", None, later, ctx((VALID, 16), link_erased.erased, here=(FROM_P1, 42)))
    assert fresh.record is not None
    before = snapshot(fresh.record)
    replay = handle("a1", fresh.record, Erase(), http(HTTP, link_erased.erased))
    assert snapshot(replay.record) == before
    assert (replay.write, replay.sends, replay.profiles_delta) == (False, [], 0)


def test_replay_of_an_erase_at_a_record_linked_since_is_not_forwarded() -> None:
    """A view erased a1 while it was anonymous (deleted at once, at HTTP); a later event
    links a new a1 record to u1. A crash re-reads the Erase: a1 must not forward it, or
    u1's profile, which the erasure never concerned, is erased by a replay."""
    anonymous = run("a1", None, folds(ev("click")))
    erase = handle("a1", anonymous, Erase(), http(HTTP))
    assert (erase.record, erase.sends) == (None, [])
    assert erase.erased == Watermarks({VALID: 10, VIEW_P1: 40})
    link = FoldEvent(ev("identify", T0 + 90, user="u1"), resolve=True)
    linked = handle("a1", None, link, ctx((VALID, 14), erase.erased, here=(FROM_P1, 41)))
    assert linked.record is not None
    assert linked.record.merged_into == "u1"
    before = snapshot(linked.record)
    replay = handle("a1", linked.record, Erase(), http(HTTP, erase.erased))
    assert (replay.write, replay.sends, replay.profiles_delta) == (False, [], 0)
    assert snapshot(replay.record) == before


def test_replay_of_an_erase_whose_erase_links_were_lost_sends_them_again() -> None:
    """A crash after the Erase at u1 was written (data cleared, ids still to erase kept)
    but before its EraseLinks reached a1 and a2: the Erase is read again, and must send
    them again, or a1's and a2's records (their frozen states) are never erased."""
    erase = handle("u1", user_with_two_anonymous_ids(), Erase(), http(HTTP))
    assert erase.sends == [
        ("a1", EraseLink("u1")),
        ("a2", EraseLink("u1")),
    ]
    before = snapshot(erase.record)
    replay = handle("u1", erase.record, Erase(), http(HTTP))
    assert replay.sends == erase.sends
    assert (replay.write, replay.profiles_delta, replay.exited) == (False, 0, [])
    assert snapshot(replay.record) == before
    half = erase_done(erase.record, "a1")
    replay = handle("u1", half.record, Erase(), http(HTTP))
    assert replay.sends == [("a2", EraseLink("u1"))]


ERASED = Watermarks({VALID: 14, FROM_P1: 4})


@pytest.mark.parametrize(
    ("key", "command", "source"),
    [
        pytest.param("a1", FoldEvent(ev(), resolve=True), (VALID, 12), id="anonymous-event"),
        pytest.param(
            "a1", FoldEvent(ev(user="u1"), resolve=True), (VALID, 14), id="the-linking-event"
        ),
        pytest.param(
            "u1", FoldEvent(ev(anon=None, user="u1"), resolve=False), (VALID, 3), id="user-event"
        ),
        pytest.param(
            "u1",
            MergeFragment(Profile(profile_id="u1", ids=["a1", "u1"], counts={"click": 1})),
            (FROM_P1, 4),
            id="merge",
        ),
    ],
)
def test_replay_after_erasure_creates_nothing(
    key: str, command: Command, source: tuple[int, int]
) -> None:
    outcome = handle(key, None, command, ctx(source, erased=ERASED))
    assert outcome == Outcome(None)


@pytest.mark.parametrize(
    ("key", "command", "source"),
    [
        pytest.param("a1", FoldEvent(ev(), resolve=True), (VALID, 15), id="anonymous-event"),
        pytest.param(
            "u1", FoldEvent(ev(anon=None, user="u1"), resolve=False), (VALID, 15), id="user-event"
        ),
        pytest.param(
            "u1",
            MergeFragment(Profile(profile_id="u1", ids=["a1", "u1"], counts={"page_view": 1})),
            (FROM_P1, 5),
            id="merge",
        ),
    ],
)
def test_newer_source_after_erasure_starts_a_new_profile(
    key: str, command: Command, source: tuple[int, int]
) -> None:
    outcome = handle(key, None, command, ctx(source, erased=ERASED))
    assert outcome.record is not None
    assert (outcome.write, outcome.profiles_delta) == (True, 1)
    assert outcome.record.counts == {"page_view": 1}
    assert outcome.record.applied == {**ERASED.offsets, source[0]: source[1]}
    assert ERASED.offsets == {VALID: 14, FROM_P1: 4}  # the context's marks are not touched


def test_newer_link_after_erasure_links_again() -> None:
    link = ev("identify", anon="a1", user="u1")
    outcome = handle("a1", None, FoldEvent(link, resolve=True), ctx((VALID, 20), erased=ERASED))
    assert outcome.record is not None
    assert outcome.record.merged_into == "u1"
    assert outcome.record.applied == {VALID: 20, FROM_P1: 4}
    assert [target for target, _ in outcome.sends] == ["u1"]


# --- former bugs: replays the watermarks alone did not stop ---------------------------


def test_replay_of_several_commands_after_a_lost_merge_counts_each_event_once() -> None:
    """A crash after a1's record was written (frozen) but before its MergeFragment
    reached the user: a1's partition is re-read from before the link. The command
    before the link sends nothing (it is in the frozen state); the link re-sends the
    frozen state, stamped with its position, and the user counts it once."""
    anonymous, link = ev("page_view", T0), ev("identify", T0 + 1, user="u1")
    # profiles.in offsets 20 and 21 of partition 1 held the two commands
    steps = [(FoldEvent(anonymous, True), 10), (FoldEvent(link, True), 11)]
    record = run("a1", None, steps, at=20)
    assert record.merged_into == "u1"
    user: Profile | None = None
    for in_offset, (command, source_offset) in ((20, (anonymous, 10)), (21, (link, 11))):
        here = (FROM_P1, in_offset)  # re-read where it was first read
        resent = handle(
            "a1", record, FoldEvent(command, True), ctx((VALID, source_offset), here=here)
        )
        assert len(resent.sends) == (1 if command is link else 0)
        for _, merge in resent.sends:
            user = handle("u1", user, merge, ctx(here)).record
    assert user is not None
    assert user.counts == {"page_view": 1, "identify": 1}


def forwarded_then_erased() -> tuple[ProfileEvent, Watermarks]:
    """a1 linked to u1 at offset 14, then a click forwarded from offset 15; u1 erased."""
    record, _ = linked_record()
    click = ev("click", T0 + 60)
    forward = handle("a1", record, FoldEvent(click, resolve=True), ctx((VALID, 15)))
    assert forward.sends == [("u1", FoldEvent(click, resolve=False, path=["a1"]))]
    erased = handle("a1", forward.record, EraseLink("u1"), ctx((FROM_P1, 30)))
    assert erased.erased is not None
    return click, erased.erased


def test_erase_link_keeps_the_marks_of_what_was_forwarded() -> None:
    _, erased = forwarded_then_erased()
    assert erased == Watermarks({VALID: 15, FROM_P1: 30})


def test_replay_of_a_forwarded_event_after_erasure_creates_nothing() -> None:
    """The forwarded click was counted in u1's (now erased) profile; re-reading it after
    a crash must not bring it back as a new anonymous profile. a1 keeps what it forwarded
    (``forwarded``), and its erasure marks keep that too, so they cover the click."""
    click, erased = forwarded_then_erased()
    outcome = handle("a1", None, FoldEvent(click, resolve=True), ctx((VALID, 15), erased))
    assert outcome.record is None
    assert outcome.profiles_delta == 0


def test_replay_of_an_erase_link_keeps_the_profile_started_after_it() -> None:
    """After the EraseLink (source FROM_P1:30) a newer event starts a new a1 profile.
    A crash re-reads the EraseLink: it must not delete that profile (whose click
    would then be dropped for good, since the new erasure marks cover it)."""
    _, erased = forwarded_then_erased()
    later = ev("click", T0 + 90)
    fresh = handle("a1", None, FoldEvent(later, resolve=True), ctx((VALID, 16), erased))
    assert fresh.record is not None
    before = snapshot(fresh.record)
    replay = handle("a1", fresh.record, EraseLink("u1"), ctx((FROM_P1, 30), erased))
    assert snapshot(replay.record) == before
    assert replay.profiles_delta == 0


# --- the simulator --------------------------------------------------------------------

PROFILE_PARTITIONS = 4
VALID_PARTITIONS = 3
VALID_BASE = 100  # the offset of the first record of an events.valid partition
NAMESPACE = "sim"


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


@dataclass(frozen=True)
class Delivery:
    """One record of profiles.in: its key, bytes, source header (None: sent by a view,
    which sets none), partition and offset."""

    key: str
    raw: bytes
    source: tuple[int, int] | None
    partition: int
    offset: int


@dataclass
class Simulator:
    events: Sequence[ProfileEvent]
    seed: int
    rng: random.Random = field(init=False)
    valid: list[list[ProfileEvent]] = field(init=False)  # events.valid, one list per partition
    valid_read: list[int] = field(init=False)  # stage 2's position in each
    log: list[list[Delivery]] = field(init=False)  # profiles.in: a record's offset is its index
    read: list[int] = field(init=False)  # the agent's position in each
    records: dict[str, bytes] = field(default_factory=dict)
    erasures: dict[bytes, bytes] = field(default_factory=dict)
    clocks: dict[int, int] = field(default_factory=dict)  # stream time per profiles.in partition
    handled: list[Delivery] = field(default_factory=list)
    profile_count: int = 0
    segment_sizes: dict[str, GuardedCounter] = field(default_factory=dict)
    statuses: dict[str, ErasureState | None] = field(default_factory=dict)  # by erasure id
    hops: int = 0  # the longest path a sent command carried
    limits: pf.Limits = pf.LIMITS  # of what a profile keeps (tests of the id limit: small)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.valid = [[] for _ in range(VALID_PARTITIONS)]
        self.valid_read = [0] * VALID_PARTITIONS
        self.log = [[] for _ in range(PROFILE_PARTITIONS)]
        self.read = [0] * PROFILE_PARTITIONS
        self.add(self.events)

    @property
    def stream_time(self) -> int:
        return max(self.clocks.values(), default=0)

    def add(self, events: Iterable[ProfileEvent]) -> Simulator:
        """Events reach events.valid: one partition per event id."""
        for event in events:
            self.valid[partition_of(event.event_id, VALID_PARTITIONS)].append(event)
        return self

    def run(self, steps: int | None = None) -> Simulator:
        """Until every record is read (or for ``steps`` records), read the next record
        of a random partition that has one."""
        while steps is None or steps > 0:
            ready = [
                *(
                    ("valid", i)
                    for i, log in enumerate(self.valid)
                    if self.valid_read[i] < len(log)
                ),
                *(("profiles", i) for i, log in enumerate(self.log) if self.read[i] < len(log)),
            ]
            if not ready:
                break
            steps = None if steps is None else steps - 1
            stage, i = self.rng.choice(ready)
            if stage == "profiles":
                self.read[i] += 1
                self.deliver(self.log[i][self.read[i] - 1])
            else:  # stage 2: what deduplicate_events sends on
                index = self.valid_read[i]
                self.valid_read[i] += 1
                key, command = route_event(self.valid[i][index])
                self.send(key, command, (source_id(0, i), VALID_BASE + index))
        return self

    def send(self, key: str, command: Command, source: tuple[int, int] | None) -> None:
        if isinstance(command, FoldEvent | MergeFragment | Erase):
            self.hops = max(self.hops, len(command.path))
        partition = partition_of(key, PROFILE_PARTITIONS)
        log = self.log[partition]
        log.append(Delivery(key, encode_command(command), source, partition, len(log)))

    def erase(self, profile_id: str, before_ms: int | None = None) -> str:
        """What ``DELETE /profiles/{id}`` does: sends an Erase with the cutoff, with no
        source header, to the id it names, known or not; returns the erasure id."""
        erasure_id = f"er-{len(self.statuses)}-{profile_id}"
        self.statuses[erasure_id] = None
        self.send(profile_id, Erase(before_ms, erasure_id), None)
        return erasure_id

    def deliver(self, message: Delivery, lose_sends: bool = False) -> None:
        """What ``build_profiles`` does with one record of profiles.in."""
        command = decode_command(message.raw)
        clock = self.clocks.get(message.partition)
        ts = command_time(command)
        if ts is not None:
            clock = ts if clock is None else max(clock, ts)
            self.clocks[message.partition] = clock
        here = (source_id(1, message.partition), message.offset)
        # an Erase from a view has no source header: its offset in a stream of its own
        source = message.source or (source_id(VIEWS, message.partition), message.offset)
        where = erasure_key(NAMESPACE, message.key)
        marks, before_ms = (
            decode_erased(self.erasures[where]) if where in self.erasures else (None, None)
        )
        context = Context(
            source,
            here,
            clock or 0,
            DAY_MS,
            segments_of,
            marks,
            before_ms,
            NAMESPACE,
            from_view=message.source is None,
            limits=self.limits,
        )
        record = pf.from_bytes(self.records.get(message.key))
        outcome = handle(message.key, record, command, context)
        if isinstance(command, ErasureNote):  # the erasure status table
            self.statuses[message.key] = note_erasure(self.statuses.get(message.key), command)
        if outcome.erased is not None or outcome.before_ms is not None:
            kept = outcome.erased if outcome.erased is not None else marks or Watermarks()
            cutoff = max(c for c in (before_ms, outcome.before_ms, -1) if c is not None)
            self.erasures[where] = encode_erased(kept, None if cutoff < 0 else cutoff)
        if outcome.write and outcome.record is not None:
            self.records[message.key] = pf.to_bytes(outcome.record)
        elif outcome.write:
            self.records.pop(message.key, None)
        self.profile_count += outcome.profiles_delta
        for target, sent in [] if lose_sends else outcome.sends:
            self.send(target, sent, here)  # every send is stamped with ``here``
        for segments, delta in ((outcome.entered, 1), (outcome.exited, -1)):
            for segment in segments:  # count_segment_sizes, right away
                self.segment_sizes.setdefault(segment, GuardedCounter()).apply_once(here, delta)
        self.handled.append(message)

    def crash(self, stage2: bool = False) -> Simulator:
        """The agent restarts from its last commit: each partition of profiles.in is read
        again from a random earlier position, the same records at their offsets (the state
        written since is kept). With ``stage2``, stage 2 restarts too and sends again what
        it reads again: new records of profiles.in, with the same sources."""
        self.read = [self.rng.randint(0, n) for n in self.read]
        if stage2:
            self.valid_read = [self.rng.randint(0, n) for n in self.valid_read]
        return self

    def crash_losing_sends(self) -> Simulator:
        """A crash just after the agent wrote the state of a record, before the commands
        it sent reached profiles.in: they are lost (its segment deltas are not), and the
        record is read again after the restart."""
        if ready := [i for i, log in enumerate(self.log) if self.read[i] < len(log)]:
            i = self.rng.choice(ready)
            offset = self.read[i]
            self.deliver(self.log[i][offset], lose_sends=True)
            self.crash()
            self.read[i] = min(self.read[i], offset)
        return self

    def profiles(self) -> dict[str, Profile]:
        found = {key: pf.from_bytes(raw) for key, raw in self.records.items()}
        return {key: p for key, p in found.items() if p is not None}

    def canonical(self) -> dict[str, Profile]:
        """Canonical profiles with data (not a record that only waits for its erasure)."""
        found = self.profiles().items()
        return {key: p for key, p in found if p.merged_into is None and pf.has_data(p)}

    def sizes(self) -> dict[str, int]:
        return {s: size.value for s, size in self.segment_sizes.items() if size.value}

    def state(self) -> tuple[object, ...]:
        statuses = dict(self.statuses)
        return self.profiles(), dict(self.erasures), self.profile_count, self.sizes(), statuses


def summary(profile: Profile, stream_time: int) -> dict[str, object]:
    """What must not depend on the order; impressions counted within the horizon."""
    oldest = stream_time - DAY_MS
    frequency = {
        c: {m: n for m, n in buckets.items() if m + MINUTE_MS > oldest}
        for c, buckets in profile.frequency.items()
    }
    return {
        "counts": profile.counts,
        "interests": profile.interests,
        "ids": sorted(profile.ids),
        "seen": (profile.first_seen, profile.last_seen),
        "frequency": {c: b for c, b in frequency.items() if b},
        "segments": sorted(profile.segments),
    }


URL_INTERESTS = {
    "/sports/a": "sports",
    "/Sports/b?x=/news": "sports",
    "https://ex.com/News/c": "news",
    "/": None,
}


def owner_of(event: ProfileEvent, links: dict[str, str]) -> str:
    return event.user_id or links.get(event.anonymous_id or "", event.anonymous_id or "")


def expected(
    events: Sequence[ProfileEvent], links: dict[str, str], stream_time: int
) -> dict[str, dict[str, object]]:
    """The canonical profiles, counted straight from the events."""
    owned: dict[str, list[ProfileEvent]] = {}
    for e in events:
        owned.setdefault(owner_of(e, links), []).append(e)
    return {owner: _expected_one(owner, mine, stream_time) for owner, mine in owned.items()}


def _ids_counted(e: ProfileEvent, pointers: dict[str, str] | None) -> tuple[str | None, ...]:
    """An event's ids, less an anonymous id that is linked to another user than the
    event's (it counts for the event's user, but the id is not theirs)."""
    anon, user = e.anonymous_id, e.user_id
    if pointers is not None and anon and user and anon != user and pointers.get(anon) != user:
        return (user,)
    return (anon, user)


def _expected_one(
    owner: str,
    mine: list[ProfileEvent],
    stream_time: int,
    pointers: dict[str, str] | None = None,
) -> dict[str, object]:
    counts = Counter(e.type for e in mine)
    views = [URL_INTERESTS[e.url or "/"] for e in mine if e.type == "page_view"]
    interests = Counter(interest for interest in views if interest)
    frequency: dict[str, dict[int, int]] = {}
    for e in mine:
        minute = e.ts // MINUTE_MS * MINUTE_MS
        if e.type == "impression" and e.campaign_id and minute + MINUTE_MS > stream_time - DAY_MS:
            buckets = frequency.setdefault(e.campaign_id, {})
            buckets[minute] = buckets.get(minute, 0) + 1
    segments = [
        name
        for name, met in (
            ("clickers", counts["click"] >= 1),
            ("converters", counts["conversion"] >= 1),
            ("engaged", counts["page_view"] >= 5),
        )
        if met
    ]
    ids = {owner} | {i for e in mine for i in _ids_counted(e, pointers) if i}
    return {
        "counts": dict(counts),
        "interests": dict(interests),
        "ids": sorted(ids),
        "seen": (min(e.ts for e in mine), max(e.ts for e in mine)),
        "frequency": frequency,
        "segments": segments,
    }


# --- scenarios ------------------------------------------------------------------------

KINDS = ("page_view", "page_view", "page_view", "impression", "click", "conversion")


@dataclass
class Scenario:
    """Events in their stage-2 order, and which anonymous id links to which user."""

    events: list[ProfileEvent] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    step_ms: int = 7_000

    def add(self, n: int, anon: str | None, user: str | None = None, first: int = 0) -> None:
        for i in range(first, first + n):
            kind = KINDS[i % len(KINDS)]
            url = list(URL_INTERESTS)[i % len(URL_INTERESTS)]
            event = ev(
                kind,
                T0 + len(self.events) * self.step_ms,
                anon=anon,
                user=user,
                campaign=f"c{i % 2}" if kind != "page_view" else None,
                url=url,
            )
            # ids of its own, so that a run does not depend on which tests ran before
            self.events.append(msgspec.structs.replace(event, event_id=f"s{len(self.events)}"))

    def link(self, anon: str, user: str) -> None:
        self.links[anon] = user
        self.add(1, anon, user, first=5)  # a conversion carrying both ids


def anonymous_then_link() -> Scenario:
    s = Scenario()
    s.add(12, "a1")
    s.link("a1", "u1")
    return s


def link_first() -> Scenario:
    s = Scenario()
    s.link("a1", "u1")
    s.add(12, "a1")
    return s


def link_in_the_middle() -> Scenario:
    s = Scenario()
    s.add(6, "a1")
    s.link("a1", "u1")
    s.add(6, "a1", first=6)
    s.add(3, "a1", "u1")
    return s


def several_anonymous_ids() -> Scenario:
    s = Scenario()
    for anon in ("a1", "a2", "a3", "b1"):
        s.add(5, anon)
    s.link("a1", "u1")
    s.add(4, "a2")
    s.link("a2", "u1")
    s.link("a3", "u1")
    s.add(4, "a3")
    s.add(4, "b1")  # b1 never links: a canonical anonymous profile
    return s


def user_only_events_mixed_in() -> Scenario:
    s = Scenario()
    s.add(4, None, "u1")
    s.add(5, "a1")
    s.add(3, None, "u2")  # a user no anonymous id links to
    s.link("a1", "u1")
    s.add(4, None, "u1", first=4)
    s.add(4, "a1", first=2)
    s.add(2, "a2")
    s.link("a2", "u2")
    s.add(2, "a2", "u2")
    return s


def over_three_days() -> Scenario:
    """Impressions leave the frequency horizon while the events are being shuffled."""
    s = Scenario(step_ms=2 * 60 * MINUTE_MS + 1_234)
    s.add(12, "a1")
    s.add(6, None, "u1")
    s.link("a1", "u1")
    s.add(12, "a1")
    return s


SCENARIOS = [
    anonymous_then_link,
    link_first,
    link_in_the_middle,
    several_anonymous_ids,
    user_only_events_mixed_in,
    over_three_days,
]
SEEDS = range(25)


def simulations(scenario: Scenario) -> Iterator[Simulator]:
    for seed in SEEDS:
        yield Simulator(scenario.events, seed).run()


def link_position(sim: Simulator, anon: str) -> int:
    """Where, among the commands of ``anon``, its link was handled: the run's shape."""
    mine = [decode_command(m.raw) for m in sim.handled if m.key == anon]
    return next(
        i for i, c in enumerate(mine) if isinstance(c, FoldEvent) and c.event.user_id is not None
    )


def assert_counted_once(
    sim: Simulator, events: Sequence[ProfileEvent], links: dict[str, str]
) -> None:
    """Each event counted once, in its owner's profile; the count and the segment sizes."""
    want = expected(events, links, sim.stream_time)
    got = {key: summary(p, sim.stream_time) for key, p in sim.canonical().items()}
    assert got == want, f"seed {sim.seed}"
    assert sim.profile_count == len(want), f"seed {sim.seed}"
    in_segment = Counter(s for p in sim.canonical().values() for s in p.segments)
    assert sim.sizes() == dict(in_segment), f"seed {sim.seed}"
    assert all(sim.profiles()[a].merged_into == u for a, u in links.items()), f"seed {sim.seed}"


@pytest.mark.parametrize("make", SCENARIOS, ids=lambda f: f.__name__)
def test_profiles_do_not_depend_on_the_interleaving(make: Any) -> None:
    scenario: Scenario = make()
    shapes = set()
    for sim in simulations(scenario):
        assert_counted_once(sim, scenario.events, scenario.links)
        shapes.add(tuple(link_position(sim, a) for a in sorted(scenario.links)))
    assert len(shapes) > 1  # the seeds did move the links around


@pytest.mark.parametrize("make", SCENARIOS, ids=lambda f: f.__name__)
def test_replays_change_nothing(make: Any) -> None:
    """The agent re-reads records it had handled, at their offsets."""
    scenario: Scenario = make()
    for sim in simulations(scenario):
        before = sim.state()
        assert sim.crash().run().state() == before, f"seed {sim.seed}"


@pytest.mark.parametrize("make", SCENARIOS, ids=lambda f: f.__name__)
def test_crashes_in_the_middle_count_each_event_once(make: Any) -> None:
    """Crashes while commands are still on their way, some losing what a record sent."""
    scenario: Scenario = make()
    for seed in SEEDS:
        sim = Simulator(scenario.events, seed)
        for _ in range(3):
            sim.run(steps=sim.rng.randrange(2 * len(scenario.events)))
            if sim.rng.random() < 0.5:
                sim.crash_losing_sends()
            else:
                sim.crash()
        assert_counted_once(sim.run(), scenario.events, scenario.links)


@pytest.mark.parametrize("make", SCENARIOS, ids=lambda f: f.__name__)
def test_new_copies_from_stage_2_change_nothing(make: Any) -> None:
    """Stage 2 re-reads events.valid after a crash and sends its commands again: new
    records of profiles.in, with the sources of the first ones."""
    scenario: Scenario = make()
    for sim in simulations(scenario):
        before = sim.state()
        assert sim.crash(stage2=True).run().state() == before, f"seed {sim.seed}"


# --- link graphs: chains, cycles, user ids reused as anonymous ids ----------------------


def pointers_of(sim: Simulator) -> dict[str, str]:
    """Each id's pointer, read off the order its partition ran in: the user named by the
    first link request (an event with another user id) handled at it."""
    found: dict[str, str] = {}
    for message in sim.handled:
        command = decode_command(message.raw)
        if isinstance(command, FoldEvent) and command.resolve:
            user = command.event.user_id
            if user is not None and user != message.key:
                found.setdefault(message.key, user)
    return found


def root_of(person_id: str, pointers: dict[str, str]) -> str:
    """Follow the pointers; a walk that closes a cycle ends at the cycle's smallest id."""
    walk: list[str] = []
    while person_id in pointers and person_id not in walk:
        walk.append(person_id)
        person_id = pointers[person_id]
    if person_id in walk:
        return min(walk[walk.index(person_id) :])
    return person_id


def expected_by_root(
    events: Sequence[ProfileEvent], pointers: dict[str, str], stream_time: int
) -> dict[str, dict[str, object]]:
    """The canonical profiles: each event counted for the root of its user id, else of
    its anonymous id."""
    owned: dict[str, list[ProfileEvent]] = {}
    for e in events:
        owned.setdefault(root_of(e.user_id or e.anonymous_id or "", pointers), []).append(e)
    return {
        owner: _expected_one(owner, mine, stream_time, pointers) for owner, mine in owned.items()
    }


def follow(sim: Simulator, key: str) -> str | None:
    """Where ``key``'s record leads, following ``merged_into`` (None: a loop)."""
    records = sim.profiles()
    for _ in range(len(records) + 1):
        record = records.get(key)
        if record is None or record.merged_into is None:
            return key
        key = record.merged_into
    return None


def assert_one_profile_per_person(sim: Simulator, events: Sequence[ProfileEvent]) -> None:
    """Every event counted once, at the root of its person; one canonical profile per
    person, which every id of the person leads to; no command went round for ever."""
    pointers = pointers_of(sim)
    want = expected_by_root(events, pointers, sim.stream_time)
    got = {key: summary(p, sim.stream_time) for key, p in sim.canonical().items()}
    assert got == want, f"seed {sim.seed}, pointers {pointers}"
    assert sim.profile_count == len(want), f"seed {sim.seed}"
    in_segment = Counter(s for p in sim.canonical().values() for s in p.segments)
    assert sim.sizes() == dict(in_segment), f"seed {sim.seed}"
    ids = {i for e in events for i in (e.anonymous_id, e.user_id) if i}
    assert set(sim.records) == ids, f"seed {sim.seed}"
    for person_id in ids:
        assert follow(sim, person_id) == root_of(person_id, pointers), f"seed {sim.seed}"
    assert sim.hops <= min(MAX_HOPS, 2 * len(ids)), f"seed {sim.seed}: {sim.hops} hops"


def chain() -> Scenario:
    """a -> b, then b -> c: b is a user that becomes someone else's anonymous id."""
    s = Scenario()
    s.add(4, "a")
    s.link("a", "b")
    s.add(3, None, "b")
    s.add(2, "b")
    s.link("b", "c")
    s.add(2, "a", first=3)
    s.add(2, None, "c")
    return s


def two_cycle() -> Scenario:
    """x -> y, then y -> x (the issue's cyc-X / cyc-Y)."""
    s = Scenario()
    s.add(3, "x")
    s.link("x", "y")
    s.add(2, None, "y")
    s.link("y", "x")
    s.add(3, "y", first=2)
    s.add(2, "x", first=4)
    return s


def three_cycle() -> Scenario:
    s = Scenario()
    s.add(2, "x")
    s.link("x", "y")
    s.add(2, "y")
    s.link("y", "z")
    s.add(2, "z")
    s.link("z", "x")
    s.add(2, None, "x")
    s.add(2, "y", first=3)
    return s


def user_reused_as_anonymous_id() -> Scenario:
    """u1 is a1's user, then an anonymous id that logs in as u2; a tail hangs on a cycle."""
    s = Scenario()
    s.add(3, "a1")
    s.link("a1", "u1")
    s.add(3, None, "u1")
    s.add(2, "u1", first=3)
    s.link("u1", "u2")
    s.link("a2", "u2")
    s.link("u2", "u1")  # closes u1 <-> u2, with a1 and a2 hanging on it
    s.add(2, "a1", first=1)
    return s


def random_graph(seed: int) -> Scenario:
    """3-6 ids, each anonymous, user or both; link requests between random pairs (so an
    id may be named with several users: the first one its partition handles wins)."""
    rng = random.Random(seed)
    ids = [f"i{k}" for k in range(rng.randint(3, 6))]
    s = Scenario()
    for _ in range(rng.randint(8, 24)):
        one, kind = rng.choice(ids), rng.random()
        other = rng.choice([i for i in ids if i != one])
        if kind < 0.3:
            s.add(1, one, first=rng.randrange(6))
        elif kind < 0.45:
            s.add(1, None, one, first=rng.randrange(6))
        else:
            s.add(1, one, other, first=rng.randrange(6))
    return s


GRAPHS = [chain, two_cycle, three_cycle, user_reused_as_anonymous_id]


@pytest.mark.parametrize("make", GRAPHS, ids=lambda f: f.__name__)
def test_link_graphs_give_one_profile_per_person(make: Any) -> None:
    scenario: Scenario = make()
    for sim in simulations(scenario):
        assert_one_profile_per_person(sim, scenario.events)


def test_a_two_cycle_counts_each_event_once_under_its_smallest_id() -> None:
    """The issue: identify x -> y, then y -> x gave two canonical profiles pointing at each
    other and counted 4 events for 2."""
    s = Scenario()
    s.link("x", "y")
    s.link("y", "x")
    for sim in simulations(s):
        canonical = sim.canonical()
        assert list(canonical) == ["x"], f"seed {sim.seed}"
        assert canonical["x"].counts == {"conversion": 2}, f"seed {sim.seed}"
        assert sorted(canonical["x"].ids) == ["x", "y"]
        assert sim.profiles()["y"].merged_into == "x"
        assert sim.profile_count == 1


@pytest.mark.parametrize("graph", range(60))
def test_random_link_graphs_give_one_profile_per_person(graph: int) -> None:
    scenario = random_graph(graph)
    for seed in range(6):
        assert_one_profile_per_person(Simulator(scenario.events, seed).run(), scenario.events)


@pytest.mark.parametrize("make", [*GRAPHS, *(partial(random_graph, g) for g in range(12))])
def test_link_graphs_under_crashes_and_replays(make: Any) -> None:
    """Crashes mid-way (some losing what a record sent), then replays and new copies from
    stage 2: the same one profile per person, each event once."""
    scenario: Scenario = make()
    for seed in range(8):
        sim = Simulator(scenario.events, seed)
        for _ in range(3):
            sim.run(steps=sim.rng.randrange(2 * len(scenario.events)))
            if sim.rng.random() < 0.5:
                sim.crash_losing_sends()
            else:
                sim.crash(stage2=sim.rng.random() < 0.3)
        assert_one_profile_per_person(sim.run(), scenario.events)
        before = sim.state()
        assert sim.crash().run().state() == before, f"seed {sim.seed}"
        assert sim.crash(stage2=True).run().state() == before, f"seed {sim.seed}"


def test_a_walk_longer_than_max_hops_stops() -> None:
    """A chain built on purpose, i0 -> i1 -> ... -> i20, linked from its far end first so
    that fragments walk it: no command travels more than MAX_HOPS, each event counts once."""
    s = Scenario()
    for k in reversed(range(20)):
        s.link(f"i{k}", f"i{k + 1}")
    s.add(2, "i0")
    sim = Simulator(s.events, 0).run()
    assert sim.hops <= MAX_HOPS
    total = Counter[str]()
    for p in sim.canonical().values():
        total.update(p.counts)
    assert total == Counter(e.type for e in s.events)


# --- erasure, by event time -----------------------------------------------------------


def component(person_id: str, links: dict[str, str]) -> set[str]:
    """The ids connected to ``person_id`` by links, either way."""
    found, todo = {person_id}, [person_id]
    while todo:
        one = todo.pop()
        for a, u in links.items():
            for near in (u,) if a == one else (a,) if u == one else ():
                if near not in found:
                    found.add(near)
                    todo.append(near)
    return found


ERASABLE = [several_anonymous_ids, link_in_the_middle, chain, two_cycle, three_cycle]


def later_events(s: Scenario, covered: set[str], fresh: str) -> list[ProfileEvent]:
    """Events after the cutoff: for ids of the erased person, for another person, and a
    new anonymous id that logs in as one of the erased ids."""
    first = len(s.events)
    for person_id in sorted(covered)[:2]:
        s.add(2, person_id, first=3)
        s.add(1, None, person_id, first=4)
    s.add(2, fresh)
    s.link(fresh, sorted(covered)[0])
    return s.events[first:]


@pytest.mark.parametrize("make", ERASABLE, ids=lambda f: f.__name__)
def test_erasure_at_any_moment_leaves_nothing_from_before_the_cutoff(make: Any) -> None:
    """A DELETE of a random id at a random moment (links and fragments still travelling,
    some of the person's ids not seen yet), with later events and crashes. After the drain:
    no record holds an event of the person from before the cutoff; every other person is
    exact; the person's later events count at most once; the erasure reports ``erased``
    with the hashed id; replays change nothing."""
    scenario: Scenario = make()
    ids = sorted({i for e in scenario.events for i in (e.anonymous_id, e.user_id) if i})
    cutoff = max(e.ts for e in scenario.events)
    for seed in SEEDS:
        s = Scenario(list(scenario.events), dict(scenario.links))
        sim = Simulator(s.events, seed)
        sim.run(steps=sim.rng.randrange(2 * len(s.events)))
        erased_id = sim.rng.choice(ids)
        covered = component(erased_id, s.links)
        erasure = sim.erase(erased_id, cutoff)
        if sim.rng.random() < 0.5:
            sim.run(steps=sim.rng.randrange(len(s.events)))
            sim.crash_losing_sends() if sim.rng.random() < 0.5 else sim.crash()
        later = later_events(s, covered, "f1")
        sim.add(later).run()
        assert_erased(sim, s.events, covered | {"f1"}, cutoff)
        status = sim.statuses[erasure]
        assert status is not None and status.status == "erased", f"seed {seed}"
        assert erasure_key(NAMESPACE, erased_id).hex() in status.ids
        before = sim.state()
        assert sim.crash().run().state() == before, f"seed {seed}"
        assert sim.crash(stage2=True).run().state() == before, f"seed {seed}"


def assert_erased(
    sim: Simulator, events: Sequence[ProfileEvent], person: set[str], cutoff: int
) -> None:
    where = f"seed {sim.seed}"
    assert not any(p.erasing for p in sim.profiles().values()), where
    for key, record in sim.profiles().items():
        if person & {key, *record.ids} and record.counts:
            assert record.first_seen is not None and record.first_seen > cutoff, (where, key)
    others = [e for e in events if not person & {e.anonymous_id, e.user_id}]
    pointers = {a: u for a, u in pointers_of(sim).items() if a not in person}
    want = expected_by_root(others, pointers, sim.stream_time)
    canonical = sim.canonical()
    got = {k: summary(p, sim.stream_time) for k, p in canonical.items() if k not in person}
    assert got == want, where
    mine = sum(sum(p.counts.values()) for k, p in canonical.items() if k in person)
    assert mine <= sum(1 for e in events if e.ts > cutoff and person & {e.anonymous_id, e.user_id})
    assert sim.profile_count == len(canonical), where
    in_segment = Counter(s for p in canonical.values() for s in p.segments)
    assert sim.sizes() == dict(in_segment), where


def test_a_fragment_in_flight_when_its_user_is_erased_is_dropped_and_erases_its_id() -> None:
    """The issue's item 5: a1's link to u1 is handled, its fragment still travels when u1
    is erased. Once everything has arrived, neither u1 nor a1 holds anything."""
    s = Scenario()
    s.add(4, None, "u1")
    s.add(3, "a1")
    s.link("a1", "u1")
    cutoff = max(e.ts for e in s.events)
    for seed in SEEDS:
        sim = Simulator(s.events, seed)
        while not any(m.key == "u1" and m.raw[:1] for m in sim.log[partition_of("u1", 4)]):
            sim.run(steps=1)
        sim.run()  # everything, then the erasure races a fresh link
        sim.erase("u1", cutoff)
        sim.send("a1", FoldEvent(ev("identify", cutoff - 5, anon="a1", user="u1"), True), None)
        sim.run()
        assert "u1" not in sim.canonical() and "a1" not in sim.records, f"seed {seed}"
        assert sim.profile_count == 0 and sim.sizes() == {}, f"seed {seed}"


def test_erasing_an_id_not_seen_yet_erases_its_person_when_it_arrives() -> None:
    """DELETE of an id whose events are all still in flight: 202, the cutoff is kept, and
    its link request, dropped on arrival, erases the user it names."""
    s = Scenario()
    s.add(3, None, "u1")
    s.add(3, "a1")
    s.link("a1", "u1")
    cutoff = max(e.ts for e in s.events)
    for seed in SEEDS:
        sim = Simulator([], seed)
        erasure = sim.erase("a1", cutoff)
        sim.add(s.events).run()
        assert sim.canonical() == {}, f"seed {seed}"
        assert not sim.records, f"seed {seed}"
        status = sim.statuses[erasure]
        assert status is not None and status.status == "erased"


@pytest.mark.parametrize("graph", range(40))
def test_erasure_in_random_link_graphs(graph: int) -> None:
    """A DELETE of a random id of a random link graph, at a random moment, crashes
    included: the erasure ends ``erased``; no record of the erased person (the ids its
    pointers connect) holds anything from before the cutoff; the profile count and the
    segment sizes agree with the profiles left; replays change nothing."""
    scenario = random_graph(graph)
    ids = sorted({i for e in scenario.events for i in (e.anonymous_id, e.user_id) if i})
    cutoff = max(e.ts for e in scenario.events)
    for seed in range(4):
        sim = Simulator(scenario.events, seed)
        sim.run(steps=sim.rng.randrange(2 * len(scenario.events)))
        erased_id = sim.rng.choice(ids)
        erasure = sim.erase(erased_id, cutoff)
        if sim.rng.random() < 0.5:
            sim.run(steps=sim.rng.randrange(len(scenario.events)))
            sim.crash_losing_sends() if sim.rng.random() < 0.5 else sim.crash()
        sim.run()
        status = sim.statuses[erasure]
        assert status is not None and status.status == "erased", f"seed {seed}"
        person = component(erased_id, pointers_of(sim))
        for key, record in sim.profiles().items():
            if record.counts and person & {key, *record.ids}:
                assert (record.first_seen or 0) > cutoff, (seed, key)
        assert not any(p.erasing for p in sim.profiles().values()), f"seed {seed}"
        assert sim.profile_count == len(sim.canonical()), f"seed {seed}"
        in_segment = Counter(s for p in sim.canonical().values() for s in p.segments)
        assert sim.sizes() == dict(in_segment), f"seed {seed}"
        before = sim.state()
        assert sim.crash().run().state() == before, f"seed {seed}"


def test_an_erase_link_at_a_record_being_erased_leaves_it_waiting() -> None:
    """A fragment dropped elsewhere names a root that is itself being erased (no data,
    linked ids still to answer): it answers, and keeps waiting for them."""
    erasing = handle("u1", user_with_two_anonymous_ids(), Erase(), http(HTTP)).record
    assert erasing is not None and erasing.erasing == ["a1", "a2"]
    outcome = handle("u1", erasing, EraseLink("x9", T0), ctx((FROM_P2, 3)))
    assert (outcome.record, outcome.write, outcome.profiles_delta) == (erasing, False, 0)
    assert outcome.sends == [("x9", EraseDone("u1"))]
