"""Profiles: interests from URLs, the fold per event type, merges, the frequency horizon
(to the minute), facts, the view, bytes, whether a record has data, and frozen copies."""

from __future__ import annotations

import msgspec
import pytest

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.events import Event
from dmp_faust.domain.profiles import MINUTE_MS, Profile, ProfileEvent

DAY_MS = 24 * 60 * MINUTE_MS
T0 = 28_333_333 * MINUTE_MS  # 2023-11-14T22:13Z, the start of a minute


def event(
    type_: str = "page_view",
    ts: int = T0,
    *,
    anonymous_id: str | None = "a1",
    user_id: str | None = None,
    campaign_id: str | None = None,
    url: str | None = None,
) -> ProfileEvent:
    return ProfileEvent(
        event_id=f"{type_}-{ts}",
        type=type_,
        ts=ts,
        anonymous_id=anonymous_id,
        user_id=user_id,
        campaign_id=campaign_id,
        url=url,
    )


def folded(*events: ProfileEvent, profile_id: str = "a1") -> Profile:
    profile = Profile(profile_id=profile_id)
    for e in events:
        pf.fold(profile, e, max(x.ts for x in events), DAY_MS)
    return profile


# --- interests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "interest"),
    [
        pytest.param("/sports/x", "sports", id="path"),
        pytest.param("/sports", "sports", id="one-segment"),
        pytest.param("sports/x", "sports", id="relative"),
        pytest.param("///tech//x", "tech", id="repeated-slashes"),
        pytest.param("/ sports /x", "sports", id="spaces"),
        pytest.param("/", None, id="root"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("   ", None, id="blank"),
        pytest.param("/news?x=/sports", "news", id="query-after-path"),
        pytest.param("/?q=/sports", None, id="query-only"),
        pytest.param("#/sports", None, id="fragment-only"),
        pytest.param("/SPORTS", "sports", id="upper-case"),
        pytest.param("/Sports/X", "sports", id="mixed-case"),
        pytest.param("https://ex.com/Travel/paris?a=1#f", "travel", id="full-url"),
        pytest.param("HTTPS://EX.COM/NEWS", "news", id="full-url-upper"),
        pytest.param("https://ex.com", None, id="host-only"),
        pytest.param("https://ex.com/", None, id="host-and-root"),
        pytest.param("//cdn.ex.com/music/a", "music", id="scheme-relative"),
        pytest.param("http://[::1", None, id="garbage-ipv6"),
        pytest.param("http://[bad/x", None, id="garbage-bracket"),
        pytest.param("/" + "x" * 100, "x" * 64, id="capped-at-64"),
    ],
)
def test_interest_of(url: str | None, interest: str | None) -> None:
    assert pf.interest_of(url) == interest


# --- fold -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "url", "campaign", "interests", "frequency"),
    [
        pytest.param("page_view", "/sports/x", None, {"sports": 1}, {}, id="page-view"),
        pytest.param("page_view", None, None, {}, {}, id="page-view-no-url"),
        pytest.param("page_view", "/", None, {}, {}, id="page-view-root"),
        pytest.param("click", "/sports/x", "c1", {}, {}, id="click-no-interest"),
        pytest.param("conversion", "/sports/x", "c1", {}, {}, id="conversion"),
        pytest.param("identify", "/sports/x", None, {}, {}, id="identify"),
        pytest.param("impression", "/sports/x", "c1", {}, {"c1": {T0: 1}}, id="impression"),
        pytest.param("impression", None, None, {}, {}, id="impression-no-campaign"),
    ],
)
def test_fold_per_event_type(
    kind: str,
    url: str | None,
    campaign: str | None,
    interests: dict[str, int],
    frequency: dict[str, dict[int, int]],
) -> None:
    profile = folded(event(kind, T0 + 1_500, url=url, campaign_id=campaign))
    assert profile.counts == {kind: 1}
    assert profile.interests == interests
    assert profile.frequency == frequency
    assert (profile.first_seen, profile.last_seen) == (T0 + 1_500, T0 + 1_500)


def test_fold_sums_counts_and_interests() -> None:
    profile = folded(
        event("page_view", T0, url="/sports/a"),
        event("page_view", T0 + 1, url="/Sports/b"),
        event("page_view", T0 + 2, url="/news"),
        event("click", T0 + 3, url="/sports"),
    )
    assert profile.counts == {"page_view": 3, "click": 1}
    assert profile.interests == {"sports": 2, "news": 1}


def test_fold_buckets_impressions_by_minute_per_campaign() -> None:
    profile = folded(
        event("impression", T0, campaign_id="c1"),
        event("impression", T0 + MINUTE_MS - 1, campaign_id="c1"),
        event("impression", T0 + MINUTE_MS, campaign_id="c1"),
        event("impression", T0 + 5, campaign_id="c2"),
        event("click", T0 + 6, campaign_id="c2"),
    )
    assert profile.frequency == {"c1": {T0: 2, T0 + MINUTE_MS: 1}, "c2": {T0: 1}}


def test_first_and_last_seen_are_min_and_max_whatever_the_order() -> None:
    profile = folded(event(ts=T0 + 50), event(ts=T0 + 10), event(ts=T0 + 90), event(ts=T0 + 20))
    assert (profile.first_seen, profile.last_seen) == (T0 + 10, T0 + 90)


def test_fold_adds_each_id_once_in_order() -> None:
    profile = folded(
        event(anonymous_id="a1"),
        event(anonymous_id="a1", user_id="u1"),
        event(anonymous_id=None, user_id="u1"),
        event(anonymous_id="", user_id=None),
    )
    assert profile.ids == ["a1", "u1"]


def test_fold_prunes_buckets_that_left_the_horizon() -> None:
    profile = folded(event("impression", T0, campaign_id="old"))
    later = event("impression", T0 + 2 * DAY_MS, campaign_id="new")
    pf.fold(profile, later, later.ts, DAY_MS)
    assert profile.frequency == {"new": {T0 + 2 * DAY_MS: 1}}


def test_profile_event_keeps_what_profiles_use() -> None:
    full = Event(
        event_id="e1",
        type="impression",
        ts=T0,
        anonymous_id="a1",
        user_id="u1",
        campaign_id="c1",
        ad_id="ad",
        url="/x",
        referrer="/r",
        ip="10.0.0.0",
    )
    assert pf.profile_event(full) == ProfileEvent(
        event_id="e1",
        type="impression",
        ts=T0,
        anonymous_id="a1",
        user_id="u1",
        campaign_id="c1",
        url="/x",
    )


# --- merge ----------------------------------------------------------------------------


def test_merge_sums_unions_and_takes_min_max() -> None:
    user = folded(
        event("page_view", T0 + 100, anonymous_id=None, user_id="u1", url="/sports"),
        event("impression", T0 + 200, anonymous_id=None, user_id="u1", campaign_id="c1"),
        profile_id="u1",
    )
    anonymous = folded(
        event("page_view", T0 + 50, url="/sports"),
        event("page_view", T0 + 60, url="/news"),
        event("impression", T0 + 300, campaign_id="c1"),
        event("impression", T0 + MINUTE_MS, campaign_id="c2"),
        event("identify", T0 + 400, user_id="u1"),
    )
    pf.merge(user, anonymous, T0 + MINUTE_MS, DAY_MS)
    assert sorted(user.ids) == ["a1", "u1"]
    assert (user.first_seen, user.last_seen) == (T0 + 50, T0 + MINUTE_MS)
    assert user.counts == {"page_view": 3, "impression": 3, "identify": 1}
    assert user.interests == {"sports": 2, "news": 1}
    assert user.frequency == {"c1": {T0: 2}, "c2": {T0 + MINUTE_MS: 1}}
    assert user.profile_id == "u1"


def test_merge_into_an_empty_profile_copies() -> None:
    anonymous = folded(event("page_view", T0, url="/sports"), event("click", T0 + 9))
    empty = Profile(profile_id="u1", ids=["u1"])
    pf.merge(empty, anonymous, T0, DAY_MS)
    assert (empty.first_seen, empty.last_seen) == (T0, T0 + 9)
    assert empty.counts == anonymous.counts
    assert empty.interests == anonymous.interests
    assert empty.ids == ["u1", "a1"]


def test_merge_of_an_empty_fragment_changes_nothing() -> None:
    user = folded(event("click", T0 + 5, anonymous_id=None, user_id="u1"), profile_id="u1")
    before = pf.to_bytes(user)
    pf.merge(user, Profile(profile_id="u1"), T0 + 5, DAY_MS)
    assert pf.to_bytes(user) == before


def test_merge_prunes_buckets_that_left_the_horizon() -> None:
    user = Profile(profile_id="u1")
    fragment = Profile(profile_id="u1", frequency={"c1": {T0: 1, T0 + DAY_MS: 1}})
    pf.merge(user, fragment, T0 + DAY_MS + MINUTE_MS, DAY_MS)
    assert user.frequency == {"c1": {T0 + DAY_MS: 1}}


# --- the frequency horizon ------------------------------------------------------------

LAST_KEPT = T0 + MINUTE_MS + DAY_MS - 1  # the bucket [T0, T0+1min) still overlaps the day


@pytest.mark.parametrize(
    ("stream_time", "kept"),
    [
        pytest.param(T0, True, id="same-minute"),
        pytest.param(T0 + DAY_MS, True, id="one-day-later"),
        pytest.param(LAST_KEPT, True, id="last-ms-of-overlap"),
        pytest.param(LAST_KEPT + 1, False, id="bucket-left-the-day"),
        pytest.param(T0 + 2 * DAY_MS, False, id="a-day-after-it-left"),
    ],
)
def test_horizon_boundary_to_the_minute(stream_time: int, kept: bool) -> None:
    profile = Profile(profile_id="u1", frequency={"c1": {T0: 3}, "c2": {T0 + DAY_MS: 1}})
    assert pf.impressions_within(profile, "c1", stream_time, DAY_MS) == (3 if kept else 0)
    pf.prune_frequency(profile, stream_time, DAY_MS)
    assert ("c1" in profile.frequency) is kept
    assert profile.frequency["c2"] == {T0 + DAY_MS: 1}


def test_impressions_within_sums_the_buckets_in_the_horizon() -> None:
    profile = Profile(
        profile_id="u1",
        frequency={"c1": {T0: 1, T0 + MINUTE_MS: 2, T0 + 2 * MINUTE_MS: 4}, "c2": {T0: 8}},
    )
    now = T0 + DAY_MS + MINUTE_MS  # [T0, T0+1min) has just left
    assert pf.impressions_within(profile, "c1", now, DAY_MS) == 6
    assert pf.impressions_within(profile, "c2", now, DAY_MS) == 0
    assert pf.impressions_within(profile, "c3", now, DAY_MS) == 0
    assert pf.impressions_within(None, "c1", now, DAY_MS) == 0


def test_prune_keeps_a_campaign_with_a_bucket_left() -> None:
    profile = Profile(profile_id="u1", frequency={"c1": {T0: 1, T0 + DAY_MS: 2}})
    pf.prune_frequency(profile, T0 + DAY_MS + MINUTE_MS, DAY_MS)
    assert profile.frequency == {"c1": {T0 + DAY_MS: 2}}


# --- facts, view, bytes, copies -------------------------------------------------------


def test_facts_keys() -> None:
    profile = folded(
        event("page_view", T0, url="/sports"),
        event("click", T0 + 1, user_id="u1"),
    )
    assert pf.facts(profile) == {
        "counts.page_view": 1,
        "counts.click": 1,
        "interests.sports": 1,
        "ids": 2,
    }
    assert pf.facts(Profile(profile_id="x")) == {"ids": 0}


def test_view_shape() -> None:
    profile = Profile(
        profile_id="u1",
        ids=["u1", "b2", "a1"],
        first_seen=T0,
        last_seen=T0 + 5,
        counts={"page_view": 2, "click": 1},
        interests={"sports": 1, "news": 1},
        segments=["engaged", "clickers"],
        frequency={"c1": {T0: 1}},
        merged_into=None,
        applied={0: 5},
    )
    view = pf.view(profile)
    assert view == {
        "profile_id": "u1",
        "ids": ["a1", "b2", "u1"],
        "first_seen": T0,
        "last_seen": T0 + 5,
        "counts": {"click": 1, "page_view": 2},
        "interests": {"news": 1, "sports": 1},
        "segments": ["clickers", "engaged"],
    }
    counts = view["counts"]
    assert isinstance(counts, dict)
    assert list(counts) == ["click", "page_view"]


def full_profile() -> Profile:
    return Profile(
        profile_id="a1",
        ids=["a1", "u1"],
        first_seen=T0,
        last_seen=T0 + 5,
        counts={"page_view": 2, "impression": 1},
        interests={"sports": 2},
        segments=["engaged"],
        frequency={"c1": {T0: 1, T0 + MINUTE_MS: 2}},
        merged_into="u1",
        linked_at=9,
        forwarded={0: 7},
        forwarded_at=12,
        applied={0: 5, 1027: 9},
    )


def erasing_profile() -> Profile:
    """A canonical record whose erasure waits for its linked ids."""
    return Profile(profile_id="u1", ids=["u1"], applied={0: 5, 1025: 40}, erasing=["a1", "a2"])


@pytest.mark.parametrize(
    "profile",
    [
        pytest.param(Profile(profile_id="x"), id="empty"),
        pytest.param(full_profile(), id="full"),
        pytest.param(erasing_profile(), id="erasing"),
    ],
)
def test_bytes_round_trip(profile: Profile) -> None:
    back = pf.from_bytes(pf.to_bytes(profile))
    assert back == profile
    assert back is not None
    assert back.frequency == profile.frequency  # int minute keys survive msgpack
    assert back.forwarded == profile.forwarded  # int source keys too


@pytest.mark.parametrize(
    ("profile", "has"),
    [
        pytest.param(Profile(profile_id="x"), True, id="empty"),
        pytest.param(full_profile(), True, id="full"),
        pytest.param(erasing_profile(), False, id="waits-for-its-erasure"),
        pytest.param(
            msgspec.structs.replace(erasing_profile(), counts={"click": 1}),
            True,
            id="events-since-the-erasure",
        ),
    ],
)
def test_has_data(profile: Profile, has: bool) -> None:
    assert pf.has_data(profile) is has


@pytest.mark.parametrize("raw", [None, b""])
def test_from_nothing_is_none(raw: bytes | None) -> None:
    assert pf.from_bytes(raw) is None


def test_frozen_copy_is_the_mergeable_state_under_the_user_id() -> None:
    original = full_profile()
    copy = pf.frozen_copy(original, "u1")
    assert copy == Profile(
        profile_id="u1",
        ids=["a1", "u1"],
        first_seen=T0,
        last_seen=T0 + 5,
        counts={"page_view": 2, "impression": 1},
        interests={"sports": 2},
        frequency={"c1": {T0: 1, T0 + MINUTE_MS: 2}},
    )


def test_frozen_copy_is_independent_of_the_original() -> None:
    original = full_profile()
    before = pf.to_bytes(original)
    copy = pf.frozen_copy(original, "u1")
    copy.ids.append("zz")
    copy.counts["page_view"] += 10
    copy.counts["click"] = 1
    copy.interests["news"] = 1
    copy.frequency["c1"][T0] += 10
    copy.frequency["c2"] = {T0: 1}
    pf.merge(copy, original, T0, DAY_MS)
    assert pf.to_bytes(original) == before


def test_a_linked_id_is_merged_once_its_id_is_listed() -> None:
    profile = Profile(profile_id="u1", ids=["u1"], counts={"page_view": 2})
    assert not pf.has_merged(profile, "a1")  # its fragment is still travelling
    profile.ids.append("a1")
    assert pf.has_merged(profile, "a1")


def test_past_the_id_limit_nothing_tells_and_the_profile_answers() -> None:
    profile = Profile(profile_id="u1", ids=["u1"], ids_truncated=True)
    assert pf.has_merged(profile, "a9")
