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

import random
from collections import Counter

import pytest

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.identity import (
    MAX_ERASURES_WAITING,
    Erase,
    EraseDone,
    EraseLink,
    FoldEvent,
    MergeFragment,
    Unlink,
    handle,
)
from dmp_faust.domain.profiles import LIMITS, Profile, ProfileEvent
from tests.unit.test_identity import (
    FROM_P1,
    FROM_P2,
    HTTP,
    T0,
    VALID,
    Scenario,
    Simulator,
    ctx,
    ev,
    follow,
    http,
    random_graph,
    user_with_two_anonymous_ids,
)

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
    [("u1", True), ("u2", True), (None, False)],
    ids=["linked-to-it", "linked-through-another-id", "not-linked"],
)
def test_unlink_deletes_a_linked_record_only(linked_to: str | None, gone: bool) -> None:
    """u1 lists z1 only if z1's data reached it along z1's pointers: z1 -> u1, or
    z1 -> u2 -> u1 (a chain; u2 has linked on to u1). Either way z1 goes; a record that
    is not linked (a root, here a new anonymous profile) stays."""
    record = record_of("z1", linked_to)
    outcome = handle("z1", record, Unlink("u1"), ctx((FROM_P1, 60)))
    assert (outcome.record is None) is gone and outcome.write
    assert (outcome.erased is not None) is gone
    assert outcome.sends == []  # unlike EraseLink, no answer is awaited
    assert outcome.profiles_delta == 0  # a linked record is no canonical profile
    if not gone:  # its mark, so that the Unlink read again once it has linked does nothing
        assert outcome.record is not None and outcome.record.applied[FROM_P1] == 60


def test_unlink_leaves_a_cut_root_and_a_replay_alone() -> None:
    cut = record_of("z1", "u1")
    cut.merged_into = None  # its link was cut to break a cycle: it is its person's root
    assert handle("z1", cut, Unlink("u1"), ctx((FROM_P1, 60))).record is cut
    linked = record_of("z1", "u1")
    linked.forwarded = {FROM_P1: 70}  # it forwarded a later command of that partition
    assert handle("z1", linked, Unlink("u1"), ctx((FROM_P1, 60))).record is linked


def test_a_link_request_that_leaves_an_id_out_unlinks_it() -> None:
    """A user with a full list of ids links on to another user (a user id reused as an
    anonymous id): the linking event adds that user, the largest other id goes. The user
    itself, left out, is not unlinked: its pointer does not lead here."""
    user = full_user()
    link = FoldEvent(ev("identify", anon="u1", user="a0"), resolve=True)
    outcome = handle("u1", user, link, ctx((VALID, 70)))
    assert outcome.record is not None and outcome.record.merged_into == "a0"
    assert outcome.sends[1:] == [(f"a{LIMITS.ids - 1:03d}", Unlink("u1"))]
    past = FoldEvent(ev("identify", anon="u1", user="b0"), resolve=True)
    outcome = handle("u1", full_user(), past, ctx((VALID, 70)))
    assert [target for target, _ in outcome.sends] == ["b0"]  # the user it links to: no Unlink
    fragment = outcome.sends[0][1]
    assert isinstance(fragment, MergeFragment) and len(fragment.fragment.ids) == LIMITS.ids


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


@pytest.mark.parametrize("seed", range(10))
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

    erasure = sim.erase("u1")
    sim.run()
    holding = {k: p for k, p in sim.profiles().items() if pf.has_data(p) or p.merged_into}
    assert holding == {}
    status = sim.statuses[erasure]
    assert status is not None and status.status == "erased"
    assert sim.profile_count == 0 and sim.sizes() == {}


# --- random link graphs, with a small limit -------------------------------------------

SMALL = pf.Limits(ids=3)  # a profile lists its own id and 2 others: most graphs go past


def small_graph(seed: int) -> Scenario:
    """``random_graph``, with more ids linking into few users, so that lists overflow."""
    rng = random.Random(seed)
    s = random_graph(seed)
    users, anons = ["i0", "i1"], [f"x{k}" for k in range(rng.randint(3, 7))]
    for _ in range(rng.randint(6, 16)):
        anon, kind = rng.choice(anons), rng.random()
        if kind < 0.4:
            s.add(1, anon, first=rng.randrange(6))
        else:
            s.add(1, anon, rng.choice(users), first=rng.randrange(6))
    return s


def unlisted_links(sim: Simulator) -> list[str]:
    """Linked records that no canonical profile lists: an erasure would not reach them.

    (A linked record's data is in the profile its pointers led to when it linked; that
    profile lists it, or has unlinked it. Its pointers may lead elsewhere since: to an id
    that was unlinked itself, whose later commands started a profile of their own.)"""
    listed = {i for p in sim.canonical().values() for i in p.ids}
    return sorted(k for k, p in sim.profiles().items() if p.merged_into and k not in listed)


def assert_bounded_and_reachable(sim: Simulator, events: list[ProfileEvent]) -> None:
    """Each event counted once (in some canonical profile: an unlinked id's later events
    start one of their own); no record lists more than the limit; every linked record is
    listed by a canonical profile (so an erasure of that profile reaches it); the
    profile count and segment sizes agree with the profiles."""
    where = f"seed {sim.seed}"
    canonical = sim.canonical()
    total = Counter[str]()
    for p in canonical.values():
        total.update(p.counts)
    assert total == Counter(e.type for e in events), where
    records = sim.profiles()
    assert all(len(p.ids) <= SMALL.ids for p in records.values()), where
    assert unlisted_links(sim) == [], where
    assert sim.profile_count == len(canonical), where
    in_segment = Counter(s for p in canonical.values() for s in p.segments)
    assert sim.sizes() == dict(in_segment), where


@pytest.mark.parametrize("graph", range(40))
def test_random_link_graphs_past_a_small_limit(graph: int) -> None:
    """Random interleavings, crashes (some losing what a record sent), then replays and
    new copies from stage 2, with ``Limits(ids=3)``."""
    scenario = small_graph(graph)
    for seed in range(6):
        sim = Simulator(scenario.events, seed, limits=SMALL)
        for _ in range(2):
            sim.run(steps=sim.rng.randrange(2 * len(scenario.events)))
            sim.crash_losing_sends() if sim.rng.random() < 0.5 else sim.crash()
        assert_bounded_and_reachable(sim.run(), scenario.events)
        before = sim.state()
        assert sim.crash().run().state() == before, f"seed {seed}"
        assert sim.crash(stage2=True).run().state() == before, f"seed {seed}"


@pytest.mark.parametrize("graph", range(40))
def test_erasure_past_a_small_limit_leaves_nothing_linked(graph: int) -> None:
    """A DELETE of a random id at a random moment, crashes included, ``Limits(ids=3)``:
    the erasure ends ``erased``; the erased id holds nothing and no linked record leads
    to it; every linked record is still listed by a canonical profile; replays change
    nothing."""
    scenario = small_graph(graph)
    ids = sorted({i for e in scenario.events for i in (e.anonymous_id, e.user_id) if i})
    cutoff = max(e.ts for e in scenario.events)
    for seed in range(4):
        sim = Simulator(scenario.events, seed, limits=SMALL)
        sim.run(steps=sim.rng.randrange(2 * len(scenario.events)))
        erased_id = sim.rng.choice(ids)
        erasure = sim.erase(erased_id, cutoff)
        if sim.rng.random() < 0.5:
            sim.run(steps=sim.rng.randrange(len(scenario.events)))
            sim.crash_losing_sends() if sim.rng.random() < 0.5 else sim.crash()
        sim.run()
        where = f"seed {seed}"
        status = sim.statuses[erasure]
        assert status is not None and status.status == "erased", where
        records = sim.profiles()
        assert erased_id not in records or not records[erased_id].counts, where
        leading = [k for k, p in records.items() if p.merged_into and follow(sim, k) == erased_id]
        assert leading == [], where
        assert not any(p.erasing for p in records.values()), where
        assert unlisted_links(sim) == [], where
        assert sim.profile_count == len(sim.canonical()), where
        before = sim.state()
        assert sim.crash().run().state() == before, where


# --- erasures waiting on one record ---------------------------------------------------


def test_a_record_being_erased_keeps_at_most_max_erasures_waiting() -> None:
    """DELETEs of a person whose erasure is under way: each asks the linked ids again,
    but the record keeps only MAX_ERASURES_WAITING erasure ids to report."""
    record = handle("u1", user_with_two_anonymous_ids(), Erase(T0, "er-0"), http(HTTP)).record
    assert record is not None and record.erasing == ["a1", "a2"]
    for n in range(1, 3 * MAX_ERASURES_WAITING):
        outcome = handle("u1", record, Erase(T0 + n, f"er-{n}"), http((FROM_P1, 40 + n)))
        assert [target for target, _ in outcome.sends if target in ("a1", "a2")] == ["a1", "a2"]
        assert outcome.record is not None
        record = outcome.record
    assert record.erasure_ids == [f"er-{n}" for n in range(MAX_ERASURES_WAITING)]
    assert outcome.before_ms == T0 + n  # the latest cutoff is kept, for data in flight


@pytest.mark.parametrize("seed", range(6))
def test_every_one_of_many_erasures_of_one_person_ends_erased(seed: int) -> None:
    """3 x MAX_ERASURES_WAITING DELETEs of one person at once, by its ids in turn: each is
    reported ``erased`` in the end, those past the limit by their own answers."""
    events = [ev(anon=f"a{n}", url="/news/a") for n in range(4)]
    events += [ev("identify", anon=f"a{n}", user="u1") for n in range(4)]
    sim = Simulator(events, seed).run()
    erasures = [sim.erase(["u1", "a0", "a1"][n % 3], T0) for n in range(3 * MAX_ERASURES_WAITING)]
    peak = 0
    while any(sim.read[i] < len(log) for i, log in enumerate(sim.log)):
        sim.run(steps=1)
        peak = max([peak, *(len(p.erasure_ids) for p in sim.profiles().values())])
    assert 1 < peak <= MAX_ERASURES_WAITING
    for erasure in erasures:
        status = sim.statuses[erasure]
        assert status is not None and status.status == "erased", erasure
    assert sim.canonical() == {} and sim.profile_count == 0


def test_a_second_erasure_takes_the_data_that_came_since_the_first_began() -> None:
    """u1 is being erased (cutoff T0) and gets a conversion at T0 + 90 (a new profile), by
    a new anonymous id a3: a DELETE with a later cutoff erases it, and a3, before the
    record goes; the erasure from before the cutoff still waits for a1 and a2."""
    erasing = handle("u1", user_with_two_anonymous_ids(), Erase(T0, "er-0"), http(HTTP)).record
    later = MergeFragment(Profile(profile_id="u1", ids=["a3", "u1"], counts={"conversion": 1}))
    later.fragment.first_seen = later.fragment.last_seen = T0 + 90
    fresh = handle("u1", erasing, later, ctx((FROM_P2, 20), here=(FROM_P1, 41))).record
    assert fresh is not None and fresh.counts == {"conversion": 1}
    again = handle("u1", fresh, Erase(T0 + 100, "er-1"), http((FROM_P1, 42)))
    assert again.record is not None and again.record.counts == {}
    assert again.record.erasing == ["a1", "a2", "a3"]
    assert again.record.erasure_ids == ["er-0", "er-1"]
    assert (again.profiles_delta, again.exited, again.before_ms) == (-1, ["converters"], T0 + 100)
    assert [t for t, c in again.sends if isinstance(c, EraseLink)] == ["a1", "a2", "a3"]
    replay = handle("u1", again.record, Erase(T0 + 100, "er-1"), http((FROM_P1, 42)))
    assert (replay.record, replay.profiles_delta) == (again.record, 0)
    done = again.record
    for n, linked in enumerate(["a1", "a2", "a3"]):
        done = handle("u1", done, EraseDone(linked, "er-1"), ctx((FROM_P2, 30 + n))).record
    assert done is None
