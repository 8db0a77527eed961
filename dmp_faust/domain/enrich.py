"""Enrichment of an accepted event: user agent, UTM parameters, truncated IP.

User-agent parsing (ua-parser) and crawler detection (crawlerdetect) cost tens
to hundreds of microseconds per call, while real traffic repeats a few
thousand user agents over and over: both are memoised with a bounded cache.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import msgspec
import ua_parser
from crawlerdetect import CrawlerDetect

from dmp_faust.domain.events import Event

UTM_KEYS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_CACHE_SIZE: Final = 16_384
_crawlers: Final = CrawlerDetect()


class UserAgent(msgspec.Struct, frozen=True):
    browser: str
    browser_version: str | None
    os: str
    os_version: str | None
    device: str


class CleanEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An accepted event as written to ``dmp.events.clean``.

    The input fields, with ``timestamp`` as epoch milliseconds, ``ip``
    truncated, and what was derived from them.
    """

    event_id: str
    type: str
    timestamp: int
    profile_id: str
    anonymous_id: str | None = None
    user_id: str | None = None
    campaign_id: str | None = None
    ad_id: str | None = None
    url: str | None = None
    referrer: str | None = None
    ip: str | None = None
    revenue: float | None = None
    properties: dict[str, object] | None = None
    traits: dict[str, object] | None = None
    user_agent: UserAgent | None = None
    utm: dict[str, str] | None = None


@lru_cache(maxsize=_CACHE_SIZE)
def is_bot(user_agent: str | None) -> bool:
    """Whether the user agent is a known crawler, spider or bot."""
    return bool(user_agent) and bool(_crawlers.isCrawler(user_agent))


@lru_cache(maxsize=_CACHE_SIZE)
def parse_user_agent(user_agent: str) -> UserAgent:
    parsed = ua_parser.parse(user_agent).with_defaults()
    return UserAgent(
        browser=parsed.user_agent.family,
        browser_version=_version(parsed.user_agent.major, parsed.user_agent.minor),
        os=parsed.os.family,
        os_version=_version(parsed.os.major, parsed.os.minor),
        device=parsed.device.family,
    )


def _version(major: str | None, minor: str | None) -> str | None:
    if major is None:
        return None
    return f"{major}.{minor}" if minor is not None else major


def parse_utm(url: str | None) -> dict[str, str] | None:
    """The ``utm_*`` query parameters of ``url`` (first value of each), or None."""
    if not url or "utm_" not in url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    found: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key in UTM_KEYS and key not in found:
            found[key] = value
    return found or None


def enrich(event: Event) -> CleanEvent:
    """The clean event for an accepted ``event``."""
    return CleanEvent(
        event_id=event.event_id,
        type=event.type,
        timestamp=event.ts,
        profile_id=event.profile_id,
        anonymous_id=event.anonymous_id,
        user_id=event.user_id,
        campaign_id=event.campaign_id,
        ad_id=event.ad_id,
        url=event.url,
        referrer=event.referrer,
        ip=event.ip,
        revenue=event.revenue,
        properties=event.properties,
        traits=event.traits,
        user_agent=parse_user_agent(event.user_agent) if event.user_agent else None,
        utm=parse_utm(event.url),
    )
