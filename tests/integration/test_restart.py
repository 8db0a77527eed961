"""A worker killed with SIGKILL, or replaced by one with an empty disk, serves the same numbers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, metrics, produce, wait_until

pytestmark = pytest.mark.integration


def campaign_stats(worker: Worker, campaign: str) -> dict[str, Any]:
    status, body = call(
        "GET", f"{worker.url}/campaigns/{campaign}/stats?from={T0}&to={T0 + 10 * MINUTE}"
    )
    assert status == 200, body
    return body


def duplicates(worker: Worker) -> float:
    return metrics(worker.url)["dmp_events_duplicate_total"]


def test_restarted_and_recovered_workers_serve_the_same_numbers(
    make_worker: WorkerFactory, tmp_path: Any
) -> None:
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    users = [f"r{i}" for i in range(40)]
    events = [event("impression", T0 + i * 7_000, user, campaign) for i, user in enumerate(users)]
    events += [event("click", T0 + 9 * MINUTE, user, campaign) for user in users[:10]]
    events += [
        event("conversion", T0 + 9 * MINUTE + 1, user, campaign, revenue=3.0) for user in users[:4]
    ]
    worker = make_worker().start()
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(e)) for e in events])

    def settled() -> dict[str, Any] | None:
        body = campaign_stats(worker, campaign)
        t = body["totals"]
        return body if (t["impressions"], t["clicks"], t["conversions"]) == (40, 10, 4) else None

    before = wait_until(settled, 60, "the first worker to count every event")
    assert before["totals"]["unique_users"] == 40

    # kill -9 and restart on the same disk: local RocksDB plus the changelog tail.
    worker.kill()
    worker.start()
    assert campaign_stats(worker, campaign) == before
    replayed = events[:5]
    body = json.dumps({"batch": replayed}).encode()
    assert call("POST", worker.url + "/collect", body)[0] == 202
    wait_until(lambda: duplicates(worker) >= len(replayed), 60, "the replayed copies to be dropped")
    assert campaign_stats(worker, campaign) == before

    # A new worker with an empty data directory rebuilds every table from the changelogs.
    worker.stop()
    fresh = make_worker(prefix=worker.prefix, data_dir=tmp_path / "empty-disk").start()
    assert campaign_stats(fresh, campaign) == before
    produce(fresh.bootstrap, f"{fresh.prefix}.events.raw", [(None, encode(e)) for e in replayed])
    wait_until(
        lambda: duplicates(fresh) >= len(replayed), 60, "copies to be dropped after recovery"
    )
    assert campaign_stats(fresh, campaign) == before
