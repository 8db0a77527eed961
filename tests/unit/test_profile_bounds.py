"""Profile bounds: no key's value grows past a fixed size, whatever the input.

(The other tables' values, campaign windows and guarded counters, are bounded by
construction; the last tests check them the same way.)

Each collection a profile holds is pushed far past its limit (by folds, as
events arrive, and by merges, as linked fragments arrive) with the longest
strings validation lets through, in 4-byte UTF-8 characters; the encoded
profile must stay under ``MAX_PROFILE_BYTES``. Then the eviction rules:
which entries stay, what is counted in ``interests_other``, and which parts
do not depend on the order.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.batches import CommandItem, encode_batch
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.events import MAX_ID_CHARS
from dmp_faust.domain.identity import MergeFragment
from dmp_faust.domain.profiles import LIMITS, MAX_PROFILE_BYTES, MINUTE_MS, Limits, Profile
from dmp_faust.domain.profiles import ProfileEvent as Ev
from dmp_faust.domain.watermarks import MAX_PARTITIONS, source_id
from dmp_faust.domain.windows import WindowStats

DAY_MS = 24 * 60 * MINUTE_MS
T0 = 28_333_333 * MINUTE_MS
KAFKA_MAX_MESSAGE_BYTES = 1024 * 1024  # the broker's default message.max.bytes (about)
SMALL = Limits(ids=4, interests=3, campaigns=2, buckets=5)


def wide(n: int, length: int = MAX_ID_CHARS) -> str:
    """A distinct string of ``length`` characters, each 4 bytes in UTF-8."""
    digits = []
    for _ in range(length):
        n, d = divmod(n, 1024)
        digits.append(chr(0x1F000 + d))
    return "".join(digits)  # the varying digits first: distinct in any prefix


def view_event(n: int, ts: int = T0, anon: str = "a1", user: str | None = None) -> Ev:
    return Ev(
        event_id=f"e{n}",
        type="page_view",
        ts=ts,
        anonymous_id=anon,
        user_id=user,
        url=f"https://x.example/{wide(n, 80)}/page",
    )


def impression(n: int, campaign: str, ts: int) -> Ev:
    return Ev(event_id=f"i{n}", type="impression", ts=ts, anonymous_id="a1", campaign_id=campaign)


def size(profile: Profile) -> int:
    return len(pf.to_bytes(profile))


# --- far past every limit: the encoded size stays under the bound ----------------------


def test_folding_far_past_every_limit_stays_under_the_bound() -> None:
    profile = Profile(profile_id=wide(0), ids=[wide(0)])
    now = T0 + DAY_MS
    for n in range(20 * LIMITS.interests):  # a new interest each time, and a new id
        pf.fold(profile, view_event(n, now, anon=wide(n + 1)), now, DAY_MS)
    for n in range(2 * LIMITS.buckets):  # a new (campaign, minute) bucket each time
        campaign = wide(n % (4 * LIMITS.campaigns) + 7)
        pf.fold(profile, impression(n, campaign, now - (n // 7) * MINUTE_MS), now, DAY_MS)
    assert len(profile.interests) == LIMITS.interests
    assert len(profile.ids) == LIMITS.ids and profile.ids_truncated
    assert len(profile.frequency) <= LIMITS.campaigns
    assert sum(map(len, profile.frequency.values())) <= LIMITS.buckets
    assert size(profile) <= MAX_PROFILE_BYTES


def worst_fragment(seed: int) -> Profile:
    """A fragment far over every limit (as a record stored before the limits could be)."""
    rng = random.Random(seed)
    return Profile(
        profile_id=wide(0),
        ids=[wide(rng.randrange(10**9)) for _ in range(10 * LIMITS.ids)],
        first_seen=-(2**62),
        last_seen=T0 + DAY_MS,
        counts={kind: 2**40 for kind in ("page_view", "impression", "click", "conversion")},
        interests={wide(rng.randrange(10**9), 64): 2**40 for _ in range(10 * LIMITS.interests)},
        frequency={
            wide(rng.randrange(10**9)): {T0 + DAY_MS - m * MINUTE_MS: 2**40 for m in range(1441)}
            for _ in range(3 * LIMITS.campaigns)
        },
    )


def test_merging_far_past_every_limit_stays_under_the_bound() -> None:
    user = Profile(profile_id=wide(0), ids=[wide(0)])
    for seed in range(5):
        pf.merge(user, worst_fragment(seed), T0 + DAY_MS, DAY_MS)
    # What a record can hold besides: a mark per source partition of both streams
    # (events.valid and profiles.in), the segments, the link fields, the ids to erase,
    # the ids its latest step unlinked (at most the limit: one step brings at most that).
    sources = [source_id(s, p) for s in (0, 1) for p in range(MAX_PARTITIONS)]
    user.applied = {s: 2**62 for s in sources}
    user.forwarded = {s: 2**62 for s in sources}
    user.segments = ["clickers", "converters", "engaged"]
    user.merged_into, user.linked_at, user.forwarded_at = wide(1), 2**62, 2**62
    user.erasing = [i for i in user.ids if i != user.profile_id]
    user.unlinked, user.unlinked_at = [wide(n + 10**6) for n in range(LIMITS.ids)], 2**62
    assert len(user.ids) == LIMITS.ids and len(user.interests) == LIMITS.interests
    assert size(user) <= MAX_PROFILE_BYTES


def test_a_merge_fragment_fits_a_batch_record_far_below_kafkas_limit() -> None:
    fragment = pf.frozen_copy(worst_fragment(1), wide(3))
    item = encode_batch([CommandItem(wide(3), 2**62, MergeFragment(fragment))])
    assert len(item) <= MAX_PROFILE_BYTES < KAFKA_MAX_MESSAGE_BYTES


# --- interests: top N by count, ties by name, the rest in interests_other ---------------


def folded(urls: list[str], limits: Limits = SMALL) -> Profile:
    profile = Profile(profile_id="a1")
    for n, url in enumerate(urls):
        event = Ev(event_id=f"e{n}", type="page_view", ts=T0, anonymous_id="a1", url=url)
        pf.fold(profile, event, T0, DAY_MS, limits)
    return profile


@pytest.mark.parametrize(
    ("sections", "interests", "other"),
    [
        pytest.param("abc", {"a": 1, "b": 1, "c": 1}, 0, id="at-the-limit"),
        pytest.param("abcd", {"a": 1, "b": 1, "c": 1}, 1, id="tie-larger-name-goes"),
        pytest.param("dcba", {"a": 1, "b": 1, "c": 1}, 1, id="tie-whatever-the-order"),
        pytest.param("ddabc", {"a": 1, "b": 1, "d": 2}, 1, id="higher-count-stays"),
        pytest.param("zzzabc", {"a": 1, "b": 1, "z": 3}, 1, id="counted-before-it-filled"),
        pytest.param("abczzz", {"a": 1, "b": 1, "c": 1}, 3, id="too-late-to-get-in"),
    ],
)
def test_interest_eviction(sections: str, interests: dict[str, int], other: int) -> None:
    profile = folded([f"/{s}/x" for s in sections])
    assert profile.interests == interests
    assert profile.interests_other == other
    assert pf.view(profile)["interests"] == interests
    assert pf.view(profile).get("interests_other", 0) == other


def test_merge_bounds_interests_and_sums_the_other_counts() -> None:
    user = folded(["/a", "/a", "/b", "/c"])
    anonymous = folded(["/d", "/d", "/d", "/e", "/f", "/g"])  # g goes to other
    assert anonymous.interests == {"d": 3, "e": 1, "f": 1} and anonymous.interests_other == 1
    pf.merge(user, anonymous, T0, DAY_MS, SMALL)
    assert user.interests == {"d": 3, "a": 2, "b": 1}
    assert user.interests_other == 1 + 3  # its own, and c, e, f evicted now


urls = st.lists(st.sampled_from([f"/{c}/x" for c in "abcdefgh"] + ["/"]), max_size=60)


@settings(max_examples=200, deadline=None)
@given(urls, st.randoms(use_true_random=False))
def test_interest_totals_are_exact_in_any_order(views: list[str], rng: random.Random) -> None:
    exact = Counter(pf.interest_of(u) for u in views if pf.interest_of(u))
    shuffled = list(views)
    rng.shuffle(shuffled)
    for order in (views, shuffled):
        profile = folded(order)
        assert len(profile.interests) <= SMALL.interests
        assert sum(profile.interests.values()) + profile.interests_other == exact.total()
        for name, n in profile.interests.items():
            assert n <= exact[name]
    if len(exact) <= SMALL.interests:  # within the limit: exact, whatever the order
        assert folded(views).interests == folded(shuffled).interests == dict(exact)


# --- ids: the own id and the smallest others, order-independent -------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([f"a{i}" for i in range(12)]), max_size=30), st.randoms())
def test_ids_are_a_bounded_union_in_any_order(anons: list[str], rng: random.Random) -> None:
    def linked(order: list[str]) -> Profile:
        user = Profile(profile_id="u1", ids=["u1"])
        for n, anon in enumerate(order):  # each link arrives as a fragment of one anon id
            fragment = pf.fold(
                Profile(profile_id=anon), view_event(n, anon=anon, user="u1"), T0, DAY_MS
            )
            pf.merge(user, pf.frozen_copy(fragment, "u1"), T0, DAY_MS, SMALL)
        return user

    shuffled = list(anons)
    rng.shuffle(shuffled)
    first, second = linked(anons), linked(shuffled)
    distinct = sorted(set(anons))
    assert set(first.ids) == set(second.ids) == {"u1", *distinct[: SMALL.ids - 1]}
    assert first.ids_truncated is second.ids_truncated is (len(distinct) >= SMALL.ids)
    assert pf.view(first).get("ids_truncated", False) is first.ids_truncated


def test_the_own_id_stays_whatever_its_name() -> None:
    user = Profile(profile_id="zz", ids=["zz"])
    for anon in ("a", "b", "c", "d", "e"):
        pf.fold(
            user,
            Ev(event_id=anon, type="identify", ts=T0, anonymous_id=anon, user_id="zz"),
            T0,
            DAY_MS,
            SMALL,
        )
    assert user.ids == ["zz", "a", "b", "c"]
    assert pf.facts(user)["ids"] == SMALL.ids


# --- frequency: the most recent campaigns and buckets ------------------------------------


def test_frequency_keeps_the_most_recently_active_campaigns() -> None:
    profile = Profile(profile_id="a1")
    for n, (campaign, minute) in enumerate([("c1", 0), ("c2", 2), ("c3", 1), ("c4", 2)]):
        pf.fold(
            profile,
            impression(n, campaign, T0 + minute * MINUTE_MS),
            T0 + 2 * MINUTE_MS,
            DAY_MS,
            SMALL,
        )
    assert sorted(profile.frequency) == ["c2", "c4"]  # c1 went first, then c3 (older)


def test_frequency_keeps_the_most_recent_buckets() -> None:
    profile = Profile(profile_id="a1")
    now = T0 + 10 * MINUTE_MS
    for n in range(8):
        pf.fold(profile, impression(n, "c1", T0 + n * MINUTE_MS), now, DAY_MS, SMALL)
    assert sorted(profile.frequency["c1"]) == [T0 + m * MINUTE_MS for m in range(3, 8)]
    assert pf.impressions_within(profile, "c1", now, DAY_MS) == SMALL.buckets


def test_frozen_copy_bounds_a_record_stored_before_the_limits() -> None:
    copy = pf.frozen_copy(worst_fragment(7), "u1")
    assert len(copy.ids) == LIMITS.ids and len(copy.interests) == LIMITS.interests
    assert len(copy.frequency) <= LIMITS.campaigns
    assert sum(copy.interests.values()) + copy.interests_other == 10 * LIMITS.interests * 2**40


# --- the other tables' values are bounded by construction: checked all the same -----------

ALL_SOURCES = [source_id(s, p) for s in (0, 1) for p in range(MAX_PARTITIONS)]
MAX_OTHER_VALUE_BYTES = 64 * 1024


def test_a_campaign_window_stays_bounded_whatever_the_users() -> None:
    stats = WindowStats()
    for n in range(100_000):  # distinct profile ids: the sketch, not a set, remembers them
        stats.apply("impression", f"user-{n}", None)
    for source in ALL_SOURCES:
        stats.apply_once((source, 2**62), "click", wide(0), None)
    assert len(stats.to_bytes()) <= MAX_OTHER_VALUE_BYTES


def test_a_guarded_counter_stays_bounded_whatever_the_deltas() -> None:
    counter = GuardedCounter()
    for source in ALL_SOURCES:
        counter.apply_offsets(source, {offset: 1 for offset in range(2**40, 2**40 + 50)})
    assert len(counter.to_bytes()) <= MAX_OTHER_VALUE_BYTES
