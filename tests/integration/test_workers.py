"""Two workers in one group: partitions split between them, lookups routed to the owner."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import PROJECT, Worker, call, produce, wait_until

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


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


def partition(key: str) -> int:
    """Kafka's default partitioner, computed here independently of the project."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % 8


def on(partitions: set[int], tag: str) -> str:
    """An id of the form ``tag-N`` that falls on one of ``partitions``."""
    return next(f"{tag}-{n}" for n in range(1000) if partition(f"{tag}-{n}") in partitions)


def two_workers(make_worker: WorkerFactory) -> tuple[Worker, Worker, set[int], set[int]]:
    first = make_worker(DMP_API_TOKEN=TOKEN).start()
    second = make_worker(prefix=first.prefix, DMP_API_TOKEN=TOKEN).start()
    wait_until(
        lambda: (
            active(first) and active(second) and active(first) | active(second) == set(range(8))
        ),
        90,
        "the two workers to split the partitions",
    )
    return first, second, active(first), active(second)


def identify(worker: Worker, anonymous: str, user: str, ts: int) -> None:
    link = event("identify", ts, anonymous, user_id=user)
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(link))])


def profile_from(worker: Worker, profile_id: str) -> tuple[int, Any]:
    return call("GET", f"{worker.url}/profiles/{profile_id}", headers=AUTH)


def test_an_identity_cycle_across_workers_is_one_profile(make_worker: WorkerFactory) -> None:
    """The issue's cyc-X / cyc-Y: identify X -> Y, then Y -> X, the two ids owned by
    different workers. One profile, under the smaller id, counting 2 events, found from
    either id on either worker (not two profiles pointing at each other)."""
    first, second, mine, theirs = two_workers(make_worker)
    tag = uuid.uuid4().hex[:6]
    x, y = on(mine, f"cyc-{tag}-a"), on(theirs, f"cyc-{tag}-b")
    identify(first, x, y, T0)
    wait_until(lambda: profile_from(first, y)[0] == 200, 60, "the first link")
    identify(first, y, x, T0 + 1_000)
    canonical = min(x, y)

    def settled(worker: Worker, person: str) -> Any:
        status, body = profile_from(worker, person)
        ok = status == 200 and body["profile_id"] == canonical
        return body if ok and body["counts"] == {"identify": 2} else None

    for worker in (first, second):
        for person in (x, y):
            body = wait_until(lambda w=worker, p=person: settled(w, p), 60, f"{person} settled")
            assert sorted(body["ids"]) == sorted([x, y])


def test_a_chain_of_links_across_workers_is_answered(make_worker: WorkerFactory) -> None:
    """a -> b, then b -> c (b, a user, reused as an anonymous id), with a and c on one
    worker and b on the other: a lookup of any of them, on either worker, answers c's
    profile, which counts every event once (each worker resolves the links itself)."""
    first, second, mine, theirs = two_workers(make_worker)
    tag = uuid.uuid4().hex[:6]
    a, b, c = on(mine, f"ch-{tag}-a"), on(theirs, f"ch-{tag}-b"), on(mine, f"ch-{tag}-c")
    views = [event("page_view", T0 + i, a, url="/news/x") for i in range(3)]
    produce(first.bootstrap, f"{first.prefix}.events.raw", [(None, encode(e)) for e in views])
    identify(first, a, b, T0 + 10)
    wait_until(lambda: profile_from(first, b)[0] == 200, 60, "the first link")
    identify(first, b, c, T0 + 20)

    def settled(worker: Worker, person: str) -> Any:
        status, body = profile_from(worker, person)
        return body if status == 200 and body["profile_id"] == c else None

    for worker in (first, second):
        for person in (a, b, c):
            body = wait_until(lambda w=worker, p=person: settled(w, p), 60, f"{person} via c")
            assert body["counts"] == {"page_view": 3, "identify": 2}
            assert sorted(body["ids"]) == sorted([a, b, c])
    frequency = call("GET", f"{second.url}/frequency/{a}/cmp-none", headers=AUTH)
    assert frequency == (200, {"impressions_24h": 0})


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
