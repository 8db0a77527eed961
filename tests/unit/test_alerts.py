"""The alert detector on simulated traffic (seeded): false alarms, detection, shifts, replays.

The rates asserted here are the ones docs/ANALYSIS.md reports; they come from
windows of pure Poisson or negative binomial counts, as a campaign's windows
would be handed to the detector once closed.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import numpy as np
import pytest

from dmp_faust.domain.alerts import (
    WINDOW_MS,
    AlertSettings,
    Change,
    Detector,
    Simulation,
    campaign_step,
    nominal_incident_rate,
    per_week,
    season_factor,
    simulate,
)

T0 = 1_614_556_800_000  # 2021-03-01 00:00 UTC, a Monday
DEFAULTS = AlertSettings()
WINDOWS = 40_000  # about four weeks of 1-minute windows


def run(
    counts: Iterable[int], settings: AlertSettings = DEFAULTS, campaign: str = "c"
) -> Simulation:
    return simulate(counts, settings, campaign, T0)


def poisson(rate: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).poisson(rate, n)


def overdispersed(rate: float, n: int, seed: int, dispersion: float = 3.0) -> np.ndarray:
    """Negative binomial counts of mean ``rate`` and variance ``dispersion x rate``."""
    size = rate / (dispersion - 1)
    return np.random.default_rng(seed).negative_binomial(size, size / (size + rate), n)


TRAFFIC = [
    pytest.param(lambda: poisson(1, WINDOWS, 1), id="poisson-1"),
    pytest.param(lambda: poisson(10, WINDOWS, 2), id="poisson-10"),
    pytest.param(lambda: poisson(100, WINDOWS, 3), id="poisson-100"),
    pytest.param(lambda: poisson(1000, WINDOWS, 4), id="poisson-1000"),
    pytest.param(lambda: overdispersed(10, WINDOWS, 5), id="nb-10-x3"),
    pytest.param(lambda: overdispersed(100, WINDOWS, 6), id="nb-100-x3"),
]


@pytest.mark.parametrize("counts", TRAFFIC)
def test_a_window_is_found_anomalous_at_the_nominal_rate_at_every_volume(counts) -> None:  # type: ignore[no-untyped-def]
    """The randomised tests make ``alpha`` mean the same at 1 and at 1,000 events a minute
    (a plain test of a count at a mean of 1 is 12 times too quiet); on overdispersed
    traffic the measured dispersion keeps it."""
    found = run(counts())
    assert found.judged > 0.99 * WINDOWS
    share = found.anomalous / found.judged
    assert DEFAULTS.alpha / 2 <= share <= 2 * DEFAULTS.alpha


@pytest.mark.parametrize("counts", TRAFFIC)
def test_false_incidents_open_at_the_rate_the_persistence_rule_gives(counts) -> None:  # type: ignore[no-untyped-def]
    """At the default alpha a false incident is too rare to count in four weeks, so the
    chain is checked at alpha = 0.05: two anomalous windows in a row open one."""
    settings = AlertSettings(alpha=0.05)
    found = run(counts(), settings)
    nominal = 2 * nominal_incident_rate(settings) * found.judged  # both directions
    assert nominal / 2 <= len(found.opened) <= 2 * nominal


@pytest.mark.parametrize(
    "counts",
    [p for p in TRAFFIC if p.id not in ("poisson-1",)],  # from 10 a minute
)
def test_defaults_keep_false_incidents_far_below_one_per_campaign_week(counts) -> None:  # type: ignore[no-untyped-def]
    found = run(counts())
    assert len(found.opened) <= 1  # nominal: 0.01 in these four weeks
    # 4 metrics, 2 directions each: under 0.1 false incidents a campaign-week
    assert 8 * per_week(nominal_incident_rate(DEFAULTS)) < 0.1


@pytest.mark.parametrize(
    ("kind", "anomaly"),
    [
        ("spike", lambda rng: rng.poisson(60, 5)),
        ("drop", lambda rng: np.zeros(5, dtype=int)),
    ],
)
def test_spikes_and_drops_are_found_within_three_windows(kind: str, anomaly) -> None:  # type: ignore[no-untyped-def]
    """3x for five minutes, or nothing for five minutes, at 20 events a minute."""
    rng = np.random.default_rng(17)
    trials, found = 300, 0
    for trial in range(trials):
        counts = np.concatenate([rng.poisson(20, 200), anomaly(rng), rng.poisson(20, 30)])
        result = run(counts, campaign=f"c{trial}")
        hits = [i for i, direction in result.opened if i >= 200 and direction == kind]
        found += bool(hits) and hits[0] <= 202
        assert result.opened == [] or result.opened[-1][0] >= 200  # nothing before it
        assert not _still_open(result)  # and it resolves once traffic is back
    assert found / trials >= 0.99


def _still_open(result: Simulation) -> bool:
    return len(result.opened) > len(result.resolved)


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_a_lasting_level_shift_stops_alerting_within_the_stated_bound(factor: float) -> None:
    """After a lasting shift the incident, if one opens, resolves within ``open_after +
    shift_after + resolve_after`` windows of its first, and none follows."""
    bound = DEFAULTS.open_after + DEFAULTS.shift_after + DEFAULTS.resolve_after
    rng = np.random.default_rng(23)
    for trial in range(40):
        counts = np.concatenate([rng.poisson(20, 300), rng.poisson(20 * factor, 600)])
        result = run(counts, campaign=f"shift{trial}")
        assert not _still_open(result)
        for change in result.changes:
            incident = change.incident
            if incident.status == "resolved":
                assert incident.resolved_window is not None
                assert (incident.resolved_window - incident.opened_window) // WINDOW_MS <= bound
        assert all(i < 300 + 200 for i, _ in result.opened)  # none once the level is learnt


def test_a_shift_that_stays_anomalous_is_learnt_as_the_new_level() -> None:
    """Ten times the volume: every window anomalous until the level is taken from them."""
    counts = [20] * 200 + [200] * 100
    result = run(counts)
    assert [d for _, d in result.opened] == ["spike"]
    assert result.opened[0][0] == 201  # the second anomalous window in a row
    assert result.resolved == [
        200 + DEFAULTS.shift_after - 1 + DEFAULTS.resolve_after
    ]  # level learnt at the 15th, three calm windows later
    assert result.detector.level == pytest.approx(200, rel=0.05)


def test_a_campaign_that_goes_silent_is_a_drop_on_every_count_metric() -> None:
    detectors: dict[str, Detector] = {}
    changes: list[Change] = []
    for minute in range(200):
        window = T0 + minute * WINDOW_MS
        counts = {"impressions": 200, "clicks": 20} if minute < 150 else {}
        changes += campaign_step(detectors, "c-silent", window, counts, DEFAULTS)
    opened = {(c.incident.metric, c.incident.direction) for c in changes}
    assert ("impressions", "drop") in opened
    assert ("clicks", "drop") in opened
    first = min(c.incident.opened_window for c in changes)
    assert first == T0 + 150 * WINDOW_MS  # the first silent window


def test_ctr_alerts_on_clicks_given_impressions_and_not_on_volume() -> None:
    """Impressions double (a volume spike) while the CTR holds: no CTR incident; then the
    CTR falls from 2 % to 0.5 % at the same volume: a CTR drop, and no count alert on
    impressions."""
    rng = np.random.default_rng(31)
    detectors: dict[str, Detector] = {}
    changes: list[Change] = []
    for minute in range(600):
        window = T0 + minute * WINDOW_MS
        impressions = 2000 if 200 <= minute < 260 else 1000
        ctr = 0.005 if minute >= 400 else 0.02
        clicks = int(rng.binomial(impressions, ctr))
        counts = {"impressions": int(rng.poisson(impressions)), "clicks": clicks}
        changes += campaign_step(detectors, "c-ctr", window, counts, DEFAULTS)
    ctr_opened = [c.incident for c in changes if c.incident.metric == "ctr"]
    assert [(i.direction, i.status) for i in ctr_opened][:1] == [("drop", "open")]
    assert ctr_opened[0].opened_window == T0 + 400 * WINDOW_MS
    assert ctr_opened[0].model["test"] == "binomial"
    impressions_changes = [c.incident for c in changes if c.incident.metric == "impressions"]
    assert {(i.direction, i.opened_window) for i in impressions_changes} == {
        ("spike", T0 + 200 * WINDOW_MS),
        ("drop", T0 + 260 * WINDOW_MS),
    }  # the doubling and its end; nothing when only the CTR moved


def test_nothing_is_judged_during_warm_up_or_below_the_minimum_volume() -> None:
    result = run([50] * DEFAULTS.warmup_windows + [0, 0, 0])
    assert result.judged == 3 and [d for _, d in result.opened] == ["drop"]
    quiet = run([50] * (DEFAULTS.warmup_windows - 1) + [0, 0, 0])
    assert quiet.opened[:1] != [(DEFAULTS.warmup_windows - 1, "drop")]
    sparse = run(poisson(0.1, 2_000, 9))
    assert sparse.judged == 0 and sparse.opened == []


def test_a_replay_or_a_rebuild_gives_the_same_incidents_with_the_same_ids() -> None:
    counts = np.concatenate([poisson(30, 500, 41), np.zeros(10, dtype=int), poisson(30, 100, 42)])
    first, again = run(counts, campaign="c-replay"), run(counts, campaign="c-replay")
    encoder = msgspec.json.Encoder()
    assert [encoder.encode(c.incident) for c in first.changes] == [
        encoder.encode(c.incident) for c in again.changes
    ]
    assert first.changes  # the silence opened one
    # the state survives its table value: stop half-way, decode it, go on
    half = run(counts[:505], campaign="c-replay")
    state = msgspec.json.decode(encoder.encode(half.detector), type=Detector)
    resumed = simulate(counts[505:], DEFAULTS, "c-replay", T0, Simulation(detector=state))
    assert [encoder.encode(c.incident) for c in half.changes + resumed.changes] == [
        encoder.encode(c.incident) for c in first.changes
    ]


def test_an_incident_says_why_it_fired() -> None:
    result = run([40] * 100 + [0, 0])
    incident = result.changes[0].incident
    assert (incident.metric, incident.direction, incident.status) == ("impressions", "drop", "open")
    assert incident.observed == 0 and incident.expected == pytest.approx(40)
    assert incident.p_value < DEFAULTS.alpha
    assert incident.model["test"] == "poisson"
    assert incident.model["windows_in_a_row"] == DEFAULTS.open_after
    assert incident.model["alpha"] == DEFAULTS.alpha
    assert incident.severity == "critical"  # e^-40 is far past the threshold
    assert len(incident.alert_id) == 20


def test_hour_of_week_seasonality_is_learnt_and_used_after_a_week() -> None:
    """Office hours: 30 a minute on weekdays from 9 to 18 UTC, 3 otherwise. In the first
    week the level cannot know that 9:00 comes, and each weekday opens a spike at 9 and
    a drop at 18; from the second week the hour-of-week factors expect them."""
    week = 7 * 24 * 60
    minutes = np.arange(3 * week)
    hour, day = minutes // 60 % 24, minutes // (24 * 60) % 7  # T0 is a Monday
    rate = np.where((day < 5) & (hour >= 9) & (hour < 18), 30.0, 3.0)
    result = run(np.random.default_rng(5).poisson(rate), campaign="c-office")
    first_week = [(i // 60 % 24, d) for i, d in result.opened if i < week]
    assert first_week == [(9, "spike"), (18, "drop")] * 5
    assert [i for i, _ in result.opened if i >= week] == []
    detector = result.detector
    busy, average = 30.0, (45 * 30.0 + 123 * 3.0) / 168
    assert season_factor(detector, T0 + 12 * 3_600_000) == pytest.approx(busy / average, rel=0.05)
    saturday = T0 + (5 * 24 + 12) * 3_600_000
    assert season_factor(detector, saturday) == pytest.approx(3.0 / average, rel=0.1)


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        AlertSettings(alpha=0)
    with pytest.raises(ValueError):
        AlertSettings(open_after=5, shift_after=3)
    with pytest.raises(ValueError):
        AlertSettings(half_life_windows=0)
