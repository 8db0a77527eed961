"""The chaos load: a seeded, deterministic stream of raw events, built here alone.

Nothing of the project is imported: the events are written as a producer
would write them, so the expectation (:mod:`tests.chaos.model`) cannot share a
mistake with the pipeline. The mix:

* people, each an anonymous id (``a000123``); about 30 % of them also have
  an account (``u000045``, several people may share one account, like one
  person's phone and laptop). Such a person logs in at some moment (an
  ``identify`` event carrying both ids); after that some events carry both
  ids and conversions often carry the user id alone. An anonymous id is only
  ever seen with one user id, so the stitched profile of a user is simply
  every accepted event of the user and of its anonymous ids, whatever the
  order. Which linked users the run erases, and when, the harness decides
  from :func:`linked_people` (after a person's last record, so none of their
  events follows the ``DELETE``);
* page views (urls on a few sections, some upper-case, some without a url),
  impressions, clicks and conversions (with revenue in cents) on campaigns;
* crawlers (a known bot user agent, ids of their own, never linked);
* duplicates: an earlier valid event's exact bytes sent again;
* invalid payloads, one kind per refusal reason the pipeline documents,
  including ``too_old`` (three days behind stream time, sent once every
  partition has stream time).

Event times advance 50 ms per event from 2021-03-01T00:00:00Z with up to 20 s
of lateness, half as epoch ms and half as RFC 3339 strings.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

T0_MS: Final = 1_614_556_800_000  # 2021-03-01T00:00:00Z
STEP_MS: Final = 50
LATENESS_MS: Final = 20_000
DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000
HUMAN_UA: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36"
)
BOT_UAS: Final = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
SECTIONS: Final = ("news", "sports", "tech", "Travel", "food", "SPORTS", "business")
INVALID_KINDS: Final = (
    "malformed_json",
    "not_an_object",
    "missing_field",
    "bad_type",
    "unknown_type",
    "bad_timestamp",
    "future_timestamp",
    "too_old",
)
# Shares of the records on the raw topic.
BOT_SHARE: Final = 0.02
DUPLICATE_SHARE: Final = 0.015
INVALID_SHARE: Final = 0.01


@dataclass(frozen=True)
class Record:
    """One raw record. ``kind``: valid, bot, duplicate or invalid; ``event``: the
    decoded event for valid, bot and duplicate records; ``reason`` for invalid ones."""

    key: bytes
    value: bytes
    kind: str
    event: dict[str, Any] | None = None
    reason: str | None = None


@dataclass
class Person:
    anonymous_id: str
    user_id: str | None
    logged_in: bool = False


@dataclass
class Load:
    records: list[Record] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)
    bots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Linked:
    """A user an ``identify`` carrying both ids linked: its ids (the user id first)
    and the index in ``Load.records`` of the last record carrying any of them."""

    user_id: str
    ids: tuple[str, ...]
    last: int


def linked_people(load: Load) -> dict[str, Linked]:
    """Every user linked in the load, with the ids an erasure of it covers."""
    anonymous: dict[str, set[str]] = {}
    for record in load.records:
        event = record.event or {}
        if event.get("type") == "identify" and event.get("user_id") and event.get("anonymous_id"):
            anonymous.setdefault(event["user_id"], set()).add(event["anonymous_id"])
    owner = {a: u for u, ids in anonymous.items() for a in ids}
    owner.update((u, u) for u in anonymous)
    last: dict[str, int] = {}
    for index, record in enumerate(load.records):
        event = record.event or {}
        for key in (event.get("user_id"), event.get("anonymous_id")):
            if key in owner:
                last[owner[key]] = index
    return {u: Linked(u, (u, *sorted(ids)), last[u]) for u, ids in sorted(anonymous.items())}


def rfc3339(ts_ms: int) -> str:
    moment = datetime.fromtimestamp(ts_ms // 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ms % 1000:03d}Z"


def build_load(events: int, seed: int) -> Load:
    """``events`` raw records, the same ones for the same seed."""
    rng = random.Random(seed)
    load = Load(campaigns=[f"c{n:03d}" for n in range(24)])
    people = max(100, events // 25)
    accounts = max(10, int(people * 0.3 / 1.4))
    for k in range(people):
        user = f"u{rng.randrange(accounts):06d}" if rng.random() < 0.3 else None
        load.people.append(Person(f"a{k:06d}", user))
    load.bots = [f"bot{k:04d}" for k in range(max(5, events // 1000))]
    # A few heavy readers (engaged) and a long tail: weights ~ 1/rank.
    weights = [1 / (1 + (k % 500)) for k in range(people)]
    recent: list[Record] = []
    for i in range(events):
        ts = T0_MS + i * STEP_MS - rng.randrange(LATENESS_MS)
        r = rng.random()
        if r < INVALID_SHARE:
            record = _invalid(rng, i, ts, events)
        elif r < INVALID_SHARE + DUPLICATE_SHARE and recent:
            original = rng.choice(recent[-2000:])
            record = Record(original.key, original.value, "duplicate", original.event)
        elif r < INVALID_SHARE + DUPLICATE_SHARE + BOT_SHARE:
            record = _bot(rng, i, ts, load)
            recent.append(record)
        else:
            person = rng.choices(load.people, weights)[0]
            record = _human(rng, i, ts, person, load)
            recent.append(record)
        load.records.append(record)
    return load


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _stamp(rng: random.Random, ts: int) -> int | str:
    return ts if rng.random() < 0.5 else rfc3339(ts)


def _human(rng: random.Random, i: int, ts: int, person: Person, load: Load) -> Record:
    event: dict[str, Any] = {"event_id": f"e{i:08d}", "timestamp": _stamp(rng, ts)}
    if person.user_id and not person.logged_in and rng.random() < 0.12:
        person.logged_in = True
        event.update(type="identify", anonymous_id=person.anonymous_id, user_id=person.user_id)
    else:
        r = rng.random()
        kind = (
            "page_view"
            if r < 0.55
            else "impression"
            if r < 0.85
            else "click"
            if r < 0.95
            else "conversion"
            if r < 0.985
            else "identify"
        )
        event["type"] = kind
        _ids(rng, event, person)
        if kind in ("impression", "click", "conversion"):
            event["campaign_id"] = rng.choice(load.campaigns)
        if kind == "conversion":
            event["revenue"] = rng.randrange(100, 20_000) / 100
        if kind == "page_view" and rng.random() < 0.9:
            event["url"] = f"https://news.example/{rng.choice(SECTIONS)}/story-{rng.randrange(999)}"
    event["user_agent"] = HUMAN_UA
    event["ip"] = f"203.0.113.{rng.randrange(1, 255)}"
    return Record(person.anonymous_id.encode(), _encode(event), "valid", event)


def _ids(rng: random.Random, event: dict[str, Any], person: Person) -> None:
    """Before login: the anonymous id. After: sometimes both, conversions often the
    user id alone. An identify before login does the login."""
    if event["type"] == "identify" and person.user_id:
        person.logged_in = True
    if not person.logged_in or person.user_id is None:
        event["anonymous_id"] = person.anonymous_id
        return
    r = rng.random()
    if event["type"] == "conversion" and r < 0.5:
        event["user_id"] = person.user_id
    elif r < 0.3 or event["type"] == "identify":
        event.update(anonymous_id=person.anonymous_id, user_id=person.user_id)
    else:
        event["anonymous_id"] = person.anonymous_id


def _bot(rng: random.Random, i: int, ts: int, load: Load) -> Record:
    bot = rng.choice(load.bots)
    event: dict[str, Any] = {
        "event_id": f"e{i:08d}",
        "type": "page_view" if rng.random() < 0.7 else "impression",
        "timestamp": _stamp(rng, ts),
        "anonymous_id": bot,
        "user_agent": rng.choice(BOT_UAS),
        "url": f"https://news.example/{rng.choice(SECTIONS)}/",
    }
    if event["type"] == "impression":
        event["campaign_id"] = rng.choice(load.campaigns)
    return Record(bot.encode(), _encode(event), "bot", event)


def _invalid(rng: random.Random, i: int, ts: int, events: int) -> Record:
    kinds = INVALID_KINDS if i > events // 10 else INVALID_KINDS[:-1]
    reason = rng.choice(kinds)
    event: dict[str, Any] = {
        "event_id": f"e{i:08d}",
        "type": "page_view",
        "timestamp": ts,
        "anonymous_id": f"x{i}",
    }
    if reason == "malformed_json":
        raw = _encode(event)
        value = raw[: rng.randrange(1, len(raw) - 1)]
    elif reason == "not_an_object":
        value = _encode([event])  # type: ignore[arg-type]
    elif reason == "missing_field":
        del event["event_id"]
        value = _encode(event)
    elif reason == "bad_type":
        event["anonymous_id"] = 12345
        value = _encode(event)
    elif reason == "unknown_type":
        event["type"] = "hover"
        value = _encode(event)
    elif reason == "bad_timestamp":
        event["timestamp"] = "yesterday at noon"
        value = _encode(event)
    elif reason == "future_timestamp":
        event["timestamp"] = "2099-01-01T00:00:00Z"
        value = _encode(event)
    else:  # too_old: three days behind a stream time that is at least T0 by now
        event["timestamp"] = ts - 3 * DAY_MS
        value = _encode(event)
    return Record(f"x{i}".encode(), value, "invalid", reason=reason)
