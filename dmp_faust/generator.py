"""``dmp-faust generate``: synthetic behavioural events onto the raw topic.

Two halves. :class:`EventMix` is a pure, deterministic core: handed a
``random.Random`` and each event's time, it returns the raw bytes a producer
would send, with a realistic mix (page views, impressions, clicks at a CTR of
2-4 %, conversions on 10 % of clicks, identifies), bots, duplicates and
invalid events spread over the reasons the collector detects. It reads no
clock and does no I/O, so the same seed gives the same bytes.

The shell around it (:func:`main`) parses options, waits for the topic,
produces with aiokafka at ``--rate``, shows progress on stderr and stops
cleanly on SIGINT/SIGTERM: a first signal flushes and prints the summary, a
second one gives up on the flush.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import heapq
import random
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, Final, NamedTuple, TextIO

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from dmp_faust.domain import events as ev
from dmp_faust.domain.timefmt import format_timestamp, parse_timestamp
from dmp_faust.settings import DAY_MS, HOUR_MS, MINUTE_MS, Settings, SettingsError

DEFAULT_RATE: Final = 200.0
MAX_EVENT_BYTES: Final = 64 * 1024
# Shares of the events drawn fresh (clicks and conversions follow impressions and
# clicks): with clicks ~1.1 % and conversions ~0.1 % on top, the stream holds
# ~59 % page views, ~37.5 % impressions and ~2 % identifies.
PAGE_VIEW_SHARE: Final = 0.60
IMPRESSION_SHARE: Final = 0.38
CTR_RANGE: Final = (0.02, 0.04)  # per campaign
CONVERSION_RATE: Final = 0.10  # of clicks
ACCOUNT_SHARE: Final = 0.30  # of users who have a user_id (and sometimes log in)
CLICK_DELAY_MS: Final = (1_000, 30_000)
CONVERSION_DELAY_MS: Final = (5_000, 120_000)
DUPLICATE_MEMORY: Final = 2_000  # duplicates re-send one of the last N events
# What the collector can refuse; too_old is decided later, by the pipeline.
COLLECTOR_REASONS: Final = tuple(r for r in ev.REASONS if r != ev.TOO_OLD)

_CHROME: Final = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0"
_SAFARI: Final = "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m}"
_BROWSERS: Final = (  # (template, weight); {v} a Chrome major, {m} a Safari minor
    (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME} Safari/537.36", 28),
    (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_CHROME} Safari/537.36", 9),
    (f"Mozilla/5.0 (Linux; Android 10; K) {_CHROME} Mobile Safari/537.36", 24),
    (
        f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{{m}} like Mac OS X) {_SAFARI} "
        "Mobile/15E148 Safari/604.1",
        20,
    ),
    (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_SAFARI} Safari/605.1.15", 5),
    (f"Mozilla/5.0 (iPad; CPU OS 17_{{m}} like Mac OS X) {_SAFARI} Mobile/15E148 Safari/604.1", 2),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0", 5),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0", 1),
    (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME} Safari/537.36 Edg/{{v}}.0.0.0", 5),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like "
        "Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        1,
    ),
)
_BROWSER_TEMPLATES: Final = tuple(template for template, _ in _BROWSERS)
_BROWSER_CUM: Final = tuple(accumulate(weight for _, weight in _BROWSERS))
_BOTS: Final = (  # (user agent, first three octets of its crawler's addresses)
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "66.249.66"),
    (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, "
        "like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html)",
        "66.249.68",
    ),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "157.55.39"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "54.36.148"),
    ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", "185.191.171"),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "5.255.231"),
    ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "20.191.45"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "69.171.249"),
)
_SITES: Final = ("dailyherald.example", "sportsdesk.example", "technow.example", "citypost.example")
_SECTIONS: Final = ("news", "sports", "tech", "business", "travel", "food", "health", "culture")
# fmt: off
_WORDS: Final = ("election", "transfer", "review", "guide", "market", "season", "launch",
                 "budget", "recipe", "storm", "final", "update", "deal", "trial", "record")
_REFERRERS: Final = ("https://www.google.com/", "https://www.google.com/", "https://www.bing.com/",
                     "https://duckduckgo.com/", "https://t.co/", "https://www.facebook.com/")
_UTM: Final = (("google", "cpc"), ("facebook", "social"), ("newsletter", "email"),
               ("twitter", "social"), ("partner", "referral"))  # (utm_source, utm_medium)
# fmt: on
_PLANS: Final = ("free", "free", "plus", "premium")
_COUNTRIES: Final = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE")
_IPV4_FIRST: Final = (31, 46, 62, 77, 81, 84, 86, 91, 93, 95, 109, 151, 176, 188, 212, 217)

RawEvent = dict[str, Any]  # an event as sent, before any validation


@dataclass(frozen=True)
class MixConfig:
    campaigns: int = 20
    users: int = 5000
    invalid_share: float = 0.01
    duplicate_share: float = 0.01
    bot_share: float = 0.02


class Generated(NamedTuple):
    """One record for the raw topic. ``kind`` is valid, bot, duplicate or invalid;
    ``reason`` is the refusal an invalid one is built to get."""

    key: bytes | None
    value: bytes
    kind: str
    reason: str | None = None


class _User(NamedTuple):
    anonymous_id: str
    user_id: str | None
    user_agent: str
    ip: str
    site: str
    interest: str


class _Campaign(NamedTuple):
    campaign_id: str
    ads: tuple[str, ...]
    ctr: float
    site: str


class _FollowUp(NamedTuple):
    due_ms: int
    seq: int
    type: str  # click or conversion
    user: int
    campaign: int
    ad_id: str


class EventMix:
    """The event stream of a simulated audience; call :meth:`next` per event.

    ``now_ms`` is the wall clock when the run starts: a future_timestamp event
    is placed at least an hour after both it and the event's own time, so it is
    refused even when the run replays a historical start.
    """

    def __init__(self, rng: random.Random, config: MixConfig, now_ms: int) -> None:
        self._rng = rng
        self._config = config
        self._now_ms = now_ms
        self._salt = rng.getrandbits(64)
        self._users: dict[int, _User] = {}
        self._logged_in: set[int] = set()
        self._campaigns = [_make_campaign(rng, n) for n in range(1, config.campaigns + 1)]
        self._campaign_cum = list(accumulate(1 / n**0.7 for n in range(1, config.campaigns + 1)))
        self._pending: list[_FollowUp] = []
        self._seq = 0
        self._recent: deque[tuple[bytes | None, bytes]] = deque(maxlen=DUPLICATE_MEMORY)
        self._duplicate_below = config.invalid_share + config.duplicate_share
        self._bot_below = self._duplicate_below + config.bot_share

    def next(self, ts_ms: int) -> Generated:
        r = self._rng.random()
        if r < self._config.invalid_share:
            return self._invalid(ts_ms)
        if r < self._duplicate_below and self._recent:
            key, value = self._recent[self._rng.randrange(len(self._recent))]
            return Generated(key, value, "duplicate")
        if r < self._bot_below:
            return self._remember(self._bot(ts_ms), "bot")
        return self._remember(self._valid(ts_ms), "valid")

    def _remember(self, event: RawEvent, kind: str) -> Generated:
        key, value = event["anonymous_id"].encode(), msgspec.json.encode(event)
        self._recent.append((key, value))
        return Generated(key, value, kind)

    def _valid(self, ts: int) -> RawEvent:
        if self._pending and self._pending[0].due_ms <= ts:
            return self._follow_up(ts, heapq.heappop(self._pending))
        r = self._rng.random()
        if r < PAGE_VIEW_SHARE:
            return self._page_view(ts, self._pick_user())
        if r < PAGE_VIEW_SHARE + IMPRESSION_SHARE:
            return self._impression(ts, self._pick_user(), schedule=True)
        return self._identify(ts)

    # -- the simulated audience -------------------------------------------------

    def _pick_user(self) -> int:
        """A user index, skewed: the first 1 % of users send about 10 % of the events."""
        return int(self._config.users * self._rng.random() ** 2)

    def _user(self, index: int) -> _User:
        user = self._users.get(index)
        if user is None:
            user = self._users[index] = _make_user(random.Random(self._salt + index), index)
        return user

    def _pick_campaign(self) -> int:
        return self._rng.choices(range(len(self._campaigns)), cum_weights=self._campaign_cum)[0]

    def _base(self, ts: int, kind: str, index: int) -> RawEvent:
        user = self._user(index)
        event: RawEvent = {
            "event_id": self._event_id(),
            "type": kind,
            "timestamp": _timestamp(self._rng, ts),
            "anonymous_id": user.anonymous_id,
        }
        if index in self._logged_in:
            event["user_id"] = user.user_id
        event["user_agent"] = user.user_agent
        event["ip"] = user.ip
        return event

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- the event types ---------------------------------------------------------

    def _page_view(self, ts: int, index: int) -> RawEvent:
        user, rng = self._user(index), self._rng
        site = user.site if rng.random() < 0.7 else rng.choice(_SITES)
        event = self._base(ts, "page_view", index)
        event["url"] = _page_url(rng, site, user.interest)
        if rng.random() < 0.2:
            source, medium = rng.choice(_UTM)
            campaign = rng.choice(self._campaigns).campaign_id
            event["url"] += f"?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
        referrer = _referrer(rng, site, user.interest)
        if referrer:
            event["referrer"] = referrer
        return event

    def _impression(self, ts: int, index: int, schedule: bool) -> RawEvent:
        number = self._pick_campaign()
        campaign = self._campaigns[number]
        event = self._base(ts, "impression", index)
        event["campaign_id"] = campaign.campaign_id
        event["ad_id"] = self._rng.choice(campaign.ads)
        if schedule and self._rng.random() < campaign.ctr:
            self._schedule(ts, CLICK_DELAY_MS, "click", index, number, event["ad_id"])
        return event

    def _follow_up(self, ts: int, due: _FollowUp) -> RawEvent:
        campaign = self._campaigns[due.campaign]
        event = self._base(ts, due.type, due.user)
        event["campaign_id"] = campaign.campaign_id
        event["ad_id"] = due.ad_id
        if due.type == "click":
            event["url"] = (
                f"https://{campaign.site}/offers/{campaign.campaign_id}?utm_source=dmp"
                f"&utm_medium=display&utm_campaign={campaign.campaign_id}"
            )
            if self._rng.random() < CONVERSION_RATE:
                self._schedule(
                    ts, CONVERSION_DELAY_MS, "conversion", due.user, due.campaign, due.ad_id
                )
        else:
            event["revenue"] = round(self._rng.lognormvariate(3.5, 0.8), 2)
            event["properties"] = {
                "order_id": f"ord-{self._rng.getrandbits(40):010x}",
                "currency": "EUR",
            }
        return event

    def _schedule(
        self, ts: int, delay: tuple[int, int], kind: str, user: int, campaign: int, ad_id: str
    ) -> None:
        self._seq += 1
        due_ms = ts + self._rng.randint(*delay)
        heapq.heappush(self._pending, _FollowUp(due_ms, self._seq, kind, user, campaign, ad_id))

    def _identify(self, ts: int) -> RawEvent:
        """A user with an account logs in; their later events carry both ids."""
        for _ in range(20):
            index = self._pick_user()
            if self._user(index).user_id is not None:
                break
        else:
            return self._page_view(ts, index)
        self._logged_in.add(index)
        event = self._base(ts, "identify", index)
        event["traits"] = {
            "plan": self._rng.choice(_PLANS),
            "country": self._rng.choice(_COUNTRIES),
        }
        return event

    def _bot(self, ts: int) -> RawEvent:
        """A crawler: no cookie, so a fresh anonymous_id each time, and its own addresses."""
        rng = self._rng
        agent, network = rng.choice(_BOTS)
        kind = "page_view" if rng.random() < 0.85 else "impression"
        event: RawEvent = {
            "event_id": self._event_id(),
            "type": kind,
            "timestamp": _timestamp(rng, ts),
            "anonymous_id": _anonymous_id(rng, ts),
            "user_agent": agent,
            "ip": f"{network}.{rng.randrange(1, 255)}",
        }
        if kind == "page_view":
            event["url"] = _page_url(rng, rng.choice(_SITES), rng.choice(_SECTIONS))
        else:
            campaign = rng.choice(self._campaigns)
            event["campaign_id"], event["ad_id"] = campaign.campaign_id, campaign.ads[0]
        return event

    def _invalid(self, ts: int) -> Generated:
        rng = self._rng
        index = self._pick_user()
        base = (
            self._page_view(ts, index)
            if rng.random() < 0.6
            else self._impression(ts, index, schedule=False)
        )
        reason = rng.choice(COLLECTOR_REASONS)
        future_ms = max(ts, self._now_ms) + rng.randint(HOUR_MS, 30 * DAY_MS)
        return Generated(None, _CORRUPT[reason](rng, base, future_ms), "invalid", reason)


def generate_events(
    rng: random.Random,
    count: int,
    start_ms: int,
    step_ms: float,
    config: MixConfig | None = None,
    now_ms: int | None = None,
) -> Iterator[Generated]:
    """``count`` events, the i-th at ``start_ms + int(i * step_ms)``."""
    mix = EventMix(rng, config or MixConfig(), start_ms if now_ms is None else now_ms)
    for i in range(count):
        yield mix.next(start_ms + int(i * step_ms))


# -- pieces of events ------------------------------------------------------------


def _make_user(rng: random.Random, index: int) -> _User:
    template = rng.choices(_BROWSER_TEMPLATES, cum_weights=_BROWSER_CUM)[0]
    agent = template.format(v=rng.randint(122, 125), m=rng.randint(2, 5))
    if rng.random() < 0.88:
        ip = (
            f"{rng.choice(_IPV4_FIRST)}.{rng.randrange(256)}.{rng.randrange(256)}."
            f"{rng.randrange(1, 255)}"
        )
    else:
        ip = (
            f"2a02:{rng.randrange(0x1000, 0x10000):x}:{rng.randrange(0x10000):x}::"
            f"{rng.randrange(1, 0x10000):x}"
        )
    user_id = f"u{index:07d}" if rng.random() < ACCOUNT_SHARE else None
    anonymous_id = f"{rng.randrange(10**9, 10**10)}.{rng.randrange(1_600_000_000, 1_700_000_000)}"
    return _User(anonymous_id, user_id, agent, ip, rng.choice(_SITES), rng.choice(_SECTIONS))


def _make_campaign(rng: random.Random, number: int) -> _Campaign:
    ads = tuple(f"ad-{number:03d}{letter}" for letter in "abcd"[: rng.randint(2, 4)])
    return _Campaign(f"cmp-{number:03d}", ads, rng.uniform(*CTR_RANGE), rng.choice(_SITES))


def _anonymous_id(rng: random.Random, ts: int) -> str:
    return f"{rng.randrange(10**9, 10**10)}.{ts // 1000}"


def _page_url(rng: random.Random, site: str, interest: str) -> str:
    section = interest if rng.random() < 0.5 else rng.choice(_SECTIONS)
    slug = f"{rng.choice(_WORDS)}-{rng.randrange(1000, 100_000)}"
    return f"https://{site}/{section}/{slug}"


def _referrer(rng: random.Random, site: str, interest: str) -> str | None:
    r = rng.random()
    if r < 0.4:
        return None  # direct
    if r < 0.7:
        return f"https://{site}/{interest}/"  # internal: a section front page
    return rng.choice(_REFERRERS)


def _timestamp(rng: random.Random, ts: int) -> int | str:
    """Half epoch milliseconds, half RFC 3339 (mostly UTC, some with an offset)."""
    r = rng.random()
    if r < 0.5:
        return ts
    if r < 0.9:
        return format_timestamp(ts)
    zone = timezone(timedelta(hours=rng.choice((-5, 1, 2, 9))))
    local = datetime.fromtimestamp(ts // 1000, zone) + timedelta(milliseconds=ts % 1000)
    return local.isoformat(timespec="milliseconds")


# -- invalid events, one builder per reason --------------------------------------
# Each takes (rng, a valid event, a future time in ms) and returns the raw bytes.


def _malformed_json(rng: random.Random, event: RawEvent, _: int) -> bytes:
    raw = msgspec.json.encode(event)
    r = rng.random()
    if r < 0.6:
        return raw[: rng.randrange(1, len(raw) - 1)]  # truncated
    if r < 0.8:
        return raw[:-1] + b",}"  # trailing comma
    return b"\xff\xfe" + raw[2:]  # not UTF-8


def _not_an_object(rng: random.Random, event: RawEvent, _: int) -> bytes:
    return msgspec.json.encode(rng.choice(([event], event["event_id"], None, 42, True)))


def _too_large(rng: random.Random, event: RawEvent, _: int) -> bytes:
    event["properties"] = {"payload": "x" * (MAX_EVENT_BYTES + rng.randrange(1, 8192))}
    return msgspec.json.encode(event)


def _missing_field(rng: random.Random, event: RawEvent, _: int) -> bytes:
    choices = ["event_id", "type", "timestamp", "ids", "empty_id"]
    if "campaign_id" in event:
        choices.append("campaign_id")
    field = rng.choice(choices)
    if field == "ids":
        event.pop("anonymous_id")
        event.pop("user_id", None)
    elif field == "empty_id":
        event["event_id"] = rng.choice(("", None))
    else:
        event.pop(field)
    return msgspec.json.encode(event)


def _bad_type(rng: random.Random, event: RawEvent, _: int) -> bytes:
    field, value = rng.choice(
        (
            ("event_id", rng.randrange(10**9)),
            ("anonymous_id", 12345),
            ("type", 1),
            ("url", 404),
            ("properties", ["a", "b"]),
            ("revenue", "12.50"),
            ("anonymous_id", "a" * 200),
        )
    )
    event[field] = value
    return msgspec.json.encode(event)


def _unknown_type(rng: random.Random, event: RawEvent, _: int) -> bytes:
    event["type"] = rng.choice(("pageview", "PageView", "page-view", "purchase", "view", ""))
    return msgspec.json.encode(event)


def _bad_timestamp(rng: random.Random, event: RawEvent, _: int) -> bytes:
    ts = parse_timestamp(event["timestamp"])
    event["timestamp"] = rng.choice(
        (
            "yesterday",
            format_timestamp(ts).rstrip("Z"),
            ts / 1000,
            str(ts),
            "2024-02-30T10:00:00Z",
            True,
            {"ms": ts},
        )
    )
    return msgspec.json.encode(event)


def _future_timestamp(rng: random.Random, event: RawEvent, future_ms: int) -> bytes:
    event["timestamp"] = _timestamp(rng, future_ms)
    return msgspec.json.encode(event)


_CORRUPT: Final[dict[str, Callable[[random.Random, RawEvent, int], bytes]]] = {
    ev.MALFORMED_JSON: _malformed_json,
    ev.NOT_AN_OBJECT: _not_an_object,
    ev.TOO_LARGE: _too_large,
    ev.MISSING_FIELD: _missing_field,
    ev.BAD_TYPE: _bad_type,
    ev.UNKNOWN_TYPE: _unknown_type,
    ev.BAD_TIMESTAMP: _bad_timestamp,
    ev.FUTURE_TIMESTAMP: _future_timestamp,
}


# -- the command -------------------------------------------------------------------

TICK_S: Final = 0.02  # rate-limited sending wakes up this often and sends what is due
FAST_BATCH: Final = 2_000  # events per wake-up at --rate 0 (and the most per tick)
FLUSH_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class Options:
    rate: float
    count: int
    config: MixConfig
    seed: int
    bootstrap: str
    topic: str
    start_ms: int | None
    wait_topic_s: float
    quiet: bool


def parse_args(argv: list[str], settings: Settings) -> Options:
    args = _parser(settings).parse_args(argv)
    config = MixConfig(
        args.campaigns, args.users, args.invalid_share, args.duplicate_share, args.bot_share
    )
    if config.invalid_share + config.duplicate_share + config.bot_share > 1:
        _parser(settings).error("--invalid-share + --duplicate-share + --bot-share exceed 1")
    seed = random.SystemRandom().getrandbits(32) if args.seed is None else args.seed
    return Options(
        rate=args.rate,
        count=args.count,
        config=config,
        seed=seed,
        bootstrap=args.bootstrap,
        topic=args.topic,
        start_ms=args.start_ms,
        wait_topic_s=args.wait_topic,
        quiet=args.quiet,
    )


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmp-faust generate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Produce synthetic behavioural events onto the raw topic.",
    )
    add = parser.add_argument
    add(
        "--rate",
        type=_at_least(float, 0),
        default=DEFAULT_RATE,
        metavar="EV_PER_S",
        help="events per second; 0 = as fast as possible",
    )
    add("--count", type=_at_least(int, 0), default=0, help="events to send; 0 = until Ctrl-C")
    add("--campaigns", type=_at_least(int, 1), default=20, help="campaigns cmp-001, ...")
    add("--users", type=_at_least(int, 1), default=5000, help="simulated users")
    add(
        "--seed",
        type=int,
        help="random seed (the same seed gives the same events, and so "
        "the same event_ids: a re-run is de-duplicated); default a random one",
    )
    add("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap servers")
    add("--topic", default=settings.topic("events.raw"), help="target topic")
    add("--invalid-share", type=_share, default=0.01, help="share of invalid events")
    add("--duplicate-share", type=_share, default=0.01, help="share of re-sent events")
    add("--bot-share", type=_share, default=0.02, help="share of crawler events")
    add(
        "--start-ms",
        type=_time_ms,
        metavar="TIME",
        help="event time of the first event, epoch ms or RFC 3339; default now, and events "
        "follow the wall clock; with it, events are 1000/rate ms apart (5 ms at --rate 0)",
    )
    add(
        "--wait-topic",
        type=_at_least(float, 0),
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the topic to exist (the worker creates it)",
    )
    add("--quiet", action="store_true", help="no progress display")
    return parser


def _at_least(kind: Callable[[str], float], minimum: float) -> Callable[[str], Any]:
    def convert(text: str) -> float:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _time_ms(text: str) -> int:
    try:
        return parse_timestamp(int(text) if text.lstrip("-").isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def timeline(start_ms: int | None, rate: float, wall_ms: Callable[[], int]) -> Callable[[int], int]:
    """Event time of the i-th event: the wall clock, or ``start_ms`` plus i steps."""
    if start_ms is None:
        return lambda _: wall_ms()
    step_ms = 1000 / (rate or DEFAULT_RATE)
    return lambda i: start_ms + int(i * step_ms)


def due(rate: float, elapsed_s: float, queued: int) -> int:
    """How many events to send now to keep to ``rate`` (at most one batch)."""
    if rate == 0:
        return FAST_BATCH
    return max(0, min(FAST_BATCH, int(elapsed_s * rate) + 1 - queued))


def progress_line(sent: int, rate: float, elapsed_s: float) -> str:
    minutes, seconds = divmod(int(elapsed_s), 60)
    clock = f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    return f"generate: sent {sent:,}  {rate:,.0f} ev/s  elapsed {clock}"


class Progress:
    """Progress on stderr: one ``\\r`` line twice a second on a terminal, else a
    line every 5 s; nothing when quiet. ev/s is measured over the last second."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = None if quiet else 0.5 if self._tty else 5.0
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])
        self._next = self._interval or 0.0
        self._shown = False

    def update(self, elapsed_s: float, sent: int) -> None:
        samples = self._samples
        samples.append((elapsed_s, sent))
        while len(samples) > 2 and elapsed_s - samples[1][0] >= 1.0:
            samples.popleft()
        if self._interval is None or elapsed_s < self._next:
            return
        self._next = elapsed_s + self._interval
        then, sent_then = samples[0]
        rate = (sent - sent_then) / (elapsed_s - then) if elapsed_s > then else 0.0
        line = progress_line(sent, rate, elapsed_s)
        self._stream.write(f"\r{line:<64}" if self._tty else f"{line}\n")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown and self._tty:
            self._stream.write("\n")


class Delivery:
    """Counts the producer's acknowledgements; keeps the first error."""

    def __init__(self) -> None:
        self.acked = 0
        self.error: BaseException | None = None

    def done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.error = self.error or asyncio.CancelledError("delivery cancelled")
        elif future.exception() is not None:
            self.error = self.error or future.exception()
        else:
            self.acked += 1


def main(argv: list[str]) -> int:
    try:
        options = parse_args(argv, Settings.from_env())
    except SettingsError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    if options.start_ms is not None and options.start_ms > _wall_ms() + 5 * MINUTE_MS:
        print(
            "generate: --start-ms is in the future; those events would be refused", file=sys.stderr
        )
        return 2
    try:
        return asyncio.run(_run(options))
    except KeyboardInterrupt:  # where the loop cannot take signals
        return 130


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _run(options: Options) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    producer = AIOKafkaProducer(
        bootstrap_servers=options.bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=256 * 1024,
        client_id="dmp-faust-generate",
        partitioner=_partition,
    )
    stop_timeout_s = FLUSH_TIMEOUT_S
    try:
        await producer.start()
        found = await _wait_for_topic(producer, options.topic, options.wait_topic_s, stop)
        if not (found or stop.is_set()):
            _say(
                f"generate: topic {options.topic} does not exist after "
                f"{options.wait_topic_s:g} s: start a worker (it creates its topics), "
                "create the topic, or wait longer with --wait-topic"
            )
            return 1
        return await _produce(producer, options, stop)
    except (KafkaError, TimeoutError) as exc:
        _say(f"generate: Kafka at {options.bootstrap}: {exc!r}")
        return 1
    except asyncio.CancelledError:  # a second Ctrl-C
        _say("generate: interrupted again, stopping without waiting for the flush")
        stop_timeout_s = 1.0
        return 130
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(producer.stop(), stop_timeout_s)


def _partition(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioning (murmur2 of the key), memoised: simulated users
    repeat their keys, and the pure-Python murmur2 is the producer's largest cost."""
    if key is None:
        return DefaultPartitioner()(key, all_partitions, available)  # type: ignore[no-any-return]
    return all_partitions[_partition_index(key, len(all_partitions))]


@functools.lru_cache(maxsize=65_536)
def _partition_index(key: bytes, partitions: int) -> int:
    return DefaultPartitioner()(key, range(partitions), [])  # type: ignore[no-any-return]


def _stop_on_signals(stop: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM stops sending (then flush); a second one cancels the run."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)


async def _wait_for_topic(
    producer: AIOKafkaProducer, topic: str, timeout_s: float, stop: asyncio.Event
) -> bool:
    """Whether ``topic`` exists. Asks for the metadata of all topics: asking for this
    one alone would make a broker with auto-creation create it with its defaults."""
    deadline = time.monotonic() + timeout_s
    announced = False
    while not stop.is_set():
        if topic in (await producer.client.fetch_all_metadata()).topics():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not announced:
            _say(f"generate: waiting for topic {topic} (start a worker)")
            announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(1.0, remaining))
    return False


async def _produce(producer: AIOKafkaProducer, options: Options, stop: asyncio.Event) -> int:
    if not options.quiet:
        rate = f"{options.rate:g} ev/s" if options.rate else "as fast as possible"
        _say(
            f"generate: {rate} to {options.topic} at {options.bootstrap} "
            f"(seed {options.seed}; Ctrl-C to stop)"
        )
    mix = EventMix(random.Random(options.seed), options.config, _wall_ms())
    event_time = timeline(options.start_ms, options.rate, _wall_ms)
    delivery, progress = Delivery(), Progress(sys.stderr, options.quiet)
    started = time.monotonic()

    async def send(i: int) -> None:
        item = mix.next(event_time(i))
        future = await producer.send(options.topic, item.value, key=item.key)
        future.add_done_callback(delivery.done)

    try:
        await _pump(send, options, stop, delivery, progress)
        await asyncio.wait_for(producer.flush(), FLUSH_TIMEOUT_S)
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    if delivery.error is not None:
        _say(f"generate: delivery failed after {delivery.acked} events: {delivery.error!r}")
        return 1
    _say(
        f"generate: sent {delivery.acked} events in {elapsed:.1f} s "
        f"({delivery.acked / elapsed:.0f} ev/s)"
    )
    return 0


async def _pump(
    send: Callable[[int], Awaitable[None]],
    options: Options,
    stop: asyncio.Event,
    delivery: Delivery,
    progress: Progress,
) -> None:
    """Send what is due, then sleep a tick (only yield when behind or at --rate 0)."""
    started, queued, count = time.monotonic(), 0, options.count
    while not stop.is_set() and delivery.error is None and (count == 0 or queued < count):
        elapsed = time.monotonic() - started
        batch = due(options.rate, elapsed, queued)
        for i in range(queued, queued + (min(batch, count - queued) if count else batch)):
            await send(i)
            queued += 1
        progress.update(elapsed, delivery.acked)
        await asyncio.sleep(TICK_S if options.rate and batch < FAST_BATCH else 0)
