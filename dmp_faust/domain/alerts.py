"""Anomaly alerts on a campaign's counts: the detector, pure and deterministic.

Each campaign has a :class:`Detector` per metric (impressions, clicks,
conversions: counts per 1-minute window; ``ctr``: clicks given impressions).
Windows are handed to it in order, once closed in stream time, empty ones
included (a campaign that goes silent is a drop). For each window it

1. **expects** a count: the campaign's own exponentially weighted level
   (half-life ``half_life_windows``), times an hour-of-week factor once the
   campaign has ``season_after_windows`` (a week) of history; before that the
   level alone. During warm-up the level is the plain mean of the windows so
   far;
2. **judges** the observed count by its randomised tail probabilities
   (:mod:`dmp_faust.domain.stats`) under a Poisson of that mean, or a negative
   binomial when the campaign's measured index of dispersion (its weighted
   variance over its weighted mean) is at least ``dispersion_threshold``;
   CTR by the binomial of the window's impressions at the baseline CTR
   (the ratio of the weighted clicks and impressions). A window is anomalous
   when one tail is below ``alpha / 2``. Not judged: warm-up, an expected
   count below ``min_expected``, fewer impressions than ``ctr_min_impressions``;
3. **keeps incidents**, one per direction at most: one opens after
   ``open_after`` anomalous windows in a row in its direction and resolves
   after ``resolve_after`` windows in a row that are not (hysteresis);
4. **learns** from every window that was not anomalous. A lasting level shift
   would keep the windows anomalous and little would be learnt: so once an
   incident has been open for ``shift_after`` windows, their mean becomes the
   level, and the incident resolves ``resolve_after`` windows later. An alert
   thus stops within ``open_after + shift_after + resolve_after`` windows of a
   lasting shift, unless the new level is itself anomalous.

The random split of each tail comes from a hash of the campaign, the metric
and the window (:func:`~dmp_faust.domain.stats.uniform_of`), and everything
else from the windows in order: a replay, or a rebuild on an empty disk,
gives the same incidents with the same ids. docs/ANALYSIS.md states the
rates this gives and how they were measured.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Literal

import msgspec

from dmp_faust.domain.stats import (
    Tails,
    binomial_tails,
    negative_binomial_tails,
    poisson_tails,
    uniform_of,
)

WINDOW_MS: Final = 60_000
HOURS_OF_WEEK: Final = 7 * 24
COUNT_METRICS: Final = ("impressions", "clicks", "conversions")
CTR: Final = "ctr"
ALERT_METRICS: Final = (*COUNT_METRICS, CTR, "capacity")
Direction = Literal["spike", "drop"]
DIRECTIONS: Final[tuple[Direction, Direction]] = ("spike", "drop")
SEASON_WEIGHT: Final = 1.0 - 0.5 ** (1.0 / 120.0)  # 60 windows an hour: about two weeks
SEASON_PLAIN: Final = 120  # windows of an hour of the week that are averaged plainly


@dataclass(frozen=True)
class AlertSettings:
    """The knobs of the detector (``DMP_ALERT_*``; the README lists each)."""

    alpha: float = 0.001  # two-sided significance of one window (alpha/2 a side)
    open_after: int = 2  # anomalous windows in a row that open an incident
    resolve_after: int = 3  # windows in a row, not anomalous, that resolve it
    shift_after: int = 15  # anomalous windows in a row taken as a new level
    warmup_windows: int = 60  # windows of history before a campaign can alert
    min_expected: float = 0.5  # expected count per window below which none is judged
    half_life_windows: float = 60.0  # of the weighted level and variance
    dispersion_threshold: float = 1.2  # index of dispersion from which the NB is used
    season_after_windows: int = 7 * 24 * 60  # history before hour-of-week factors count
    ctr_min_impressions: int = 50  # impressions a window needs for a CTR judgement

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be between 0 and 1")
        if min(self.open_after, self.resolve_after) < 1 or self.shift_after < self.open_after:
            raise ValueError(
                "open_after and resolve_after must be at least 1, shift_after at least open_after"
            )
        if self.half_life_windows <= 0 or self.min_expected < 0 or self.warmup_windows < 1:
            raise ValueError("half_life_windows, min_expected and warmup_windows out of range")

    @property
    def weight(self) -> float:
        """The weight of a new window in the level: half of it is gone after a half-life."""
        return 1.0 - float(0.5 ** (1.0 / self.half_life_windows))

    @functools.cached_property
    def kept_variance(self) -> float:
        """The share of a count's variance left in the windows that are learnt from.

        The anomalous windows, a share ``alpha`` cut from both tails, are not
        learnt from, so the weighted variance reads low; and the lower it reads,
        the more windows look anomalous (at ``alpha`` = 0.05 on overdispersed
        traffic that ran away to nine times the nominal rate). Dividing by the
        share a normal distribution keeps when cut at the same tails undoes it:
        ``1 - 2 z phi(z) / (1 - alpha)``, 0.988 at the default ``alpha``.
        """
        z = NormalDist().inv_cdf(1.0 - self.alpha / 2)
        return 1.0 - 2.0 * z * NormalDist().pdf(z) / (1.0 - self.alpha)


class Incident(msgspec.Struct, kw_only=True):
    """An open (or just resolved) incident: what ``GET /alerts`` and ``dmp.alerts`` show."""

    alert_id: str
    campaign_id: str | None  # None: a worker's capacity alert
    metric: str
    direction: str
    status: str  # "open" | "resolved"
    opened_window: int  # start, epoch ms (its first anomalous window)
    resolved_window: int | None
    observed: float
    expected: float
    p_value: float | None  # None: a capacity alert, which is no test
    severity: str
    model: dict[str, float | int | str]
    worker: str | None = None  # capacity alerts: the worker's URL


class Side(msgspec.Struct, array_like=True):
    """One direction of one metric: its run of anomalous windows, its open incident."""

    run: int = 0  # anomalous windows in a row
    run_first: int = 0  # start of the first of them
    run_total: float = 0.0  # their deseasonalised counts, summed
    calm: int = 0  # windows in a row, not anomalous, while open
    incident: Incident | None = None
    # while open, the windows since its first and their deseasonalised counts (a new
    # level after ``shift_after`` of them); -1 once the level was taken
    spell: int = 0
    spell_total: float = 0.0


class Detector(msgspec.Struct, array_like=True):
    """The state of one metric of one campaign, kept in its table value."""

    windows: int = 0  # windows learnt from
    level: float = 0.0  # weighted mean count (deseasonalised); for CTR, clicks
    variance: float = 0.0  # weighted variance around it
    trials: float = 0.0  # CTR only: weighted impressions
    seen: int = 0  # windows seen, learnt from or not (for the season's start)
    # per hour of the week, the weighted mean count of its windows and how many there were
    # (the hour under way is held in ``hour_mean`` and ``hour_n`` until it ends, so that
    # these change once an hour: the alerts table keeps them under a key of their own)
    season: list[float] = msgspec.field(default_factory=list)
    season_n: list[int] = msgspec.field(default_factory=list)
    season_total: float = 0.0  # the sum of the means of every hour of the week
    spike: Side = msgspec.field(default_factory=Side)
    drop: Side = msgspec.field(default_factory=Side)
    hour: int = -1  # the hour of the week under way (-1: none)
    hour_mean: float = 0.0
    hour_n: int = 0

    def side(self, direction: str) -> Side:
        return self.spike if direction == "spike" else self.drop


@dataclass(frozen=True)
class Judgement:
    """What one window was found to be."""

    window: int
    observed: float
    expected: float | None  # None: not judged
    tails: Tails | None
    model: dict[str, float | int | str]
    direction: Direction | None = None  # anomalous that way


def hour_of_week(window: int) -> int:
    """0 for Monday 00:00-00:59 UTC (the epoch began on a Thursday: hour 72)."""
    return (window // 3_600_000 + 72) % HOURS_OF_WEEK


def alert_id(campaign_id: str, metric: str, direction: str, opened_window: int) -> str:
    """The same incident always gets the same id."""
    text = f"{campaign_id}\x1f{metric}\x1f{direction}\x1f{opened_window}"
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def severity(p_value: float, alpha: float) -> str:
    """``critical`` a thousand times past the threshold, else ``warning``."""
    return "critical" if p_value < alpha * 1e-3 else "warning"


def _dispersion(detector: Detector, settings: AlertSettings) -> float:
    """The campaign's index of dispersion: variance over mean (1 for a Poisson)."""
    if detector.level <= 0:
        return 1.0
    return detector.variance / settings.kept_variance / detector.level


def season_factor(detector: Detector, window: int) -> float:
    """The window's hour of the week against the mean hour: 1 when nothing is known."""
    if not detector.season or detector.season_total <= 0:
        return 1.0
    mean_hour = detector.season_total / HOURS_OF_WEEK
    bucket = hour_of_week(window)
    mean = detector.hour_mean if bucket == detector.hour else detector.season[bucket]
    return max(mean, 0.01 * mean_hour) / mean_hour


def _factor(detector: Detector, window: int, settings: AlertSettings) -> float:
    if detector.seen < settings.season_after_windows:
        return 1.0
    return season_factor(detector, window)


def judge_count(
    detector: Detector, campaign_id: str, metric: str, window: int, count: int,
    settings: AlertSettings,
) -> Judgement:  # fmt: skip
    """The count of one closed window against the campaign's own history."""
    if detector.windows < settings.warmup_windows:
        return Judgement(window, count, None, None, {"skipped": "warm-up"})
    factor = _factor(detector, window, settings)
    expected = detector.level * factor
    if expected < settings.min_expected:
        return Judgement(window, count, expected, None, {"skipped": "low volume"})
    u = uniform_of(campaign_id, metric, window)
    dispersion = _dispersion(detector, settings)
    model: dict[str, float | int | str]
    if dispersion >= settings.dispersion_threshold:
        tails = negative_binomial_tails(count, expected, dispersion, u)
        model = {"test": "negative_binomial", "dispersion": round(dispersion, 3)}
    else:
        tails = poisson_tails(count, expected, u)
        model = {"test": "poisson", "dispersion": round(dispersion, 3)}
    model |= {"mean": round(expected, 3), "seasonal_factor": round(factor, 3)}
    return _threshold(Judgement(window, count, expected, tails, model), detector, settings)


def judge_ctr(
    detector: Detector, campaign_id: str, window: int, clicks: int, impressions: int,
    settings: AlertSettings,
) -> Judgement:  # fmt: skip
    """A window's clicks given its impressions, against the baseline click-through rate."""
    clicks = min(clicks, impressions)
    observed = clicks / impressions if impressions else 0.0
    if detector.windows < settings.warmup_windows or detector.trials <= 0:
        return Judgement(window, observed, None, None, {"skipped": "warm-up"})
    if impressions < settings.ctr_min_impressions:
        return Judgement(window, observed, None, None, {"skipped": "few impressions"})
    rate = detector.level / detector.trials
    if not 0.0 < rate < 1.0:
        return Judgement(window, observed, rate, None, {"skipped": "degenerate baseline"})
    tails = binomial_tails(clicks, impressions, rate, uniform_of(campaign_id, CTR, window))
    model: dict[str, float | int | str] = {
        "test": "binomial",
        "impressions": impressions,
        "clicks": clicks,
        "baseline_ctr": round(rate, 6),
    }
    return _threshold(Judgement(window, observed, rate, tails, model), detector, settings)


def _threshold(judgement: Judgement, detector: Detector, settings: AlertSettings) -> Judgement:
    assert judgement.tails is not None
    side = settings.alpha / 2
    model = judgement.model | {"alpha": settings.alpha, "history_windows": detector.windows}
    direction: Direction | None = None
    if judgement.tails.above < side:
        direction = "spike"
    elif judgement.tails.below < side:
        direction = "drop"
    return dataclasses.replace(judgement, model=model, direction=direction)


@dataclass(frozen=True)
class Change:
    """An incident that opened or resolved at a window (a ``dmp.alerts`` record)."""

    incident: Incident


def step(
    detector: Detector, campaign_id: str, metric: str, judgement: Judgement,
    settings: AlertSettings,
) -> list[Change]:  # fmt: skip
    """Apply one judged window to the incidents of ``metric``; what opened or resolved."""
    changes: list[Change] = []
    anomaly = judgement.direction
    value = judgement.observed / _factor(detector, judgement.window, settings)
    for direction in DIRECTIONS:
        side = detector.side(direction)
        if side.incident is not None and side.spell >= 0:
            side.spell += 1
            side.spell_total += value
        if anomaly == direction:
            if side.run == 0:
                side.run_first, side.run_total = judgement.window, 0.0
            side.run += 1
            side.run_total += value
            side.calm = 0
            if side.incident is None and side.run >= settings.open_after:
                side.incident = _opened(campaign_id, metric, direction, side, judgement, settings)
                side.spell, side.spell_total = side.run, side.run_total
                changes.append(Change(msgspec.structs.replace(side.incident)))
            continue
        side.run, side.run_total = 0, 0.0
        if side.incident is not None:
            side.calm += 1
            if side.calm >= settings.resolve_after:
                resolved = msgspec.structs.replace(
                    side.incident, status="resolved", resolved_window=judgement.window
                )
                changes.append(Change(resolved))
                side.incident, side.calm, side.spell, side.spell_total = None, 0, 0, 0.0
    return changes


def _opened(
    campaign_id: str, metric: str, direction: Direction, side: Side, judgement: Judgement,
    settings: AlertSettings,
) -> Incident:  # fmt: skip
    assert judgement.tails is not None and judgement.expected is not None
    p_value = judgement.tails.two_sided
    model = judgement.model | {"windows_in_a_row": side.run}
    return Incident(
        alert_id=alert_id(campaign_id, metric, direction, side.run_first),
        campaign_id=campaign_id,
        metric=metric,
        direction=direction,
        status="open",
        opened_window=side.run_first,
        resolved_window=None,
        observed=float(judgement.observed),
        expected=round(judgement.expected, 6),
        p_value=p_value,
        severity=severity(p_value, settings.alpha),
        model=model,
    )


def learn_count(
    detector: Detector, judgement: Judgement, count: int, settings: AlertSettings
) -> None:
    """Fold a window's count into the level (see the module's rule 4)."""
    detector.seen += 1
    window = judgement.window
    factor = _factor(detector, window, settings)
    for side in (detector.spike, detector.drop):
        if side.incident is not None and side.spell >= settings.shift_after:
            # a lasting shift: the level is where the windows of the incident are, with
            # the dispersion the campaign had
            dispersion = _dispersion(detector, settings)
            detector.level = side.spell_total / side.spell
            detector.variance = detector.level * dispersion * settings.kept_variance
            side.spell, side.spell_total = -1, 0.0
            return
    if judgement.direction is not None:
        return
    value = count / factor
    weight = settings.weight if detector.windows >= settings.warmup_windows else 0.0
    weight = max(weight, 1.0 / (detector.windows + 1))
    delta = value - detector.level
    detector.level += weight * delta
    detector.variance = (1.0 - weight) * (detector.variance + weight * delta * delta)
    detector.windows += 1
    _learn_season(detector, window, count)


def _learn_season(detector: Detector, window: int, count: int) -> None:
    """The mean count of each hour of the week: the plain mean of its first windows, then
    weighted (a half-life of about two weeks of that hour). Learnt from the start, so
    that the factors are ready after a week."""
    if not detector.season:
        detector.season = [0.0] * HOURS_OF_WEEK
        detector.season_n = [0] * HOURS_OF_WEEK
    bucket = hour_of_week(window)
    if bucket != detector.hour:
        settle_hour(detector)
        detector.hour = bucket
        detector.hour_mean, detector.hour_n = detector.season[bucket], detector.season_n[bucket]
    detector.hour_n = min(detector.hour_n + 1, SEASON_PLAIN)
    change = max(SEASON_WEIGHT, 1.0 / detector.hour_n) * (count - detector.hour_mean)
    detector.hour_mean += change
    detector.season_total += change


def settle_hour(detector: Detector) -> None:
    """Write the hour under way into the hour-of-week means."""
    if detector.hour >= 0 and detector.season:
        detector.season[detector.hour] = detector.hour_mean
        detector.season_n[detector.hour] = detector.hour_n


def learn_ctr(detector: Detector, judgement: Judgement, clicks: int, impressions: int,
              settings: AlertSettings) -> None:  # fmt: skip
    """Fold a window's clicks and impressions into the baseline CTR."""
    detector.seen += 1
    for side in (detector.spike, detector.drop):
        if side.incident is not None and side.spell >= settings.shift_after and impressions:
            # a lasting shift in CTR: the baseline starts again from this window
            detector.level, detector.trials = float(min(clicks, impressions)), float(impressions)
            side.spell, side.spell_total = -1, 0.0
            return
    if judgement.direction is not None:
        return
    if impressions <= 0:
        return
    weight = settings.weight if detector.windows >= settings.warmup_windows else 0.0
    weight = max(weight, 1.0 / (detector.windows + 1))
    detector.level += weight * (min(clicks, impressions) - detector.level)
    detector.trials += weight * (impressions - detector.trials)
    detector.windows += 1


def campaign_step(
    detectors: dict[str, Detector], campaign_id: str, window: int, counts: dict[str, int],
    settings: AlertSettings,
) -> list[Change]:  # fmt: skip
    """One closed window of a campaign: every metric judged, stepped and learnt."""
    changes: list[Change] = []
    for metric in COUNT_METRICS:
        detector = detectors.setdefault(metric, Detector())
        count = counts.get(metric, 0)
        judgement = judge_count(detector, campaign_id, metric, window, count, settings)
        changes += step(detector, campaign_id, metric, judgement, settings)
        learn_count(detector, judgement, count, settings)
    detector = detectors.setdefault(CTR, Detector())
    clicks, impressions = counts.get("clicks", 0), counts.get("impressions", 0)
    judgement = judge_ctr(detector, campaign_id, window, clicks, impressions, settings)
    changes += step(detector, campaign_id, CTR, judgement, settings)
    learn_ctr(detector, judgement, clicks, impressions, settings)
    return changes


def nominal_incident_rate(settings: AlertSettings) -> float:
    """False incidents a window opens, per metric and direction, when the model holds:
    a window not anomalous followed by ``open_after`` that are, each with chance
    ``alpha / 2`` exactly (the randomised tests)."""
    q = settings.alpha / 2
    return (1.0 - q) * q**settings.open_after


def per_week(rate_per_window: float) -> float:
    return rate_per_window * 7 * 24 * 60


@dataclass
class Simulation:
    """What the detector made of a series of windows of one metric (:func:`simulate`)."""

    judged: int = 0
    anomalous: int = 0
    opened: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (index, direction)
    resolved: list[int] = dataclasses.field(default_factory=list)
    changes: list[Change] = dataclasses.field(default_factory=list)
    detector: Detector = dataclasses.field(default_factory=Detector)


def simulate(
    counts: Iterable[int], settings: AlertSettings, campaign_id: str = "c", start: int = 0,
    simulation: Simulation | None = None,
) -> Simulation:  # fmt: skip
    """Hand ``counts`` to a detector of impressions as consecutive windows from ``start``
    (or go on with ``simulation``): how docs/ANALYSIS.md's rates are measured."""
    out, metric = simulation or Simulation(), "impressions"
    index = out.detector.seen
    for count in counts:
        window = start + index * WINDOW_MS
        judgement = judge_count(out.detector, campaign_id, metric, window, int(count), settings)
        out.judged += judgement.tails is not None
        out.anomalous += judgement.direction is not None
        for change in step(out.detector, campaign_id, metric, judgement, settings):
            out.changes.append(change)
            if change.incident.status == "open":
                out.opened.append((index, change.incident.direction))
            else:
                out.resolved.append(index)
        learn_count(out.detector, judgement, int(count), settings)
        index += 1
    return out


# --- a partition's campaigns, judged as its stream time moves on ----------------------

KEEP_MS: Final = 7 * 24 * 60 * WINDOW_MS  # incidents, and silent campaigns' state, kept


class CampaignState(msgspec.Struct, array_like=True):
    """One campaign's detectors, as kept in the alerts table."""

    active: int  # start of the last window it had events in (or was first seen in)
    detectors: dict[str, Detector] = msgspec.field(default_factory=dict)
    since: int = 0  # the window it was first seen in: none before is judged

    def hours(self) -> dict[str, int]:
        """The hour under way of each detector: when one changes, so do the means."""
        return {metric: detector.hour for metric, detector in self.detectors.items()}

    def open_incidents(self) -> list[Incident]:
        return [
            side.incident
            for detector in self.detectors.values()
            for side in (detector.spike, detector.drop)
            if side.incident is not None
        ]


class PartitionState(msgspec.Struct, array_like=True):
    """Where the judging of one partition's campaigns stands."""

    cursor: int | None = None  # start of the next window to judge
    campaigns: int = 0  # campaigns with state
    open: dict[str, int] = msgspec.field(default_factory=dict)  # open incidents per metric


def windows_due(cursor: int | None, stream_time: int, settle_ms: int, horizon_ms: int) -> range:
    """Starts of the windows to judge at ``stream_time``: from ``cursor``, each window
    that ended ``settle_ms`` or more ago. Windows gone from the tables (older than
    ``horizon_ms``, the retention) are passed over: their counts are lost."""
    if cursor is None:
        return range(0)
    oldest = stream_time - horizon_ms  # a window that ends by then is gone
    first = max(cursor, oldest - oldest % WINDOW_MS)
    last = stream_time - settle_ms - WINDOW_MS
    return range(first, last + 1, WINDOW_MS) if last >= first else range(0)


Counts = Callable[[str, int], dict[str, int]]


def judge_window(
    states: dict[str, CampaignState], window: int, counts: Counts, settings: AlertSettings,
    keep_ms: int = KEEP_MS,
) -> tuple[list[Change], list[str]]:  # fmt: skip
    """Every campaign of a partition at one closed window (``counts(campaign, window)``):
    the incidents that opened or resolved, in campaign order, and the campaigns silent
    for ``keep_ms`` with nothing open, whose state can go."""
    changes: list[Change] = []
    retired: list[str] = []
    for campaign_id in sorted(states):
        state = states[campaign_id]
        if window < state.since:
            continue
        observed = counts(campaign_id, window)
        if any(observed.values()):
            state.active = max(state.active, window)
        changes += campaign_step(state.detectors, campaign_id, window, observed, settings)
        if window - state.active >= keep_ms and not state.open_incidents():
            retired.append(campaign_id)
    return changes, retired


def count_open(partition: PartitionState, changes: Iterable[Change]) -> None:
    """Keep the partition's count of open incidents per metric."""
    for change in changes:
        metric = change.incident.metric
        step_by = 1 if change.incident.status == "open" else -1
        partition.open[metric] = max(0, partition.open.get(metric, 0) + step_by)


Seasons = dict[str, tuple[list[float], list[int]]]  # per metric, the hour-of-week means
_CAMPAIGN_DECODER = msgspec.msgpack.Decoder(CampaignState)
_SEASONS_DECODER = msgspec.msgpack.Decoder(Seasons)
_PARTITION_DECODER = msgspec.msgpack.Decoder(PartitionState)
_INCIDENT_DECODER = msgspec.msgpack.Decoder(Incident)
_ENCODER = msgspec.msgpack.Encoder()


def encode(value: PartitionState | Incident) -> bytes:
    return _ENCODER.encode(value)


def encode_campaign(state: CampaignState) -> tuple[bytes, bytes]:
    """(the state without the hour-of-week means, the means): the first changes every
    window, the second once an hour (a few hundred bytes against some 5 KB)."""
    seasons = {m: (d.season, d.season_n) for m, d in state.detectors.items() if d.season}
    bare = {
        metric: msgspec.structs.replace(detector, season=[], season_n=[])
        for metric, detector in state.detectors.items()
    }
    return _ENCODER.encode(msgspec.structs.replace(state, detectors=bare)), _ENCODER.encode(seasons)


def decode_campaign(raw: bytes, raw_seasons: bytes | None) -> CampaignState:
    state = _CAMPAIGN_DECODER.decode(raw)
    if raw_seasons is not None:
        for metric, (season, season_n) in _SEASONS_DECODER.decode(raw_seasons).items():
            if metric in state.detectors:
                state.detectors[metric].season = season
                state.detectors[metric].season_n = season_n
    return state


def decode_partition(raw: bytes | None) -> PartitionState:
    return PartitionState() if raw is None else _PARTITION_DECODER.decode(raw)


def decode_incident(raw: bytes) -> Incident:
    return _INCIDENT_DECODER.decode(raw)


# Keys in the campaign windows table, beside the windows of each partition. A window's
# key is UTF-8 text, which never holds the byte 0xff: these cannot be taken for one.
ALERT_PREFIX: Final = b"\xff"
PARTITION_KEY: Final = ALERT_PREFIX + b"p"
CAMPAIGN_PREFIX: Final = ALERT_PREFIX + b"c:"
SEASONS_PREFIX: Final = ALERT_PREFIX + b"s:"
INCIDENT_PREFIX: Final = ALERT_PREFIX + b"i:"


def campaign_key(campaign_id: str) -> bytes:
    return CAMPAIGN_PREFIX + campaign_id.encode()


def seasons_key(campaign_id: str) -> bytes:
    return SEASONS_PREFIX + campaign_id.encode()


def incident_key(incident: Incident) -> bytes:
    """Ordered by the window it opened in (16 digits: any time after 1970 sorts)."""
    return INCIDENT_PREFIX + f"{incident.opened_window:016d}:{incident.alert_id}".encode()


def incident_window(key: bytes) -> int:
    return int(key[len(INCIDENT_PREFIX) : len(INCIDENT_PREFIX) + 16])


def overlaps(incident: Incident, from_ms: int, to_ms: int) -> bool:
    """Was ``incident`` open at some time in ``[from_ms, to_ms)``?"""
    end = incident.resolved_window + WINDOW_MS if incident.resolved_window is not None else None
    return incident.opened_window < to_ms and (end is None or end > from_ms)


# --- a worker's capacity ---------------------------------------------------------------


@dataclass
class CapacityWatch:
    """A worker's utilisation, sampled now and then (wall clock, epoch ms): an incident
    (``metric: "capacity"``) opens once rho stayed above ``threshold`` for ``for_ms``
    and resolves once it stayed at or below it as long. No test, so no p-value: the
    model says what was measured."""

    worker: str
    threshold: float = 0.8
    for_ms: int = 60_000
    incident: Incident | None = None
    _since: int | None = None  # since when rho is on the other side of the threshold

    def sample(self, now_ms: int, rho: float | None, figures: dict[str, float | None]) -> (
        Change | None
    ):  # fmt: skip
        if rho is None:
            return None
        crossed = rho > self.threshold if self.incident is None else rho <= self.threshold
        if not crossed:
            self._since = None
            return None
        if self._since is None:
            self._since = now_ms
        if now_ms - self._since < self.for_ms:
            return None
        window = self._since - self._since % WINDOW_MS
        self._since = None
        if self.incident is None:
            model: dict[str, float | int | str] = {
                "test": "mm1_utilisation",
                "threshold": self.threshold,
                "for_s": self.for_ms / 1000,
            }
            model |= {name: round(v, 6) for name, v in figures.items() if v is not None}
            self.incident = Incident(
                alert_id=alert_id(self.worker, "capacity", "spike", window),
                campaign_id=None,
                metric="capacity",
                direction="spike",
                status="open",
                opened_window=window,
                resolved_window=None,
                observed=round(rho, 6),
                expected=self.threshold,
                p_value=None,
                severity="critical" if rho >= 1.0 else "warning",
                model=model,
                worker=self.worker,
            )
            return Change(msgspec.structs.replace(self.incident))
        resolved = msgspec.structs.replace(self.incident, status="resolved", resolved_window=window)
        self.incident = None
        return Change(resolved)
