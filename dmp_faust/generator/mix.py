"""The generator's pure core: :class:`EventMix`, a deterministic stream of raw events.

Handed a ``random.Random`` and each event's time, it returns the raw bytes a
producer would send, with a realistic mix (page views, impressions, clicks at
a CTR of 2-4 %, conversions on 10 % of clicks, identifies), bots, duplicates
and invalid events spread over the reasons the collector detects. Its users,
sites and campaigns come from :mod:`.audience`, its invalid events from
:mod:`.invalid`. It reads no clock and does no I/O, so the same seed gives the
same bytes.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, NamedTuple

import msgspec

from dmp_faust.generator.audience import (
    BOTS,
    COUNTRIES,
    PLANS,
    SECTIONS,
    SITES,
    UTM,
    RawEvent,
    User,
    anonymous_id,
    make_campaign,
    make_user,
    page_url,
    referrer_url,
    timestamp,
)
from dmp_faust.generator.invalid import COLLECTOR_REASONS, corrupt
from dmp_faust.settings import DAY_MS, HOUR_MS

# Shares of the events drawn fresh (clicks and conversions follow impressions and
# clicks): with clicks ~1.1 % and conversions ~0.1 % on top, the stream holds
# ~59 % page views, ~37.5 % impressions and ~2 % identifies.
PAGE_VIEW_SHARE: Final = 0.60
IMPRESSION_SHARE: Final = 0.38
CONVERSION_RATE: Final = 0.10  # of clicks
CLICK_DELAY_MS: Final = (1_000, 30_000)
CONVERSION_DELAY_MS: Final = (5_000, 120_000)
DUPLICATE_MEMORY: Final = 2_000  # duplicates re-send one of the last N events


@dataclass(frozen=True)
class MixConfig:
    campaigns: int = 20
    users: int = 5000
    invalid_share: float = 0.01
    duplicate_share: float = 0.01
    bot_share: float = 0.02
    # A labelled anomaly: the campaign of this number (1: cmp-001) sends nothing at event
    # times in [silent_from_ms, silent_to_ms); its share goes to the others.
    silent_campaign: int | None = None
    silent_from_ms: int = 0
    silent_to_ms: int = 0

    def silent(self, number: int, ts: int) -> bool:
        """Whether campaign index ``number`` (0-based) is silent at ``ts``."""
        return self.silent_campaign == number + 1 and self.silent_from_ms <= ts < self.silent_to_ms


class Generated(NamedTuple):
    """One record for the raw topic. ``kind`` is valid, bot, duplicate or invalid;
    ``reason`` is the refusal an invalid one is built to get."""

    key: bytes | None
    value: bytes
    kind: str
    reason: str | None = None


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
        self._users: dict[int, User] = {}
        self._logged_in: set[int] = set()
        self._campaigns = [make_campaign(rng, n) for n in range(1, config.campaigns + 1)]
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

    def _user(self, index: int) -> User:
        user = self._users.get(index)
        if user is None:
            user = self._users[index] = make_user(random.Random(self._salt + index), index)
        return user

    def _pick_campaign(self) -> int:
        return self._rng.choices(range(len(self._campaigns)), cum_weights=self._campaign_cum)[0]

    def _base(self, ts: int, kind: str, index: int) -> RawEvent:
        user = self._user(index)
        event: RawEvent = {
            "event_id": self._event_id(),
            "type": kind,
            "timestamp": timestamp(self._rng, ts),
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
        site = user.site if rng.random() < 0.7 else rng.choice(SITES)
        event = self._base(ts, "page_view", index)
        event["url"] = page_url(rng, site, user.interest)
        if rng.random() < 0.2:
            source, medium = rng.choice(UTM)
            campaign = rng.choice(self._campaigns).campaign_id
            event["url"] += f"?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
        referrer = referrer_url(rng, site, user.interest)
        if referrer:
            event["referrer"] = referrer
        return event

    def _impression(self, ts: int, index: int, schedule: bool) -> RawEvent:
        number = self._pick_campaign()
        while self._config.silent(number, ts):
            number = self._pick_campaign()
        campaign = self._campaigns[number]
        event = self._base(ts, "impression", index)
        event["campaign_id"] = campaign.campaign_id
        event["ad_id"] = self._rng.choice(campaign.ads)
        if schedule and self._rng.random() < campaign.ctr:
            self._schedule(ts, CLICK_DELAY_MS, "click", index, number, event["ad_id"])
        return event

    def _follow_up(self, ts: int, due: _FollowUp) -> RawEvent:
        if self._config.silent(due.campaign, ts):
            return self._page_view(ts, due.user)
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
            "plan": self._rng.choice(PLANS),
            "country": self._rng.choice(COUNTRIES),
        }
        return event

    def _bot(self, ts: int) -> RawEvent:
        """A crawler: no cookie, so a fresh anonymous_id each time, and its own addresses."""
        rng = self._rng
        agent, network = rng.choice(BOTS)
        kind = "page_view" if rng.random() < 0.85 else "impression"
        event: RawEvent = {
            "event_id": self._event_id(),
            "type": kind,
            "timestamp": timestamp(rng, ts),
            "anonymous_id": anonymous_id(rng, ts),
            "user_agent": agent,
            "ip": f"{network}.{rng.randrange(1, 255)}",
        }
        if kind == "page_view":
            event["url"] = page_url(rng, rng.choice(SITES), rng.choice(SECTIONS))
        else:
            number = rng.randrange(len(self._campaigns))
            while self._config.silent(number, ts) and len(self._campaigns) > 1:
                number = rng.randrange(len(self._campaigns))
            campaign = self._campaigns[number]
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
        return Generated(None, corrupt(reason, rng, base, future_ms), "invalid", reason)


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
