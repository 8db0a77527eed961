"""Identity past the id limit: thousands of anonymous ids linked to one user.

A profile lists at most ``Limits.ids`` ids. The links it cannot list are
unlinked (``Unlink``): their data is in the user's profile already, and an
erasure of the user, which reaches only the ids listed, must leave nothing
behind. In the simulator of ``test_identity`` (random interleavings of the
partitions, crashes that read records again): every event is counted once in
the user's profile, the anonymous records left are exactly the listed links,
and after an erasure of the user no record holds data.
"""

from __future__ import annotations

import pytest

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.identity import FoldEvent, MergeFragment, Unlink, handle
from dmp_faust.domain.profiles import LIMITS, Profile
from tests.unit.test_identity import FROM_P1, VALID, Simulator, ctx, ev

LINKED = 3 * LIMITS.ids


def full_user() -> Profile:
    others = [f"a{n:03d}" for n in range(1, LIMITS.ids)]
    return Profile(profile_id="u1", ids=["u1", *others], counts={"identify": len(others)})


def fragment(anon: str) -> MergeFragment:
    state = pf.fold(Profile(profile_id=anon), ev("identify", anon=anon, user="u1"), 0, 1)
    return MergeFragment(pf.frozen_copy(state, "u1"))


def test_a_link_the_user_cannot_list_is_unlinked() -> None:
    outcome = handle("u1", full_user(), fragment("z1"), ctx((FROM_P1, 50)))
    assert outcome.record is not None and "z1" not in outcome.record.ids
    assert outcome.record.ids_truncated and outcome.record.counts["identify"] == LIMITS.ids
    assert outcome.sends == [("z1", Unlink("u1"))]


def test_a_smaller_id_takes_the_place_of_the_largest_which_is_unlinked() -> None:
    outcome = handle("u1", full_user(), fragment("a000"), ctx((FROM_P1, 50)))
    assert outcome.record is not None and "a000" in outcome.record.ids
    assert outcome.sends == [(f"a{LIMITS.ids - 1:03d}", Unlink("u1"))]


def test_within_the_limit_nothing_is_unlinked() -> None:
    user = full_user()
    user.ids.pop()
    outcome = handle("u1", user, fragment("z1"), ctx((FROM_P1, 50)))
    assert outcome.sends == [] and outcome.record is not None and "z1" in outcome.record.ids


def record_of(anon: str, user: str | None) -> Profile:
    """An anonymous id's record after one event (linked to ``user``, if given)."""
    event = FoldEvent(ev("identify", anon=anon, user=user), resolve=True)
    record = handle(anon, None, event, ctx((VALID, 10))).record
    assert record is not None and record.merged_into == user
    return record


@pytest.mark.parametrize(
    ("linked_to", "gone"),
    [("u1", True), ("u2", False), (None, False)],
    ids=["linked-to-it", "linked-elsewhere", "not-linked"],
)
def test_unlink_deletes_only_a_link_to_that_user(linked_to: str | None, gone: bool) -> None:
    record = record_of("z1", linked_to)
    outcome = handle("z1", record, Unlink("u1"), ctx((FROM_P1, 60)))
    assert (outcome.record is None) is gone and outcome.write is gone
    assert (outcome.erased is not None) is gone
    assert outcome.sends == []  # unlike EraseLink, no answer is awaited


def test_an_unlinked_id_replayed_brings_nothing_back_and_starts_anew_later() -> None:
    marks = handle("z1", record_of("z1", "u1"), Unlink("u1"), ctx((FROM_P1, 60))).erased
    assert marks is not None
    link = FoldEvent(ev("identify", anon="z1", user="u1"), resolve=True)
    again = handle("z1", None, link, ctx((VALID, 10), marks, here=(FROM_P1, 9)))
    assert again.record is None and not again.sends  # the linking record read again
    later = handle("z1", None, FoldEvent(ev(anon="z1"), resolve=True), ctx((VALID, 11), marks))
    assert later.record is not None and later.record.merged_into is None
    assert later.record.counts == {"page_view": 1}


def many_links() -> list[pf.ProfileEvent]:
    events = []
    for n in range(LINKED):
        anon = f"x{n:04d}"
        events += [ev(anon=anon, url="/news/a"), ev("identify", anon=anon, user="u1")]
    return events


@pytest.mark.parametrize("seed", range(3))
def test_thousands_of_links_count_once_stay_bounded_and_erase_completely(seed: int) -> None:
    events = many_links()
    sim = Simulator(events, seed).run()
    user = sim.canonical()["u1"]
    assert user.counts == {"page_view": LINKED, "identify": LINKED}
    assert len(user.ids) == LIMITS.ids and user.ids_truncated
    links = {k for k, p in sim.profiles().items() if p.merged_into == "u1"}
    assert links == set(user.ids) - {"u1"}  # the unlisted links are gone
    assert len(pf.to_bytes(user)) <= pf.MAX_PROFILE_BYTES

    before = sim.state()
    assert sim.crash(stage2=True).run().state() == before  # replays change nothing

    sim.erase("u1").run()
    holding = {k: p for k, p in sim.profiles().items() if pf.has_data(p) or p.merged_into}
    assert holding == {}
