"""GET /dashboard/summary on two workers: the whole cluster from either, equal to the
JSON views; and the dashboard's files: a fixed list, behind a Content-Security-Policy."""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

import pytest

from tests.integration.conftest import WorkerFactory
from tests.integration.events import T0, encode, event
from tests.integration.support import Worker, call, metrics, produce, wait_until

pytestmark = pytest.mark.integration


def active(worker: Worker) -> set[int]:
    status, body = call("GET", worker.url + "/health")
    return set(body.get("active_partitions", [])) if status == 200 else set()


def summary(worker: Worker) -> dict[str, Any]:
    status, body = call("GET", worker.url + "/dashboard/summary")
    assert status == 200, body
    return body


def test_either_worker_shows_the_whole_cluster(make_worker: WorkerFactory) -> None:
    first = make_worker().start()
    second = make_worker(prefix=first.prefix).start()
    wait_until(
        lambda: (
            active(first) | active(second) == set(range(8)) and not active(first) & active(second)
        ),
        90,
        "the two workers to split the partitions",
    )
    campaigns = [f"cmp-{uuid.uuid4().hex[:6]}" for _ in range(6)]
    events = [
        event(kind, T0 + 30_000 + i * 100, f"d-user-{i % 7}", campaign)
        for n, campaign in enumerate(campaigns)
        for i, kind in enumerate(["impression"] * (n + 3) + ["click"] * n)
    ]
    bad = [b'{"type": "impression"}', b"not json"]
    produce(
        first.bootstrap,
        f"{first.prefix}.events.raw",
        [(None, encode(e)) for e in events] + [(None, raw) for raw in bad],
    )

    def counted() -> bool:
        shown = {c["campaign_id"]: c for c in summary(second)["campaigns"]}
        return all(
            c in shown and shown[c]["totals"]["impressions"] == n + 3
            for n, c in enumerate(campaigns)
        )

    wait_until(counted, 60, "every campaign in the summary")
    wait_until(
        lambda: summary(first)["accounting"]["received"] == len(events) + len(bad),
        30,
        "the accounting to count every event",
    )
    views = [summary(first), summary(second)]
    for view in views:
        assert {w["url"] for w in view["workers"]} == {first.url, second.url}
        assert all(w["status"] == "ok" for w in view["workers"])
        shown = {c["campaign_id"]: c for c in view["campaigns"]}
        for n, campaign in enumerate(campaigns):
            card = shown[campaign]
            query = f"?from={card['from']}&to={card['to']}"
            status, stats = call("GET", f"{first.url}/campaigns/{campaign}/stats{query}")
            assert status == 200, stats
            assert card["totals"] == stats["totals"]
            assert (card["totals"]["impressions"], card["totals"]["clicks"]) == (n + 3, n)
            assert len(card["minutes"]) == 60
            assert sum(m["impressions"] for m in card["minutes"]) == n + 3
        summed = [metrics(w.url) for w in (first, second)]

        def total(prefix: str, samples: list[dict[str, float]] = summed) -> int:
            return int(sum(v for s in samples for k, v in s.items() if k.split("{")[0] == prefix))

        accounting = view["accounting"]
        assert accounting["received"] == total("dmp_events_received_total")
        assert accounting["invalid"] == total("dmp_events_invalid_total") == len(bad)
        assert accounting["accepted"] == total("dmp_events_accepted_total") == len(events)
        assert (
            accounting["received"]
            == (accounting["invalid"] + accounting["duplicate"] + accounting["bot"])
            + accounting["accepted"]
        )
        status, segments = call("GET", f"{first.url}/segments")
        assert status == 200 and view["segments"] == segments
        assert view["campaigns_total"] >= len(campaigns)
        assert view["alerts_open"] == 0


def test_the_page_and_its_files_and_nothing_else(make_worker: WorkerFactory) -> None:
    worker = make_worker().start()
    with urllib.request.urlopen(worker.url + "/", timeout=30) as response:
        page, headers = response.read().decode(), response.headers
    assert "<html" in page.lower() and headers["Content-Type"].startswith("text/html")
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'self'" in policy and "http" not in policy
    for name in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js"):
        assert call("GET", f"{worker.url}/static/{name}")[0] == 200, name
    for name in (
        "index.html",  # served at / only
        "../settings.py",
        "..%2fsettings.py",
        "vendor/../../app.py",
        "%2e%2e/%2e%2e/pyproject.toml",
        "vendor/LICENSE.nope",
    ):
        status, body = call("GET", f"{worker.url}/static/{name}")
        assert status == 404, (name, status, body)
