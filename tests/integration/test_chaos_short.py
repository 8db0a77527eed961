"""A shortened ``make chaos`` inside ``make test``: the same harness, small numbers.

2 kills -9 with restarts, a worker lost for good (the survivor must serve every
key within 30 s, never a 404 for a key that was there), a worker paused with
SIGSTOP for twice the session timeout mid-take and resumed, a broker restart
mid-load, and 3 linked users erased (in flight, near a kill, near the pause);
then every campaign window, profile, segment size, the topic accounting and
the erasures (no profile, frequency 0, confirmed ``erased``) compared with the
independent expectation. ``CHAOS_ERASURES=0`` leaves the erasures out. The
harness starts a broker of its own (it stops and restarts it), so this test does
not use the session's broker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.__main__ import erasures_on
from tests.chaos.harness import ChaosConfig
from tests.chaos.report import describe, run_mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

EVENTS = int(os.environ.get("CHAOS_SHORT_EVENTS", "6000"))


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_short_chaos_run_loses_and_double_counts_nothing(guarantee: str, tmp_path: Path) -> None:
    config = ChaosConfig(
        events=EVENTS, kills=2, seed=7, guarantee=guarantee, chunks=12, erasures=erasures_on()
    )
    result = run_mode(config, tmp_path)
    print(describe(result))
    print(result.line())
    assert result.run.drain.get("seconds") is not None, result.run.drain
    assert result.run.takeover.get("serve_all_s") is not None, result.run.findings
    assert result.run.takeover["serve_all_s"] <= config.takeover_limit_s, result.run.takeover
    assert result.run.pause.get("rejoined"), result.run.pause
    assert result.totals() == (0, 0, 0), describe(result)
