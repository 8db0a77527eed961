"""Run one mode end to end, compare, and print the per-check table and the chaos line."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.compare import (
    Check,
    ErasureFigures,
    check_accounting,
    check_campaigns,
    check_erasures,
    check_history,
    check_profile_gauge,
    check_profiles,
    check_segments,
    check_takeover_probes,
    counter_drift,
)
from tests.chaos.harness import (
    HISTORY_PATIENCE_S,
    PARTITIONS,
    Chaos,
    ChaosConfig,
    Run,
    cleanup,
    say,
)
from tests.chaos.load import build_load
from tests.chaos.model import expect
from tests.chaos.observe import topic_accounting


@dataclass
class ModeResult:
    config: ChaosConfig
    run: Run
    checks: list[Check]
    drift: list[dict[str, Any]]
    seconds: float
    compare_seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def promised(self) -> list[Check]:
        return [c for c in self.checks if c.promised]

    def totals(self, promised_only: bool = True) -> tuple[int, int, int]:
        checks = self.promised if promised_only else self.checks
        return (
            sum(c.lost for c in checks),
            sum(c.double for c in checks),
            sum(c.mismatched for c in checks),
        )

    @property
    def ok(self) -> bool:
        takeover = self.run.takeover.get("serve_all_s")
        in_time = "b" not in self.config.phases or (
            takeover is not None and takeover <= self.config.takeover_limit_s
        )
        rejoined = "p" not in self.config.phases or bool(self.run.pause.get("rejoined"))
        drained = self.run.drain.get("seconds") is not None
        return self.totals() == (0, 0, 0) and in_time and rejoined and drained

    def line(self) -> str:
        lost, double, mismatched = self.totals()
        return (
            f"chaos[{self.config.guarantee}]: {len(self.run.kills)} kills, "
            f"{self.run.produced} events, lost {lost}, double-counted {double}, "
            f"mismatched {mismatched}"
        )


def run_mode(config: ChaosConfig, root: Path | None = None) -> ModeResult:
    load = build_load(config.events, config.seed)
    expected = expect(load)
    workdir = Path(root or tempfile.mkdtemp(prefix=f"chaos-{config.guarantee}-"))
    chaos = Chaos(config, load, expected, workdir)
    say(f"{config.guarantee}: {config.events} events, seed {config.seed}, dir {workdir}")
    try:
        run = chaos.execute_and_compare()
    finally:
        if root is None and not chaos.keep:
            cleanup(workdir)
    return run


def compare_all(chaos: Chaos) -> tuple[list[Check], list[dict[str, Any]]]:
    expected, base = chaos.expected, chaos.live[0].url
    committed = chaos.config.guarantee == "exactly_once"
    topics = topic_accounting(chaos.broker.bootstrap, chaos.run.prefix, PARTITIONS, committed)
    checks = [
        check_campaigns(expected, base, chaos.span()),
        check_profiles(expected, base),
        check_segments(expected, base),
        check_profile_gauge(expected, chaos.scraper, chaos.live),
        check_accounting(expected, topics),
    ]
    if "b" in chaos.config.phases or "p" in chaos.config.phases:
        checks.append(check_takeover_probes(chaos.run.probes, chaos.run.false_probes))
    if chaos.config.erasures:
        outcomes = chaos.run.eraser.outcomes if chaos.run.eraser else []
        checks.append(check_erasures(expected, chaos.run.planned, outcomes, base))
    checks.append(check_history(expected, chaos.history, HISTORY_PATIENCE_S))
    return checks, counter_drift(expected, chaos.scraper)


def table(result: ModeResult) -> str:
    lines = [
        f"| check ({result.config.guarantee}) | keys | lost | double-counted | mismatched "
        "| exact promised | result |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for c in result.checks:
        verdict = "ok" if c.ok else ("FAIL" if c.promised else "drift")
        note = f" ({c.note})" if c.note else ""
        lines.append(
            f"| {c.name} | {c.keys} | {c.lost} | {c.double} | {c.mismatched} | "
            f"{'yes' if c.promised else 'no'} | {verdict}{note} |"
        )
    return "\n".join(lines)


def drift_table(result: ModeResult) -> str:
    lines = [
        "| counter (sum of each process's last scrape) | expected | summed | drift |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| dmp_events_{r['counter']}_total | {r['expected']} | {r['summed']} | {r['drift']:+d} |"
        for r in result.drift
    ]
    return "\n".join(lines)


def erasure_table(result: ModeResult) -> str:
    """The erasure rows: what was sent, what the cluster confirmed, what was checked."""
    check = next((c for c in result.checks if c.name == "erasures"), None)
    if check is None:
        return "Erasures: none in this run (`CHAOS_ERASURES=0`)."
    f: ErasureFigures = check.figures
    moments = Counter(p.moment for p in result.run.planned)
    rows = [
        (
            "erasures planned",
            f"{f.planned} ({', '.join(f'{k} {n}' for k, n in sorted(moments.items()))})",
        ),
        ("erasures sent (DELETE answered)", f.sent),
        ("accepted (202 with an erasure_id)", f.accepted),
        (f"erased confirmed (GET /erasures, {result.run.confirm_s} s)", f.confirmed),
        ("ids checked absent (GET /profiles/{id} 404)", f"{f.ids_absent} of {f.ids_checked}"),
        ("frequency checked 0", f"{f.frequency_zero} of {f.frequency_checked}"),
        ("mismatches", check.mismatched),
    ]
    lines = [f"| erasures ({result.config.guarantee}) | |", "|---|---:|"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])


def describe(result: ModeResult) -> str:
    run = result.run
    out = [
        f"### {result.config.guarantee}: {run.produced} events, seed {result.config.seed}, "
        f"wall {result.seconds:.0f} s",
        "",
        table(result),
        "",
        drift_table(result),
        "",
        erasure_table(result),
        "",
        "Kills:",
    ]
    out += [f"- {k}" for k in run.kills]
    out += [
        f"- takeover: {run.takeover}",
        f"- pause: {run.pause}",
        f"- broker restart: {run.broker_restart}",
        f"- drain: {run.drain}",
    ]
    if run.findings:
        out += ["", "Findings:"] + [f"- {f}" for f in run.findings]
    examples = [f"- {c.name}: {e}" for c in result.checks for e in c.examples]
    if examples:
        out += ["", "Examples of discrepancies:", *examples]
    return "\n".join(out)
