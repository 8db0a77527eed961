"""Enrichment: truncated IPs, UTM parameters, user agents, crawler detection."""

from __future__ import annotations

import ipaddress

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmp_faust.domain.enrich import (
    CleanEvent,
    UserAgent,
    enrich,
    is_bot,
    parse_user_agent,
    parse_utm,
)
from dmp_faust.domain.events import Event, encode
from dmp_faust.domain.privacy import truncate_ip

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
AHREFSBOT = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"


def decode_valid_event(raw: bytes) -> Event:
    return msgspec.json.decode(raw, type=Event)


# --- privacy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "truncated"),
    [
        pytest.param("203.0.113.77", "203.0.113.0", id="ipv4"),
        pytest.param("203.0.113.0", "203.0.113.0", id="ipv4-already-zero"),
        pytest.param("255.255.255.255", "255.255.255.0", id="ipv4-broadcast"),
        pytest.param(" 10.1.2.3\n", "10.1.2.0", id="ipv4-whitespace"),
        pytest.param("2001:db8:abcd:12:3456::1", "2001:db8:abcd::", id="ipv6"),
        pytest.param("2001:0DB8:ABCD:FFFF:FFFF:FFFF:FFFF:FFFF", "2001:db8:abcd::", id="ipv6-upper"),
        pytest.param("::1", "::", id="ipv6-loopback"),
        pytest.param("::ffff:192.168.1.77", "192.168.1.0", id="ipv4-mapped"),
        pytest.param("::ffff:c0a8:14d", "192.168.1.0", id="ipv4-mapped-hex"),
        pytest.param("fe80::1:2:3:4%eth0", "fe80::", id="ipv6-zone-dropped"),
    ],
)
def test_truncate_ip(ip: str, truncated: str) -> None:
    assert truncate_ip(ip) == truncated


@pytest.mark.parametrize(
    "ip",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("localhost", id="hostname"),
        pytest.param("256.1.1.1", id="octet-256"),
        pytest.param("1.2.3", id="three-octets"),
        pytest.param("1.2.3.4/24", id="cidr"),
        pytest.param("1.2.3.4:8080", id="with-port"),
        pytest.param("01.2.3.4", id="leading-zero"),
        pytest.param("1.2.3.4, 5.6.7.8", id="x-forwarded-for-list"),
        pytest.param("2001:db8::g", id="bad-hex"),
    ],
)
def test_truncate_ip_drops_what_is_not_an_address(ip: str | None) -> None:
    assert truncate_ip(ip) is None


def _ipv4_slash_24(text: str) -> str | None:
    """What ``ipaddress`` makes of ``text`` as an IPv4 address's /24 (None: not one)."""
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        return None
    return str(ipaddress.IPv4Network((address, 24), strict=False).network_address)


@given(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.text(alphabet="0123456789. \t", max_size=20),
        st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
        st.from_regex(r"\A0*[0-9]{1,3}\.0*[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z"),
    )
)
def test_truncate_ip_dotted_quads_as_ipaddress_reads_them(text: str) -> None:
    # The fast path for dotted quads must agree with ipaddress: same /24, same refusals.
    expected = _ipv4_slash_24(text)
    if expected is not None:
        assert truncate_ip(text) == expected
    elif ":" not in text:
        assert truncate_ip(text) is None


# --- UTM ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "utm"),
    [
        pytest.param(
            "https://shop.example/p?utm_source=news&utm_medium=email&utm_campaign=spring"
            "&utm_term=shoes&utm_content=banner",
            {
                "utm_source": "news",
                "utm_medium": "email",
                "utm_campaign": "spring",
                "utm_term": "shoes",
                "utm_content": "banner",
            },
            id="all-five",
        ),
        pytest.param(
            "https://x.example/?utm_source=a&utm_source=b", {"utm_source": "a"}, id="first-wins"
        ),
        pytest.param(
            "https://x.example/?utm_source=&utm_source=b", {"utm_source": "b"}, id="blank-skipped"
        ),
        pytest.param(
            "https://x.example/?page=2&utm_medium=cpc&ref=home&utm_id=9&xutm_source=z",
            {"utm_medium": "cpc"},
            id="others-ignored",
        ),
        pytest.param(
            "https://x.example/?utm_campaign=summer%20sale%2F2024&utm_term=a+b%26c",
            {"utm_campaign": "summer sale/2024", "utm_term": "a b&c"},
            id="decoded",
        ),
        pytest.param(
            "https://x.example/?utm_source=caf%C3%A9", {"utm_source": "café"}, id="utf8-decoded"
        ),
        pytest.param("https://x.example/?a=1", None, id="no-utm"),
        pytest.param("https://x.example/utm_source/page", None, id="utm-in-path-only"),
        pytest.param("https://x.example/?a=1#utm_source=x", None, id="utm-in-fragment-only"),
        pytest.param("https://x.example/?utm_source", None, id="key-without-value"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("http://[::1/?utm_source=x", None, id="unparseable-url"),
    ],
)
def test_parse_utm(url: str | None, utm: dict[str, str] | None) -> None:
    assert parse_utm(url) == utm


# --- user agent ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "parsed"),
    [
        pytest.param(
            CHROME_WINDOWS,
            UserAgent(
                browser="Chrome",
                browser_version="120.0",
                os="Windows",
                os_version="10",
                device="Other",
            ),
            id="chrome-windows",
        ),
        pytest.param(
            SAFARI_IPHONE,
            UserAgent(
                browser="Mobile Safari",
                browser_version="17.1",
                os="iOS",
                os_version="17.1",
                device="iPhone",
            ),
            id="safari-iphone",
        ),
        pytest.param(
            "definitely not a browser",
            UserAgent(
                browser="Other", browser_version=None, os="Other", os_version=None, device="Other"
            ),
            id="unknown",
        ),
    ],
)
def test_parse_user_agent(user_agent: str, parsed: UserAgent) -> None:
    assert parse_user_agent(user_agent) == parsed


@pytest.mark.parametrize(
    ("user_agent", "bot"),
    [
        pytest.param(GOOGLEBOT, True, id="googlebot"),
        pytest.param(BINGBOT, True, id="bingbot"),
        pytest.param(AHREFSBOT, True, id="ahrefsbot"),
        pytest.param("curl/8.4.0", True, id="curl"),
        pytest.param(CHROME_WINDOWS, False, id="chrome"),
        pytest.param(SAFARI_IPHONE, False, id="safari-iphone"),
        pytest.param(FIREFOX_LINUX, False, id="firefox"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
    ],
)
def test_is_bot(user_agent: str | None, bot: bool) -> None:
    assert is_bot(user_agent) is bot


# --- enrich -------------------------------------------------------------------------


def test_enrich_maps_every_field() -> None:
    event = Event(
        event_id="e-1",
        type="conversion",
        ts=1_700_000_000_000,
        anonymous_id="anon-1",
        user_id="user-1",
        campaign_id="camp-1",
        ad_id="ad-1",
        url="https://shop.example/done?utm_source=news&utm_medium=email",
        referrer="https://news.example/",
        user_agent=SAFARI_IPHONE,
        ip="203.0.113.0",
        revenue=9.5,
        properties={"sku": "A"},
        traits={"plan": "pro"},
    )
    assert enrich(event) == CleanEvent(
        event_id="e-1",
        type="conversion",
        timestamp=1_700_000_000_000,
        profile_id="user-1",
        anonymous_id="anon-1",
        user_id="user-1",
        campaign_id="camp-1",
        ad_id="ad-1",
        url="https://shop.example/done?utm_source=news&utm_medium=email",
        referrer="https://news.example/",
        ip="203.0.113.0",
        revenue=9.5,
        properties={"sku": "A"},
        traits={"plan": "pro"},
        user_agent=UserAgent("Mobile Safari", "17.1", "iOS", "17.1", "iPhone"),
        utm={"utm_source": "news", "utm_medium": "email"},
    )


def test_enrich_minimal_event() -> None:
    event = Event(event_id="e-2", type="page_view", ts=-5, anonymous_id="anon-2")
    clean = enrich(event)
    assert clean == CleanEvent(
        event_id="e-2", type="page_view", timestamp=-5, profile_id="anon-2", anonymous_id="anon-2"
    )
    assert clean.user_agent is None
    assert clean.utm is None


def test_clean_event_json_carries_timestamp_and_profile() -> None:
    event = decode_valid_event(
        encode(
            Event(
                event_id="e",
                type="click",
                ts=42,
                user_id="u",
                campaign_id="c",
                user_agent=CHROME_WINDOWS,
            )
        )
    )
    raw = encode(enrich(event))
    assert b'"timestamp":42' in raw
    assert b'"profile_id":"u"' in raw
    assert b'"browser":"Chrome"' in raw
    assert b"null" not in raw, "absent fields are omitted"
