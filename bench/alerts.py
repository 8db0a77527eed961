"""The alert detector's false-alarm and detection rates on simulated traffic.

``python -m bench.alerts`` (``ALERTS_WINDOWS``, default 40,000 windows per row;
``ALERTS_TRIALS``, default 1,000 injections per row) prints the tables of
docs/ANALYSIS.md. Every draw is seeded: the same command prints the same
figures. Pure Poisson and negative binomial (variance 3x the mean) traffic,
handed to the detector of :mod:`dmp_faust.domain.alerts` as closed 1-minute
windows, with the default settings and, to count the persistence chain at a
rate one can measure, at ``alpha`` = 0.05.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from dmp_faust.domain.alerts import (
    WINDOW_MS,
    AlertSettings,
    nominal_incident_rate,
    per_week,
    simulate,
)

T0 = 1_614_556_800_000  # 2021-03-01, a Monday
Draw = Callable[[np.random.Generator, float, int], np.ndarray]


def poisson(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    return rng.poisson(rate, n)


def overdispersed(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    size = rate / 2.0  # variance = rate + rate^2 / size = 3 x rate
    return rng.negative_binomial(size, size / (size + rate), n)


TRAFFIC: list[tuple[str, Draw, float]] = [
    *[("Poisson", poisson, rate) for rate in (1, 10, 100, 1000)],
    *[("NB, variance 3x", overdispersed, rate) for rate in (10, 20, 100)],
]


def false_alarms(windows: int) -> list[str]:
    defaults, chain = AlertSettings(), AlertSettings(alpha=0.05)
    rows = [
        "| traffic | events a minute | windows judged | anomalous windows / alpha "
        "| false incidents (defaults) | nominal | per campaign-week | "
        "incidents at alpha 0.05 | nominal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, (name, draw, rate) in enumerate(TRAFFIC):
        counts = draw(np.random.default_rng(seed), rate, windows)
        found = simulate(counts, defaults, f"fa-{seed}", T0)
        nominal = 2 * nominal_incident_rate(defaults) * found.judged
        weekly = len(found.opened) / (windows / (7 * 24 * 60)) * 4  # four metrics a campaign
        at_chain = simulate(counts, chain, f"fa-{seed}", T0)
        chain_nominal = 2 * nominal_incident_rate(chain) * at_chain.judged
        share = found.anomalous / found.judged / defaults.alpha if found.judged else 0.0
        rows.append(
            f"| {name} | {rate:g} | {found.judged:,} | {share:.2f} | {len(found.opened)} "
            f"| {nominal:.3f} | {weekly:.2f} | {len(at_chain.opened)} | {chain_nominal:.1f} |"
        )
    weekly_nominal = 8 * per_week(nominal_incident_rate(defaults))
    rows.append("")
    rows.append(
        f"Nominal false incidents per campaign-week with the defaults (4 metrics, "
        f"2 directions): {weekly_nominal:.4f}."
    )
    return rows


def detection(trials: int) -> list[str]:
    """3x for five windows, or nothing for five, at 20 a minute after 200 calm windows."""
    settings = AlertSettings()
    rows = [
        "| traffic at 20 a minute | anomaly (5 windows) | found within 3 windows | "
        "windows to the incident (most, 2nd) | false incidents before it |",
        "|---|---|---:|---|---:|",
    ]
    seed = 1000
    for name, draw in (("Poisson", poisson), ("NB, variance 3x", overdispersed)):
        for kind, times in (("spike 3x", 3.0), ("drop to 0", 0.0)):
            seed += 1
            rng = np.random.default_rng(seed)
            found, lags, early = 0, [], 0
            direction = "spike" if kind.startswith("spike") else "drop"
            for trial in range(trials):
                injected = draw(rng, 20.0 * times, 5) if times else np.zeros(5, dtype=int)
                counts = np.concatenate([draw(rng, 20.0, 200), injected, draw(rng, 20.0, 30)])
                result = simulate(counts, settings, f"d-{name}-{kind}-{trial}", T0)
                hits = [i - 199 for i, d in result.opened if i >= 200 and d == direction]
                early += sum(i < 200 for i, _ in result.opened)
                if hits and hits[0] <= 3:
                    found += 1
                    lags.append(hits[0])
            common = sorted(set(lags), key=lags.count, reverse=True)[:2]
            rows.append(f"| {name} | {kind} | {found / trials:.1%} | {common} | {early} |")
    return rows


def level_shifts(trials: int) -> list[str]:
    settings = AlertSettings()
    bound = settings.open_after + settings.shift_after + settings.resolve_after
    rows = [
        f"| shift at 20 a minute | runs | with an incident | longest incident (windows; "
        f"bound {bound}) | still open after 600 windows | incidents after 200 windows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for factor in (2.0, 0.5, 10.0, 0.0):
        rng = np.random.default_rng(int(factor * 10) + 99)
        with_incident = longest = still_open = late = 0
        for trial in range(trials):
            counts = np.concatenate([rng.poisson(20, 300), rng.poisson(20 * factor, 600)])
            result = simulate(counts, settings, f"s-{factor}-{trial}", T0)
            with_incident += bool(result.opened)
            still_open += len(result.opened) > len(result.resolved)
            late += sum(i >= 500 for i, _ in result.opened)
            for change in result.changes:
                incident = change.incident
                if incident.resolved_window is not None:
                    span = (incident.resolved_window - incident.opened_window) // WINDOW_MS
                    longest = max(longest, span)
        rows.append(
            f"| x{factor:g} | {trials} | {with_incident} | {longest} | {still_open} | {late} |"
        )
    return rows


def main() -> None:
    windows = int(os.environ.get("ALERTS_WINDOWS", "40000"))
    trials = int(os.environ.get("ALERTS_TRIALS", "1000"))
    print(f"### False alarms ({windows:,} windows a row)\n")
    print("\n".join(false_alarms(windows)))
    print(f"\n### Detection ({trials:,} injections a row)\n")
    print("\n".join(detection(trials)))
    print(f"\n### Lasting level shifts ({trials // 10:,} runs a row)\n")
    print("\n".join(level_shifts(max(1, trials // 10))))


if __name__ == "__main__":
    main()
