"""The simulated audience of the generator's :class:`~dmp_faust.generator.mix.EventMix`.

Its users (a browser's user agent, an IPv4 or IPv6 address, a cookie id,
sometimes an account, a home site and a favourite section), the crawlers that
pass for bots, the campaigns with their ads, and the pieces of an event drawn
from them: URLs, referrers, timestamps. Pure functions of the
``random.Random`` they are handed: no clock, no I/O.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, Final, NamedTuple

from dmp_faust.domain.timefmt import format_timestamp

CTR_RANGE: Final = (0.02, 0.04)  # per campaign
ACCOUNT_SHARE: Final = 0.30  # of users who have a user_id (and sometimes log in)

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
BOTS: Final = (  # (user agent, first three octets of its crawler's addresses)
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
SITES: Final = ("dailyherald.example", "sportsdesk.example", "technow.example", "citypost.example")
SECTIONS: Final = ("news", "sports", "tech", "business", "travel", "food", "health", "culture")
# fmt: off
_WORDS: Final = ("election", "transfer", "review", "guide", "market", "season", "launch",
                 "budget", "recipe", "storm", "final", "update", "deal", "trial", "record")
_REFERRERS: Final = ("https://www.google.com/", "https://www.google.com/", "https://www.bing.com/",
                     "https://duckduckgo.com/", "https://t.co/", "https://www.facebook.com/")
UTM: Final = (("google", "cpc"), ("facebook", "social"), ("newsletter", "email"),
              ("twitter", "social"), ("partner", "referral"))  # (utm_source, utm_medium)
# fmt: on
PLANS: Final = ("free", "free", "plus", "premium")
COUNTRIES: Final = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE")
_IPV4_FIRST: Final = (31, 46, 62, 77, 81, 84, 86, 91, 93, 95, 109, 151, 176, 188, 212, 217)

RawEvent = dict[str, Any]  # an event as sent, before any validation


class User(NamedTuple):
    anonymous_id: str
    user_id: str | None
    user_agent: str
    ip: str
    site: str
    interest: str


class Campaign(NamedTuple):
    campaign_id: str
    ads: tuple[str, ...]
    ctr: float
    site: str


def make_user(rng: random.Random, index: int) -> User:
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
    return User(anonymous_id, user_id, agent, ip, rng.choice(SITES), rng.choice(SECTIONS))


def make_campaign(rng: random.Random, number: int) -> Campaign:
    ads = tuple(f"ad-{number:03d}{letter}" for letter in "abcd"[: rng.randint(2, 4)])
    return Campaign(f"cmp-{number:03d}", ads, rng.uniform(*CTR_RANGE), rng.choice(SITES))


def anonymous_id(rng: random.Random, ts: int) -> str:
    return f"{rng.randrange(10**9, 10**10)}.{ts // 1000}"


def page_url(rng: random.Random, site: str, interest: str) -> str:
    section = interest if rng.random() < 0.5 else rng.choice(SECTIONS)
    slug = f"{rng.choice(_WORDS)}-{rng.randrange(1000, 100_000)}"
    return f"https://{site}/{section}/{slug}"


def referrer_url(rng: random.Random, site: str, interest: str) -> str | None:
    r = rng.random()
    if r < 0.4:
        return None  # direct
    if r < 0.7:
        return f"https://{site}/{interest}/"  # internal: a section front page
    return rng.choice(_REFERRERS)


def timestamp(rng: random.Random, ts: int) -> int | str:
    """Half epoch milliseconds, half RFC 3339 (mostly UTC, some with an offset)."""
    r = rng.random()
    if r < 0.5:
        return ts
    if r < 0.9:
        return format_timestamp(ts)
    zone = timezone(timedelta(hours=rng.choice((-5, 1, 2, 9))))
    local = datetime.fromtimestamp(ts // 1000, zone) + timedelta(milliseconds=ts % 1000)
    return local.isoformat(timespec="milliseconds")
