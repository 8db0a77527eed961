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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, TypeVar
from urllib.parse import urlsplit

import msgspec

from dmp_faust.domain.events import Event
from dmp_faust.domain.watermarks import Watermarks

K = TypeVar("K")
IMPRESSION: Final = "impression"
MINUTE_MS: Final = 60_000


class ProfileEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a clean event that profiles use."""

    event_id: str
    type: str
    ts: int
    anonymous_id: str | None = None
    user_id: str | None = None
    campaign_id: str | None = None
    url: str | None = None


class Profile(msgspec.Struct, kw_only=True):
    profile_id: str
    ids: list[str] = msgspec.field(default_factory=list)
    first_seen: int | None = None
    last_seen: int | None = None
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    interests: dict[str, int] = msgspec.field(default_factory=dict)
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


def fold(profile: Profile, event: ProfileEvent, stream_time: int, horizon_ms: int) -> Profile:
    """Add one event to the profile."""
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
    return profile


def merge(into: Profile, other: Profile, stream_time: int, horizon_ms: int) -> Profile:
    """Add another fragment of the same person (an anonymous profile) to ``into``."""
    _add_ids(into, other.ids)
    into.first_seen = _min(into.first_seen, other.first_seen)
    into.last_seen = _max(into.last_seen, other.last_seen)
    _add_counts(into.counts, other.counts)
    _add_counts(into.interests, other.interests)
    for campaign, buckets in other.frequency.items():
        _add_counts(into.frequency.setdefault(campaign, {}), buckets)
    prune_frequency(into, stream_time, horizon_ms)
    return into


def frozen_copy(profile: Profile, user_id: str) -> Profile:
    """The state an anonymous record sends to ``user_id`` when it is linked."""
    return Profile(
        profile_id=user_id,
        ids=list(profile.ids),
        first_seen=profile.first_seen,
        last_seen=profile.last_seen,
        counts=dict(profile.counts),
        interests=dict(profile.interests),
        frequency={c: dict(b) for c, b in profile.frequency.items()},
    )


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
    """The profile as ``GET /profiles/{id}`` shows it (times as epoch ms)."""
    return {
        "profile_id": profile.profile_id,
        "ids": sorted(profile.ids),
        "first_seen": profile.first_seen,
        "last_seen": profile.last_seen,
        "counts": dict(sorted(profile.counts.items())),
        "interests": dict(sorted(profile.interests.items())),
        "segments": sorted(profile.segments),
    }


def _add_ids(profile: Profile, ids: Iterable[str | None]) -> None:
    for id_ in ids:
        if id_ and id_ not in profile.ids:
            profile.ids.append(id_)


def _add_counts(into: dict[K, int], other: Mapping[K, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
