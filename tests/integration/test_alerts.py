"""Anomaly alerts on a real broker: hours of 2021 traffic, a spike, a silence, a control.

Two campaigns share a partition (so the control's events move the stream
time on while the first is silent). Each minute holds Poisson counts of
impressions, clicks and conversions; the first campaign has 4x its
impressions in minutes 120-124 and sends nothing in minutes 150-159. The
events go out five minutes of event time at a time, each chunk counted
before the next is sent, and the settle delay is six minutes: every window
is complete when it is judged, whatever order the pipeline's partitions
deliver it in.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from typing import Any

import numpy as np
import pytest
from aiokafka.partitioner import murmur2

from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, consume, metrics, produce, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 8
MINUTES = 190
SPIKE = range(120, 125)
SILENCE = range(150, 160)
RATES = {"impression": 40.0, "click": 4.0, "conversion": 0.8}
CHUNK = 5  # minutes of event time sent at once
SETTLE_S = 6 * 60


def partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def campaigns() -> tuple[str, str]:
    """A campaign and a control on the same partition."""
    first = f"alert-{uuid.uuid4().hex[:8]}"
    while True:
        control = f"control-{uuid.uuid4().hex[:8]}"
        if partition(control) == partition(first):
            return first, control


def traffic(first: str, control: str) -> list[list[dict[str, Any]]]:
    """The events of each minute, in event-time order."""
    rng = np.random.default_rng(20210301)
    minutes: list[list[dict[str, Any]]] = []
    for minute in range(MINUTES):
        events = []
        for campaign in (first, control):
            if campaign == first and minute in SILENCE:
                continue
            for kind, rate in RATES.items():
                if campaign == first and minute in SPIKE and kind == "impression":
                    rate *= 4
                for _ in range(rng.poisson(rate)):
                    ts = T0 + minute * MINUTE + int(rng.integers(MINUTE))
                    user = f"u{rng.integers(500)}"
                    extra = {"revenue": 5.0} if kind == "conversion" else {}
                    events.append(event(kind, ts, user, campaign, **extra))
        minutes.append(sorted(events, key=lambda e: e["timestamp"]))
    return minutes


def counted(worker: Worker, campaign: str) -> int:
    status, body = call(
        "GET", f"{worker.url}/campaigns/{campaign}/stats?from={T0}&to={T0 + MINUTES * MINUTE}"
    )
    assert status == 200, body
    totals = body["totals"]
    return int(totals["impressions"] + totals["clicks"] + totals["conversions"])


def alerts(worker: Worker, query: str = "") -> list[dict[str, Any]]:
    status, body = call("GET", f"{worker.url}/alerts{query}")
    assert status == 200, body
    return body["alerts"]


def test_a_spike_and_a_silence_alert_and_the_control_does_not(
    make_worker: WorkerFactory, tmp_path: Any
) -> None:
    first, control = campaigns()
    minutes = traffic(first, control)
    worker = make_worker(DMP_ALERT_SETTLE_S=str(SETTLE_S)).start()
    raw = f"{worker.prefix}.events.raw"
    sent: Counter[str] = Counter()
    for start in range(0, MINUTES, CHUNK):
        chunk = [e for minute in minutes[start : start + CHUNK] for e in minute]
        produce(worker.bootstrap, raw, [(None, encode(e)) for e in chunk])
        sent.update(e["campaign_id"] for e in chunk)
        wait_until(
            lambda: (
                counted(worker, first) == sent[first] and counted(worker, control) == sent[control]
            ),
            60,
            f"minutes {start}-{start + CHUNK} to be counted",
        )
        if start + CHUNK == 160:  # judged up to minute 153: the silence is an open drop
            opened = wait_until(
                lambda: alerts(worker, f"?campaign_id={first}&status=open"), 30, "the drop"
            )
            assert [(a["metric"], a["direction"]) for a in opened] == [("impressions", "drop")]
            assert metrics(worker.url)['dmp_alerts_open{metric="impressions"}'] == 1
    # judged up to minute 190 - 1 - 6: the spike and the silence, and both resolved
    range_query = f"?from={T0}&to={T0 + MINUTES * MINUTE}"
    found = wait_until(
        lambda: (
            (a := alerts(worker, range_query + f"&campaign_id={first}"))
            and all(x["status"] == "resolved" for x in a)
            and a
        ),
        60,
        "the incidents of the first campaign to open and resolve",
    )
    by_kind = {(a["metric"], a["direction"]): a for a in found}
    spike = by_kind[("impressions", "spike")]
    drop = by_kind[("impressions", "drop")]
    assert spike["opened_window"]["start"] == "2021-03-01T14:00:00Z"  # minute 120
    assert drop["opened_window"]["start"] == "2021-03-01T14:30:00Z"  # minute 150
    assert drop["observed"] == 0
    assert spike["observed"] > 2 * spike["expected"]
    for alert in (spike, drop):
        assert alert["campaign_id"] == first
        assert alert["p_value"] < 0.001 / 2
        assert alert["model"]["test"] in ("poisson", "negative_binomial")
        assert alert["model"]["history_windows"] >= 60
    # the drop resolved only once the traffic was back, the spike once it was over
    assert "2021-03-01T14:40:00Z" <= drop["resolved_window"]["start"] <= "2021-03-01T14:45:00Z"
    assert "2021-03-01T14:05:00Z" <= spike["resolved_window"]["start"] <= "2021-03-01T14:10:00Z"
    # anything else it raised concerns the spike's CTR or the silence, never other times
    for alert in found:
        assert "2021-03-01T14:00:00Z" <= alert["opened_window"]["start"] < "2021-03-01T14:40:00Z"
    assert alerts(worker, range_query + f"&campaign_id={control}") == []
    everything = alerts(worker, range_query)
    assert sorted(a["alert_id"] for a in everything) == sorted(a["alert_id"] for a in found)
    assert alerts(worker, range_query + "&status=open") == []
    assert alerts(worker, f"?campaign_id={first}") == found  # the last 24 h of stream time

    # dmp.alerts: one record as each incident opened, one as it resolved, keyed by campaign
    expected_records = 2 * len(found)
    records = consume(
        worker.bootstrap,
        f"{worker.prefix}.alerts",
        lambda got: len(got) >= expected_records,
    )
    assert {r.key.decode() for r in records} == {first}
    statuses = Counter(
        (json.loads(r.value)["alert_id"], json.loads(r.value)["status"]) for r in records
    )
    assert statuses == Counter({(a["alert_id"], s): 1 for a in found for s in ("open", "resolved")})
    last = {json.loads(r.value)["alert_id"]: json.loads(r.value) for r in records}
    assert sorted(last.values(), key=lambda a: a["alert_id"]) == sorted(
        found, key=lambda a: a["alert_id"]
    )
    samples = metrics(worker.url)
    assert samples['dmp_alerts_total{direction="spike",metric="impressions"}'] == 1
    assert samples['dmp_alerts_total{direction="drop",metric="impressions"}'] == 1
    assert sum(v for k, v in samples.items() if k.startswith("dmp_alerts_total")) == len(found)
    assert all(v == 0 for k, v in samples.items() if k.startswith("dmp_alerts_open"))
    assert samples['dmp_alerts_open{metric="impressions"}'] == 0

    # a worker on an empty disk rebuilds the same alerts from the changelogs
    worker.stop()
    shutil.rmtree(worker.data_dir)
    rebuilt = make_worker(
        prefix=worker.prefix, data_dir=tmp_path / "empty", DMP_ALERT_SETTLE_S=str(SETTLE_S)
    ).start()
    assert alerts(rebuilt, range_query) == everything


def test_a_busy_worker_raises_a_capacity_alert(make_worker: WorkerFactory) -> None:
    """With a threshold any traffic crosses, a worker under load raises metric "capacity"."""
    worker = make_worker(DMP_ALERT_CAPACITY_RHO="0.01", DMP_ALERT_CAPACITY_FOR_S="2").start()
    raw = f"{worker.prefix}.events.raw"

    def opened() -> list[dict[str, Any]]:
        # keep it busy: a few hundred events a round, until rho has stayed above 0.01
        produce(
            worker.bootstrap,
            raw,
            [(None, encode(event("page_view", T0, f"b{i}"))) for i in range(300)],
        )
        return [a for a in alerts(worker, "?status=open") if a["metric"] == "capacity"]

    found = wait_until(opened, 90, "a capacity alert")
    alert = found[0]
    assert alert["campaign_id"] is None and alert["p_value"] is None
    assert alert["worker"] == worker.url  # its canonical URL
    assert alert["direction"] == "spike" and alert["observed"] > 0.01
    assert alert["expected"] == 0.01 and alert["model"]["test"] == "mm1_utilisation"
    assert metrics(worker.url)['dmp_alerts_open{metric="capacity"}'] == 1
    assert metrics(worker.url)['dmp_alerts_total{direction="spike",metric="capacity"}'] == 1
    records = consume(worker.bootstrap, f"{worker.prefix}.alerts", lambda got: len(got) >= 1)
    first = json.loads(records[0].value)
    assert records[0].key.decode() == alert["worker"]
    assert (first["alert_id"], first["metric"], first["status"]) == (
        alert["alert_id"],
        "capacity",
        "open",
    )
    # a campaign's alerts are asked of its owner: no capacity alert among them
    assert alerts(worker, "?campaign_id=cmp-x") == []
    status, summary = call("GET", worker.url + "/dashboard/summary")
    assert status == 200 and summary["alerts_open"] >= 1
    assert [a["alert_id"] for a in summary["workers"][0]["open_alerts"]] == [alert["alert_id"]]
