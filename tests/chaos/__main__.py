"""``python -m tests.chaos``: run the chaos suite in one or both modes; exit 1 when a
mode where exactness is promised lost, double-counted or mismatched anything."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.chaos.harness import ChaosConfig
from tests.chaos.report import ModeResult, describe, run_mode
from tests.integration.support import PROJECT

MODES = ("at_least_once", "exactly_once")


def configs() -> list[ChaosConfig]:
    chosen = os.environ.get("CHAOS_GUARANTEE", "both").strip() or "both"
    modes = MODES if chosen == "both" else (chosen,)
    if any(m not in MODES for m in modes):
        raise SystemExit(f"CHAOS_GUARANTEE must be one of {', '.join(MODES)} or both")
    events = int(os.environ.get("CHAOS_EVENTS", "200000"))
    kills = int(os.environ.get("CHAOS_KILLS", "5"))
    seed = int(os.environ.get("CHAOS_SEED", "20210301"))
    phases = os.environ.get("CHAOS_PHASES", "abcp")
    erasures = erasures_on()
    return [
        ChaosConfig(
            events=events, kills=kills, seed=seed, guarantee=m, phases=phases, erasures=erasures
        )
        for m in modes
    ]


def erasures_on() -> bool:
    """``CHAOS_ERASURES`` (1): 0 runs the load without erasures (a build without
    ``GET /erasures``, or to tell a discrepancy's cause)."""
    value = os.environ.get("CHAOS_ERASURES", "1").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", ""):
        raise SystemExit("CHAOS_ERASURES must be 0 or 1")
    return value in ("1", "true", "yes", "")


def write_results(path: Path, results: list[ModeResult], final: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = [
        "# Chaos results",
        "",
        f"Written by `make chaos` (`python -m tests.chaos`) on {stamp}; "
        "what the checks mean: [RELIABILITY.md](RELIABILITY.md).",
        "",
    ]
    for result in results:
        body += [describe(result), "", f"`{result.line()}`", ""]
    body += [f"`{final}`", ""]
    path.write_text("\n".join(body))


def main() -> int:
    results: list[ModeResult] = []
    for config in configs():
        result = run_mode(config)
        results.append(result)
        print(describe(result), flush=True)
        print(result.line(), flush=True)
    lost = sum(r.totals()[0] for r in results)
    double = sum(r.totals()[1] for r in results)
    mismatched = sum(r.totals()[2] for r in results)
    kills = sum(len(r.run.kills) for r in results)
    events = sum(r.run.produced for r in results)
    final = (
        f"chaos: {kills} kills, {events} events, lost {lost}, double-counted {double}, "
        f"mismatched {mismatched}"
    )
    target = os.environ.get("CHAOS_RESULTS", str(PROJECT / "docs" / "chaos-results.md"))
    if target:
        write_results(Path(target), results, final)
    print(final, flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
