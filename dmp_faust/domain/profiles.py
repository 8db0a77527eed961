"""Profiles: what is known about one person, folded from their events.

A profile is keyed by its canonical id: the user_id once one is known, else
the anonymous_id. Its parts are all mergeable (ids: union; first/last seen:
min/max; counts, interests, frequency: sums), so folding events and merging
fragments commute: the profile does not depend on the order its parts arrive.

Identity stitching (see ``agents/profiles.py`` for the routing):

* every event that carries an anonymous_id is first handled on the anonymous
  id's partition, where its record says whether the id is linked to a user;
* the first event carrying both ids links them: the anonymous record freezes
  (``merged_into`` = the user id) and its whole state, that event included,
  is sent to the user's partition as one merge;
* events carrying only a linked anonymous_id are forwarded to the user.

All decisions about one anonymous id are taken on one partition, in offset
order, so whether the linking event comes before, between or after the
anonymous events, every event is counted once, in the user's profile.

Bounds (:class:`Limits`). Nothing a profile holds grows with its input past
a fixed size, so no key's value can outgrow a Kafka record (a profile is one
changelog record, and a linked anonymous profile travels as one item of a
``profiles.in`` batch): at most :data:`MAX_PROFILE_BYTES` encoded, whatever
the input. Every fold and merge applies the limits, evicting deterministically:

* ``interests``: the top ``Limits.interests`` by count, ties broken by name
  (the smaller name stays); the page views of evicted interests are added to
  ``interests_other``, so ``sum(interests) + interests_other`` is always the
  exact number of page views with an interest, in any order.
* ``ids``: the profile's own id and the ``Limits.ids - 1`` smallest other
  ids (by name); ``ids_truncated`` is set once an id was left out. This is a
  bounded union, so it does not depend on the order either. An erasure of
  the profile sends ``EraseLink`` only to the ids listed, so a linked id left
  out is unlinked (``Unlink``, see :mod:`dmp_faust.domain.identity`): what it
  brought stays counted here, its later events start a new profile.
* ``frequency``: at most ``Limits.campaigns`` campaigns (those with the most
  recent impression stay; ties: the smaller name) and ``Limits.buckets``
  minute buckets over all campaigns (the most recent stay). An evicted
  campaign or bucket no longer counts towards frequency capping.

Below the limits, folds and merges are exact and order-independent as
described above. Past ``Limits.interests``, ``Limits.campaigns`` or
``Limits.buckets`` they are not: which interests stay and their counts
depend on the order (an interest evicted early and seen again later starts
again from the new events), and so can ``facts``; replays of the same input
still give the same profile, since a partition is read in offset order.

What else a record holds is bounded by construction: ``counts`` by the event
types, ``segments`` by the rules, ``applied`` and ``forwarded`` by the number
of source partitions (two streams of at most ``MAX_PARTITIONS`` each),
``erasing`` and ``unlinked`` by ``ids`` (``Limits.ids`` each), ``erasure_ids`` by
``identity.MAX_ERASURES_WAITING``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

import msgspec

from dmp_faust.domain.events import Event
from dmp_faust.domain.watermarks import Watermarks

K = TypeVar("K")
IMPRESSION: Final = "impression"
MINUTE_MS: Final = 60_000
# Most bytes a profile can encode to under the default limits, whatever the input
# (checked by tests/unit/test_profile_bounds.py): well below Kafka's 1 MiB record.
MAX_PROFILE_BYTES: Final = 320 * 1024


@dataclass(frozen=True)
class Limits:
    """How much of each growing collection a profile keeps (see the module docstring)."""

    ids: int = 100  # listed ids, the profile's own included
    interests: int = 64  # interests counted by name; the rest in ``interests_other``
    campaigns: int = 64  # campaigns with frequency buckets
    buckets: int = 2048  # frequency minute buckets, over all campaigns


LIMITS: Final = Limits()


class ProfileEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a clean event that profiles use."""

    event_id: str
    type: str
    ts: int
    anonymous_id: str | None = None
    user_id: str | None = None
    campaign_id: str | None = None
    url: str | None = None


class Profile(msgspec.Struct, kw_only=True, omit_defaults=True):
    profile_id: str
    ids: list[str] = msgspec.field(default_factory=list)
    ids_truncated: bool = False  # an id was left out of ``ids`` (see Limits.ids)
    first_seen: int | None = None
    last_seen: int | None = None
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    interests: dict[str, int] = msgspec.field(default_factory=dict)
    interests_other: int = 0  # page views of interests evicted from ``interests``
    segments: list[str] = msgspec.field(default_factory=list)
    # campaign -> minute start -> impressions, for frequency capping
    frequency: dict[str, dict[int, int]] = msgspec.field(default_factory=dict)
    # set on an anonymous record once linked: the user id its state went to,
    # the offset of the linking record, and the sources forwarded since; a record
    # whose link was cut to break a cycle keeps ``linked_at`` (it never links again)
    merged_into: str | None = None
    linked_at: int | None = None
    forwarded: dict[int, int] = msgspec.field(default_factory=dict)
    forwarded_at: int | None = None
    # set on a canonical record being erased: the linked ids still to erase, and the
    # erasures (their ids) to report done once they are
    erasing: list[str] = msgspec.field(default_factory=list)
    erasure_ids: list[str] = msgspec.field(default_factory=list)
    # the ids the latest fold or merge left out of ``ids`` (sent ``Unlink``), and the
    # offset of the record it handled: sent again if that record is read again
    unlinked: list[str] = msgspec.field(default_factory=list)
    unlinked_at: int | None = None
    # source id -> highest offset folded in (see dmp_faust.domain.watermarks)
    applied: dict[int, int] = msgspec.field(default_factory=dict)

    @property
    def watermarks(self) -> Watermarks:
        return Watermarks(self.applied)


def profile_event(event: Event) -> ProfileEvent:
    return ProfileEvent(
        event_id=event.event_id,
        type=event.type,
        ts=event.ts,
        anonymous_id=event.anonymous_id,
        user_id=event.user_id,
        campaign_id=event.campaign_id,
        url=event.url,
    )


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Profile)


def to_bytes(profile: Profile) -> bytes:
    return _encoder.encode(profile)


def from_bytes(raw: bytes | None) -> Profile | None:
    return _decoder.decode(raw) if raw else None


def has_data(profile: Profile) -> bool:
    """False for a record that only waits for its erasure to complete."""
    return bool(profile.counts) or not profile.erasing


def has_merged(profile: Profile, linked_id: str) -> bool:
    """Whether the state of ``linked_id``, linked to ``profile``, is merged into it.

    A linked id's record reaches the record it is linked to as a merge fragment
    that lists it, and only then does its id join ``ids`` there. Until it has,
    the profile lacks that id's events: a lookup by the linked id must wait, not
    answer less than the id's own record answered before its link. Past the id
    limit an id may be left out of ``ids`` (its link goes with an ``Unlink``):
    then nothing tells, and the profile answers as it is.
    """
    return linked_id in profile.ids or profile.ids_truncated


def interest_of(url: str | None) -> str | None:
    """The first path segment of a URL, lower-cased: ``/sports/x`` -> ``sports``."""
    if not url:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    first = path.strip("/").split("/", 1)[0].strip().lower()
    return first[:64] or None


def fold(
    profile: Profile,
    event: ProfileEvent,
    stream_time: int,
    horizon_ms: int,
    limits: Limits = LIMITS,
) -> Profile:
    """Add one event to the profile, within ``limits``."""
    _add_ids(profile, (event.anonymous_id, event.user_id))
    profile.first_seen = _min(profile.first_seen, event.ts)
    profile.last_seen = _max(profile.last_seen, event.ts)
    profile.counts[event.type] = profile.counts.get(event.type, 0) + 1
    if event.type == "page_view" and (interest := interest_of(event.url)):
        profile.interests[interest] = profile.interests.get(interest, 0) + 1
    if event.type == IMPRESSION and event.campaign_id:
        buckets = profile.frequency.setdefault(event.campaign_id, {})
        minute = event.ts - event.ts % MINUTE_MS
        buckets[minute] = buckets.get(minute, 0) + 1
    prune_frequency(profile, stream_time, horizon_ms)
    bound(profile, limits)
    return profile


def merge(
    into: Profile,
    other: Profile,
    stream_time: int,
    horizon_ms: int,
    limits: Limits = LIMITS,
) -> Profile:
    """Add another fragment of the same person (an anonymous profile) to ``into``."""
    _add_ids(into, other.ids)
    into.ids_truncated = into.ids_truncated or other.ids_truncated
    into.first_seen = _min(into.first_seen, other.first_seen)
    into.last_seen = _max(into.last_seen, other.last_seen)
    _add_counts(into.counts, other.counts)
    _add_counts(into.interests, other.interests)
    into.interests_other += other.interests_other
    for campaign, buckets in other.frequency.items():
        _add_counts(into.frequency.setdefault(campaign, {}), buckets)
    prune_frequency(into, stream_time, horizon_ms)
    bound(into, limits)
    return into


def frozen_copy(profile: Profile, user_id: str, limits: Limits = LIMITS) -> Profile:
    """The state an anonymous record sends to ``user_id`` when it is linked."""
    copy = Profile(
        profile_id=user_id,
        ids=list(profile.ids),
        ids_truncated=profile.ids_truncated,
        first_seen=profile.first_seen,
        last_seen=profile.last_seen,
        counts=dict(profile.counts),
        interests=dict(profile.interests),
        interests_other=profile.interests_other,
        frequency={c: dict(b) for c, b in profile.frequency.items()},
    )
    return bound(copy, limits)  # a record stored before the limits may be over them


def bound(profile: Profile, limits: Limits = LIMITS) -> Profile:
    """Evict what is over ``limits``, deterministically (see the module docstring)."""
    if len(profile.ids) > limits.ids:
        _bound_ids(profile, limits.ids)
    if len(profile.interests) > limits.interests:
        interests = profile.interests
        excess = len(interests) - limits.interests
        for name in _last(interests, excess, lambda k: (-interests[k], k)):
            profile.interests_other += interests.pop(name)
    _bound_frequency(profile.frequency, limits)
    return profile


def prune_frequency(profile: Profile, stream_time: int, horizon_ms: int) -> None:
    """Drop impression buckets that have left the horizon."""
    oldest = stream_time - horizon_ms
    for campaign in list(profile.frequency):
        buckets = profile.frequency[campaign]
        for minute in [m for m in buckets if m + MINUTE_MS <= oldest]:
            del buckets[minute]
        if not buckets:
            del profile.frequency[campaign]


def impressions_within(
    profile: Profile | None, campaign_id: str, stream_time: int, horizon_ms: int
) -> int:
    """Impressions of the campaign in the last ``horizon_ms`` of stream time, to the minute."""
    if profile is None:
        return 0
    oldest = stream_time - horizon_ms
    buckets = profile.frequency.get(campaign_id, {})
    return sum(n for minute, n in buckets.items() if minute + MINUTE_MS > oldest)


def facts(profile: Profile) -> dict[str, float]:
    """What segment rules read: ``counts.<type>``, ``interests.<name>``, ``ids``."""
    found: dict[str, float] = {f"counts.{k}": v for k, v in profile.counts.items()}
    found.update((f"interests.{k}", v) for k, v in profile.interests.items())
    found["ids"] = len(profile.ids)
    return found


def view(profile: Profile) -> dict[str, object]:
    """The profile as ``GET /profiles/{id}`` shows it (times as epoch ms).

    ``interests_other`` and ``ids_truncated`` appear only on a profile that
    went past :class:`Limits`.
    """
    shown: dict[str, object] = {
        "profile_id": profile.profile_id,
        "ids": sorted(profile.ids),
        "first_seen": profile.first_seen,
        "last_seen": profile.last_seen,
        "counts": dict(sorted(profile.counts.items())),
        "interests": dict(sorted(profile.interests.items())),
        "segments": sorted(profile.segments),
    }
    if profile.interests_other:
        shown["interests_other"] = profile.interests_other
    if profile.ids_truncated:
        shown["ids_truncated"] = True
    return shown


def _add_ids(profile: Profile, ids: Iterable[str | None]) -> None:
    for id_ in ids:
        if id_ and id_ not in profile.ids:
            profile.ids.append(id_)


def _bound_ids(profile: Profile, limit: int) -> None:
    """Keep the profile's own id and the ``limit - 1`` smallest others, in their order."""
    others = sorted(i for i in set(profile.ids) if i != profile.profile_id)
    room = limit - 1 if profile.profile_id in profile.ids else limit
    kept = set(others[: max(room, 0)]) | {profile.profile_id}
    profile.ids = [i for i in profile.ids if i in kept]
    profile.ids_truncated = True


def _bound_frequency(frequency: dict[str, dict[int, int]], limits: Limits) -> None:
    """The most recently active campaigns, then the most recent buckets over all of them."""
    if len(frequency) > limits.campaigns:
        newest = {c: max(b, default=0) for c, b in frequency.items()}
        excess = len(frequency) - limits.campaigns
        for campaign in _last(frequency, excess, lambda c: (-newest[c], c)):
            del frequency[campaign]
    excess = sum(map(len, frequency.values())) - limits.buckets
    if excess > 0:
        buckets = [(minute, c) for c, b in frequency.items() for minute in b]
        for minute, campaign in _last(buckets, excess, lambda mc: (-mc[0], mc[1])):
            del frequency[campaign][minute]
            if not frequency[campaign]:
                del frequency[campaign]


def _last(items: Iterable[K], n: int, rank: Callable[[K], tuple[int, str]]) -> list[K]:
    """The ``n`` items that come last when sorted by ``rank`` (what a limit evicts).

    ``heapq.nlargest``: one pass, no full sort, when one item is over (a fold adds one).
    """
    return heapq.nlargest(n, items, key=rank)


def _add_counts(into: dict[K, int], other: Mapping[K, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
