"""What the pipeline must end up with, computed from the load alone.

A deliberately small model, independent of the project's code (it imports
nothing from ``dmp_faust``):

* accounting: every raw record is invalid, else a duplicate (an event_id
  seen before), else a bot, else accepted;
* campaign windows: per campaign and 1-minute window ``[start, start + 60 s)``,
  impressions, clicks, conversions, revenue (in cents, summed exactly) and
  the set of users (``user_id`` else ``anonymous_id`` of the event, as the
  campaign stage sees it);
* profiles: an anonymous id is linked once an accepted event carries it with
  a user id (the load links each anonymous id to at most one user). Every
  accepted event counts for ``user_id`` if it has one, else for the user its
  anonymous id is linked to (by the end of the load), else for the
  anonymous id. Counts by type, interests (first path segment, lower-case),
  first and last seen, the ids, and the shipped segment rules;
* segment sizes: canonical profiles per segment;
* erasures (:meth:`Expected.erase`, applied for every erasure the harness
  plans, whatever the cluster answered): an erased person is the user id and
  every anonymous id linked to it in the load. The load sends none of their
  events after the ``DELETE`` and every event time is in 2021, long before
  the erasure's cutoff, so every event of theirs is covered: no profile for
  any of the ids, frequency 0, in no segment (sizes and the ``dmp_profiles``
  gauge exclude them). Campaign windows are not personal and keep counting
  their events, and the accounting is unchanged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tests.chaos.load import MINUTE_MS, Load

CAMPAIGN_TYPES = ("impression", "click", "conversion")
SEGMENTS = ("clickers", "converters", "engaged")


@dataclass
class Window:
    counts: Counter[str] = field(default_factory=Counter)
    revenue_cents: int = 0
    users: set[str] = field(default_factory=set)


@dataclass
class ProfileModel:
    profile_id: str
    ids: set[str] = field(default_factory=set)
    first_seen: int | None = None
    last_seen: int | None = None
    counts: Counter[str] = field(default_factory=Counter)
    interests: Counter[str] = field(default_factory=Counter)
    impressions: Counter[str] = field(default_factory=Counter)  # campaign -> impressions

    @property
    def segments(self) -> list[str]:
        rules = {
            "clickers": self.counts["click"] >= 1,
            "converters": self.counts["conversion"] >= 1,
            "engaged": self.counts["page_view"] >= 5,
        }
        return sorted(name for name, holds in rules.items() if holds)

    def view(self) -> dict[str, Any]:
        """As ``GET /profiles/{id}`` answers (the contract's shape)."""
        return {
            "profile_id": self.profile_id,
            "ids": sorted(self.ids),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "counts": dict(sorted((k, v) for k, v in self.counts.items() if v)),
            "interests": dict(sorted((k, v) for k, v in self.interests.items() if v)),
            "segments": self.segments,
        }


@dataclass(frozen=True)
class ErasedPerson:
    """Who an erasure covers: ``ids`` (the user id first) and the campaigns the
    person had impressions on (their frequency must read 0)."""

    user_id: str
    ids: tuple[str, ...]
    campaigns: tuple[str, ...]


@dataclass
class Expected:
    received: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicate: int = 0
    bot: int = 0
    accepted_ids: set[str] = field(default_factory=set)
    people: dict[str, tuple[str, ...]] = field(default_factory=dict)  # event id -> its ids
    windows: dict[str, dict[int, Window]] = field(default_factory=dict)
    profiles: dict[str, ProfileModel] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # anonymous id -> user id
    bots: list[str] = field(default_factory=list)
    erased: dict[str, ErasedPerson] = field(default_factory=dict)  # user id -> person
    first_ms: int = 0
    last_ms: int = 0

    @property
    def accepted(self) -> int:
        return len(self.accepted_ids)

    def history_ids(self) -> set[str]:
        """The events the Parquet history must hold: the accepted ones, but none of an
        erased person (by any of their ids, whenever the event happened)."""
        erased = {i for person in self.erased.values() for i in person.ids}
        return {e for e in self.accepted_ids if not erased.intersection(self.people[e])}

    def segment_sizes(self) -> dict[str, int]:
        sizes = dict.fromkeys(SEGMENTS, 0)
        for profile in self.profiles.values():
            for segment in profile.segments:
                sizes[segment] += 1
        return sizes

    def lookups(self) -> dict[str, str]:
        """Every id a profile can be looked up by -> its canonical id."""
        ids = {key: key for key in self.profiles}
        ids.update(self.links)
        return ids

    def erase(self, user_id: str) -> ErasedPerson:
        """Apply the erasure of ``user_id``: its profile and links are gone."""
        profile = self.profiles.pop(user_id, None)
        linked = sorted(a for a, u in self.links.items() if u == user_id)
        for anonymous in linked:
            del self.links[anonymous]
            assert anonymous not in self.profiles, "a linked id has no profile of its own"
        campaigns = sorted(profile.impressions) if profile else []
        person = ErasedPerson(user_id, (user_id, *linked), tuple(campaigns))
        self.erased[user_id] = person
        return person


def timestamp_ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def interest(url: str | None) -> str | None:
    if not url:
        return None
    first = urlsplit(url).path.strip("/").split("/", 1)[0].strip().lower()
    return first or None


def expect(load: Load) -> Expected:
    out = Expected(bots=list(load.bots))
    seen: set[str] = set()
    accepted: list[dict[str, Any]] = []
    for record in load.records:
        out.received += 1
        if record.kind == "invalid":
            out.invalid[record.reason or "?"] += 1
            continue
        assert record.event is not None
        event_id = record.event["event_id"]
        if event_id in seen:
            out.duplicate += 1
            continue
        seen.add(event_id)
        if record.kind == "bot":
            out.bot += 1
            continue
        out.accepted_ids.add(event_id)
        out.people[event_id] = tuple(
            record.event[name] for name in ("anonymous_id", "user_id") if record.event.get(name)
        )
        accepted.append(record.event)
    for event in accepted:
        if event.get("anonymous_id") and event.get("user_id"):
            linked = out.links.setdefault(event["anonymous_id"], event["user_id"])
            assert linked == event["user_id"], "the load links an anonymous id to one user"
    times = [timestamp_ms(e["timestamp"]) for e in accepted]
    out.first_ms, out.last_ms = min(times), max(times)
    for event, ts in zip(accepted, times, strict=True):
        _fold_window(out, event, ts)
        _fold_profile(out, event, ts)
    return out


def _fold_window(out: Expected, event: dict[str, Any], ts: int) -> None:
    if event["type"] not in CAMPAIGN_TYPES:
        return
    windows = out.windows.setdefault(event["campaign_id"], defaultdict(Window))
    window = windows[ts - ts % MINUTE_MS]
    window.counts[event["type"]] += 1
    window.users.add(event.get("user_id") or event["anonymous_id"])
    if event["type"] == "conversion":
        window.revenue_cents += round(event.get("revenue", 0) * 100)


def _fold_profile(out: Expected, event: dict[str, Any], ts: int) -> None:
    anonymous, user = event.get("anonymous_id"), event.get("user_id")
    canonical = user or out.links.get(anonymous or "") or anonymous
    assert canonical
    profile = out.profiles.setdefault(canonical, ProfileModel(canonical))
    profile.ids.update(i for i in (anonymous, user) if i)
    profile.first_seen = ts if profile.first_seen is None else min(profile.first_seen, ts)
    profile.last_seen = ts if profile.last_seen is None else max(profile.last_seen, ts)
    profile.counts[event["type"]] += 1
    if event["type"] == "impression":
        profile.impressions[event["campaign_id"]] += 1
    if event["type"] == "page_view" and (name := interest(event.get("url"))):
        profile.interests[name] += 1
