"""The synthetic event generator: its pure core (mix, validity, duplicates, follow-ups)
and the pure pieces of its command (options, pacing, progress). No broker."""

from __future__ import annotations

import io
import random
from collections import Counter
from typing import Any

import msgspec
import pytest

from dmp_faust import generator
from dmp_faust.domain.enrich import is_bot
from dmp_faust.domain.events import Event, Rejection, validate_bytes
from dmp_faust.domain.timefmt import parse_timestamp
from dmp_faust.generator import (
    COLLECTOR_REASONS,
    Generated,
    MixConfig,
    Progress,
    due,
    generate_events,
    parse_args,
    progress_line,
    timeline,
)
from dmp_faust.settings import Settings

START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
STEP_MS = 50.0
COUNT = 40_000
LAST_MS = START_MS + int((COUNT - 1) * STEP_MS)


def run(seed: int, count: int = COUNT, config: MixConfig | None = None) -> list[Generated]:
    return list(generate_events(random.Random(seed), count, START_MS, STEP_MS, config))


def decode(item: Generated) -> dict[str, Any]:
    return msgspec.json.decode(item.value)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stream() -> list[Generated]:
    return run(seed=42)


@pytest.fixture(scope="module")
def accepted(stream: list[Generated]) -> list[Event]:
    """The valid events of the stream, validated, in order."""
    events = [validate_bytes(item.value, LAST_MS) for item in stream if item.kind == "valid"]
    assert all(isinstance(event, Event) for event in events)
    return events  # type: ignore[return-value]


def shares(counter: Counter[str]) -> dict[str, float]:
    total = sum(counter.values())
    return {name: n / total for name, n in counter.items()}


# -- determinism and the mix ----------------------------------------------------------------


def test_the_same_seed_gives_the_same_bytes() -> None:
    assert run(seed=7, count=3000) == run(seed=7, count=3000)
    assert [i.value for i in run(seed=7, count=300)] != [i.value for i in run(seed=8, count=300)]


@pytest.mark.parametrize(
    "config",
    [
        MixConfig(),
        MixConfig(invalid_share=0.1, duplicate_share=0.05, bot_share=0.2),
        MixConfig(invalid_share=0, duplicate_share=0, bot_share=0),
    ],
    ids=["defaults", "noisy", "clean"],
)
def test_kinds_land_near_their_configured_shares(config: MixConfig) -> None:
    got = shares(Counter(item.kind for item in run(seed=1, count=20_000, config=config)))
    expected = {
        "invalid": config.invalid_share,
        "duplicate": config.duplicate_share,
        "bot": config.bot_share,
    }
    for kind, share in expected.items():
        assert got.get(kind, 0.0) == pytest.approx(share, abs=0.005 + share * 0.2), kind
    assert "valid" in got


def test_event_types_have_a_realistic_mix(accepted: list[Event]) -> None:
    counts = Counter(event.type for event in accepted)
    got = shares(counts)
    assert 0.55 <= got["page_view"] <= 0.63
    assert 0.34 <= got["impression"] <= 0.41
    assert 0.012 <= got["identify"] <= 0.03
    assert 0.02 <= counts["click"] / counts["impression"] <= 0.04  # CTR
    assert 0.04 <= counts["conversion"] / counts["click"] <= 0.2


def test_one_campaign_and_one_user_are_enough() -> None:
    items = run(seed=3, count=2000, config=MixConfig(campaigns=1, users=1))
    events = [validate_bytes(i.value, LAST_MS) for i in items if i.kind == "valid"]
    assert {e.campaign_id for e in events if isinstance(e, Event)} <= {None, "cmp-001"}
    assert len({e.anonymous_id for e in events if isinstance(e, Event)}) == 1


# -- validity ---------------------------------------------------------------------------------


def test_every_valid_bot_and_duplicate_event_passes_the_validator(stream: list[Generated]) -> None:
    for item in stream:
        if item.kind != "invalid":
            result = validate_bytes(item.value, LAST_MS)
            assert isinstance(result, Event), (result, item.value[:300])
            assert item.key == result.anonymous_id.encode()  # type: ignore[union-attr]


def test_every_invalid_event_is_refused_for_the_intended_reason(stream: list[Generated]) -> None:
    reasons: Counter[str] = Counter()
    for item in stream:
        if item.kind == "invalid":
            result = validate_bytes(item.value, LAST_MS)
            assert isinstance(result, Rejection), item.value[:300]
            assert result.reason == item.reason, (result, item.value[:300])
            assert item.key is None
            reasons[result.reason] += 1
    assert set(reasons) == set(COLLECTOR_REASONS)
    assert min(reasons.values()) >= 20  # spread over all of them, not piled on one


def test_future_timestamps_are_refused_even_when_replaying_an_old_start() -> None:
    wall_ms = START_MS + 400 * 86_400_000  # the run happens 400 days after its event times
    mix = generator.EventMix(random.Random(5), MixConfig(invalid_share=1.0), now_ms=wall_ms)
    futures = [
        g for g in (mix.next(START_MS + i) for i in range(2000)) if g.reason == "future_timestamp"
    ]
    assert futures
    for item in futures:
        refusal = validate_bytes(item.value, wall_ms)
        assert isinstance(refusal, Rejection) and refusal.reason == "future_timestamp"


def test_sizes_are_realistic(stream: list[Generated]) -> None:
    sizes = [len(item.value) for item in stream if item.kind == "valid"]
    assert 150 <= sum(sizes) / len(sizes) <= 400
    assert max(sizes) < 1024
    too_large = [item for item in stream if item.reason == "too_large"]
    assert too_large and all(64 * 1024 < len(item.value) < 80 * 1024 for item in too_large)


# -- duplicates, ids, time --------------------------------------------------------------------


def test_duplicates_repeat_earlier_bytes_and_keys_exactly(stream: list[Generated]) -> None:
    seen: set[tuple[bytes | None, bytes]] = set()
    duplicates = 0
    for item in stream:
        if item.kind == "duplicate":
            assert (item.key, item.value) in seen
            duplicates += 1
        seen.add((item.key, item.value))
    assert duplicates > 100


def test_event_ids_are_unique_apart_from_duplicates(stream: list[Generated]) -> None:
    ids = [decode(item)["event_id"] for item in stream if item.kind in ("valid", "bot")]
    assert len(ids) == len(set(ids))


def test_event_times_follow_the_timeline_in_both_formats(stream: list[Generated]) -> None:
    kinds: Counter[str] = Counter()
    for i, item in enumerate(stream):
        if item.kind in ("valid", "bot"):
            raw = decode(item)["timestamp"]
            assert parse_timestamp(raw) == START_MS + int(i * STEP_MS)
            kinds["int" if isinstance(raw, int) else "+hh:mm" if "+" in raw else "str"] += 1
    assert 0.45 <= shares(kinds)["int"] <= 0.55
    assert kinds["+hh:mm"] > 0


def test_anonymous_ids_are_stable_and_identify_links_a_user(accepted: list[Event]) -> None:
    user_of: dict[str, str] = {}
    logged_in: set[str] = set()
    for event in accepted:
        if event.user_id is not None:
            assert user_of.setdefault(event.anonymous_id or "", event.user_id) == event.user_id
            assert event.type == "identify" or event.anonymous_id in logged_in
        if event.type == "identify":
            assert event.anonymous_id and event.user_id and event.traits
            logged_in.add(event.anonymous_id)
    assert len(logged_in) > 50
    assert any(e.user_id for e in accepted if e.type != "identify")


# -- campaigns, clicks, conversions -----------------------------------------------------------


def test_clicks_and_conversions_follow_their_impressions_and_clicks(accepted: list[Event]) -> None:
    impressed: set[tuple[str | None, str | None]] = set()
    clicked: set[tuple[str | None, str | None]] = set()
    for event in accepted:
        pair = (event.anonymous_id, event.campaign_id)
        if event.type == "impression":
            impressed.add(pair)
        elif event.type == "click":
            assert pair in impressed
            clicked.add(pair)
        elif event.type == "conversion":
            assert pair in clicked
            assert event.revenue is not None and event.revenue > 0


def test_campaigns_and_urls_look_like_traffic(accepted: list[Event]) -> None:
    campaigns = {e.campaign_id for e in accepted if e.campaign_id}
    assert campaigns <= {f"cmp-{n:03d}" for n in range(1, 21)} and len(campaigns) == 20
    assert all(e.ad_id for e in accepted if e.campaign_id)
    views = [e for e in accepted if e.type == "page_view"]
    sections = Counter((e.url or "").split("/")[3] for e in views)
    assert {"sports", "news", "tech"} <= set(sections)
    tagged = sum("utm_source=" in (e.url or "") for e in views) / len(views)
    assert 0.1 <= tagged <= 0.3
    assert 0.4 <= sum(e.referrer is not None for e in views) / len(views) <= 0.8


def test_user_agents_and_addresses(stream: list[Generated]) -> None:
    by_kind: dict[str, set[str]] = {"valid": set(), "bot": set()}
    addresses: set[str] = set()
    for item in stream:
        if item.kind in by_kind:
            event = decode(item)
            by_kind[item.kind].add(event["user_agent"])
            addresses.add(event["ip"])
    assert not any(is_bot(agent) for agent in by_kind["valid"])
    assert all(is_bot(agent) for agent in by_kind["bot"])
    assert any("Googlebot" in a for a in by_kind["bot"]) and any(
        "iPhone" in a for a in by_kind["valid"]
    )
    assert 0.03 <= sum(":" in ip for ip in addresses) / len(addresses) <= 0.25  # some IPv6


# -- the command's pure pieces ----------------------------------------------------------------


def test_options_default_from_the_settings() -> None:
    options = parse_args([], Settings(kafka_bootstrap="k:1", topic_prefix="t"))
    assert (options.bootstrap, options.topic, options.rate, options.count) == (
        "k:1",
        "t.events.raw",
        200.0,
        0,
    )
    assert options.config == MixConfig() and options.start_ms is None and options.wait_topic_s == 60


def test_options_parse_times_and_refuse_nonsense() -> None:
    settings = Settings()
    assert parse_args(["--start-ms", "2024-05-01T00:00:00Z"], settings).start_ms == START_MS
    assert parse_args(["--start-ms", str(START_MS), "--seed", "3"], settings).seed == 3
    for bad in (
        ["--rate", "-1"],
        ["--invalid-share", "2"],
        ["--start-ms", "May"],
        ["--bot-share", "0.6", "--invalid-share", "0.5"],
        ["--users", "0"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad, settings)


def test_timeline_follows_the_wall_clock_or_steps_from_the_start() -> None:
    assert timeline(None, 200, lambda: 123)(99) == 123
    assert timeline(START_MS, 200, lambda: 0)(3) == START_MS + 15
    assert timeline(START_MS, 0, lambda: 0)(3) == START_MS + 15  # --rate 0: the default spacing
    assert timeline(START_MS, 3, lambda: 0)(1) == START_MS + 333


@pytest.mark.parametrize(
    ("rate", "elapsed_s", "queued", "expected"),
    [
        (200, 0.0, 0, 1),
        (200, 0.02, 1, 4),
        (200, 1.0, 201, 0),
        (0, 5.0, 10, 2000),
        (1e9, 1, 0, 2000),
    ],
)
def test_due_keeps_to_the_rate_in_small_batches(
    rate: float, elapsed_s: float, queued: int, expected: int
) -> None:
    assert due(rate, elapsed_s, queued) == expected


def test_progress_off_a_terminal_prints_a_line_every_five_seconds() -> None:
    out = io.StringIO()
    progress = Progress(out, quiet=False)
    for tick in range(1, 601):  # 12 s at 50 ticks a second, 1000 events a second
        progress.update(tick / 50, tick * 20)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0] == "generate: sent 5,000  1,000 ev/s  elapsed 0:00:05"


def test_quiet_progress_prints_nothing() -> None:
    out = io.StringIO()
    progress = Progress(out, quiet=True)
    progress.update(10.0, 100)
    progress.close()
    assert out.getvalue() == ""
    assert (
        progress_line(1234567, 2500.4, 3725)
        == "generate: sent 1,234,567  2,500 ev/s  elapsed 1:02:05"
    )


def test_a_backfill_runs_event_time_faster_until_it_has_caught_up_with_the_clock() -> None:
    hour_ms = 3_600_000
    # at 10 ev/s and 30x, after 10 s event time has reached 300 s: 3,001 events are due
    assert due(10, 10.0, 0, hour_ms, 30) == 2000  # one batch at most
    assert due(10, 10.0, 2000, hour_ms, 30) == 1001
    # caught up after 3600 / 29 s; from then on, the clock: an hour and 200 s of events
    assert due(10, 200.0, 37_000, hour_ms, 30) == 1001
    assert due(10, 200.0, 38_001, hour_ms, 30) == 0


def test_the_labelled_anomaly_silences_one_campaign_for_its_minutes_only() -> None:
    minute = 60_000
    config = MixConfig(silent_campaign=2, silent_from_ms=START_MS + 10 * minute)
    config = MixConfig(**{**config.__dict__, "silent_to_ms": START_MS + 20 * minute})
    events = generate_events(random.Random(5), 60_000, START_MS, 30 * minute / 60_000, config)
    per_minute: Counter[tuple[str, int]] = Counter()
    for item in events:
        if item.kind != "valid":
            continue
        body = msgspec.json.decode(item.value)
        if body.get("campaign_id"):
            at = parse_timestamp(body["timestamp"]) - START_MS
            per_minute[(body["campaign_id"], at // minute)] += 1
    silent = [per_minute[("cmp-002", m)] for m in range(10, 20)]
    assert silent == [0] * 10
    assert all(per_minute[("cmp-002", m)] > 0 for m in (*range(2, 10), *range(21, 30)))
    assert all(per_minute[("cmp-001", m)] > 0 for m in range(30))


def test_anomaly_and_backfill_options_are_checked() -> None:
    settings = Settings.from_env({})
    options = parse_args(["--backfill-minutes", "70", "--anomaly-at", "66"], settings)
    assert options.backfill_ms == 70 * 60_000
    assert options.start_ms is not None
    assert options.config.silent_campaign == 2
    assert options.config.silent_to_ms - options.config.silent_from_ms == 8 * 60_000
    assert options.config.silent_from_ms == options.start_ms + 66 * 60_000
    for bad in (
        ["--backfill-minutes", "5", "--rate", "0"],
        ["--backfill-minutes", "5", "--start-ms", "0"],
        ["--anomaly-at", "3", "--campaigns", "1"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad, settings)
