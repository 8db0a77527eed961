"""Two workers in one group: partitions split between them, lookups routed to the owner."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import PROJECT, Worker, call, produce, wait_until

pytestmark = pytest.mark.integration


def active(worker: Worker) -> set[int]:
    status, body = call("GET", worker.url + "/health")
    return set(body.get("active_partitions", [])) if status == 200 else set()


def test_lookups_are_answered_by_any_worker(make_worker: WorkerFactory) -> None:
    first = make_worker().start()
    second = make_worker(prefix=first.prefix).start()
    wait_until(
        lambda: (
            active(first)
            and active(second)
            and active(first) | active(second) == set(range(8))
            and not active(first) & active(second)
        ),
        90,
        "the two workers to split the partitions",
    )
    campaigns = [f"cmp-{uuid.uuid4().hex[:6]}" for _ in range(8)]
    events = [
        event("impression", T0 + i * 1_000, f"w-user-{i}", campaign)
        for n, campaign in enumerate(campaigns)
        for i in range(n + 1)
    ]
    produce(first.bootstrap, f"{first.prefix}.events.raw", [(None, encode(e)) for e in events])
    query = f"?from={T0}&to={T0 + MINUTE}"

    def totals(worker: Worker, campaign: str) -> Any:
        status, body = call("GET", f"{worker.url}/campaigns/{campaign}/stats{query}")
        assert status == 200, body
        return body["totals"]

    for n, campaign in enumerate(campaigns):
        body = wait_until(
            lambda c=campaign, n=n: (t := totals(first, c))["impressions"] == n + 1 and t,
            60,
            f"{campaign} to be counted",
        )
        assert totals(second, campaign) == body
        assert body["unique_users"] == n + 1
    profile = f"w-user-{0}"
    assert call("GET", f"{first.url}/profiles/{profile}") == call(
        "GET", f"{second.url}/profiles/{profile}"
    )


def test_a_bad_segment_file_stops_the_worker_naming_the_rule(tmp_path: Path) -> None:
    rules = tmp_path / "segments.toml"
    rules.write_text('[segments.big_spenders]\nrule = "revenue >= 100"\n')
    env = {**os.environ, "DMP_SEGMENTS_FILE": str(rules), "DMP_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "dmp_faust.cli", "worker"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "big_spenders" in done.stderr and "revenue" in done.stderr
