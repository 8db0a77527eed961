"""The pipeline end to end on the real broker: raw topic and HTTP in, views out."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.chaos.observe import INPUT_TOPICS, INTAKE_TOPICS
from tests.integration.conftest import WorkerFactory
from tests.integration.events import CHROME, GOOGLEBOT, MINUTE, T0, encode, event, expected_windows
from tests.integration.support import (
    Worker,
    call,
    consume,
    create_topic,
    metrics,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

ISO = "%Y-%m-%dT%H:%M:%SZ"


def iso(ms: int) -> str:
    return time.strftime(ISO, time.gmtime(ms // 1000))


def stats(worker: Worker, campaign: str, query: str = "") -> dict[str, Any]:
    status, body = call("GET", f"{worker.url}/campaigns/{campaign}/stats{query}")
    assert status == 200, body
    return body


def wait_for_totals(
    worker: Worker, campaign: str, query: str, impressions: int, clicks: int, conversions: int
) -> dict[str, Any]:
    seen: list[Any] = []

    def done() -> dict[str, Any] | None:
        body = stats(worker, campaign, query)
        totals = body["totals"]
        seen[:] = [(totals["impressions"], totals["clicks"], totals["conversions"])]
        return body if seen[0] == (impressions, clicks, conversions) else None

    try:
        return wait_until(done, 60, f"totals of {campaign}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: got {seen}, want {(impressions, clicks, conversions)}"
        ) from None


def send_http(worker: Worker, events: list[dict[str, Any]]) -> tuple[int, Any]:
    return call(
        "POST",
        worker.url + "/collect",
        json.dumps({"batch": events}).encode(),
        {"Content-Type": "application/json"},
    )


def test_windows_and_ranges_are_exact_on_historical_time(module_worker: Worker) -> None:
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    events = [
        event("impression", T0 + 1_000, "u1", campaign),
        event("impression", T0 + 2_000, "u2", campaign),
        event("impression", T0 + 59_999, "u3", campaign),
        event("click", T0 + 30_000, "u1", campaign),
        event("impression", T0 + MINUTE, "u1", campaign),  # first instant of window 2
        event("impression", T0 + MINUTE + 5_000, "u4", campaign),
        event("click", T0 + MINUTE + 6_000, "u4", campaign),
        event("conversion", T0 + MINUTE + 7_000, "u4", campaign, revenue=12.5),
        event("conversion", T0 + MINUTE + 8_000, "u2", campaign, revenue=7.25),
        event("impression", T0 + 5 * MINUTE + 1, "u5", campaign),
        event("page_view", T0 + 3 * MINUTE, "u6", url="https://example.com/sports/x"),
    ]
    half = len(events) // 2
    produce(
        module_worker.bootstrap,
        f"{module_worker.prefix}.events.raw",
        [(None, encode(body)) for body in events[:half]],
    )
    assert send_http(module_worker, events[half:])[0] == 202
    expected = expected_windows(events)

    query = f"?from={iso(T0)}&to={iso(T0 + 6 * MINUTE)}"
    kinds = Counter(body["type"] for body in events)
    body = wait_for_totals(
        module_worker, campaign, query, kinds["impression"], kinds["click"], kinds["conversion"]
    )

    assert [w["start"] for w in body["windows"]] == [iso(T0 + i * MINUTE) for i in range(6)]
    for window in body["windows"]:
        start = T0 + body["windows"].index(window) * MINUTE
        want = expected.get(start, {"counts": {}, "revenue": 0.0, "users": set()})
        counts = want["counts"]
        assert window["end"] == iso(start + MINUTE)
        assert window["impressions"] == counts.get("impression", 0)
        assert window["clicks"] == counts.get("click", 0)
        assert window["conversions"] == counts.get("conversion", 0)
        assert window["revenue"] == pytest.approx(want["revenue"])
        assert window["unique_users"] == len(want["users"])
        impressions = counts.get("impression", 0)
        assert window["ctr"] == pytest.approx(
            counts.get("click", 0) / impressions if impressions else 0
        )
    totals = body["totals"]
    assert totals["revenue"] == pytest.approx(19.75)
    assert totals["unique_users"] == len(set().union(*(w["users"] for w in expected.values())))
    assert totals["ctr"] == pytest.approx(kinds["click"] / kinds["impression"])

    # Any range of whole minutes, in epoch ms too; unaligned bounds widen to window edges.
    second = stats(module_worker, campaign, f"?from={T0 + MINUTE}&to={T0 + 2 * MINUTE}")
    assert [w["impressions"] for w in second["windows"]] == [2]
    assert second["totals"]["unique_users"] == len(expected[T0 + MINUTE]["users"])
    widened = stats(module_worker, campaign, f"?from={T0 + 90_000}&to={T0 + 5 * MINUTE + 1}")
    assert widened["from"] == iso(T0 + MINUTE) and widened["to"] == iso(T0 + 6 * MINUTE)
    assert widened["totals"]["impressions"] == 3


def test_default_range_is_the_last_hour_of_stream_time(module_worker: Worker) -> None:
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    events = [event("impression", T0 + 10 * MINUTE, "u1", campaign)]
    assert send_http(module_worker, events)[0] == 202
    body = wait_for_totals(module_worker, campaign, "", 1, 0, 0)
    assert len(body["windows"]) == 60
    assert body["to"] == iso(T0 + 11 * MINUTE)


def test_unknown_campaign_answers_zeros(module_worker: Worker) -> None:
    body = stats(module_worker, "never-seen", f"?from={T0}&to={T0 + 2 * MINUTE}")
    assert body["totals"]["impressions"] == 0 and body["totals"]["unique_users"] == 0
    assert len(body["windows"]) == 2


@pytest.mark.parametrize(
    "query",
    ["?from=yesterday", f"?from={T0}&to={T0}", f"?from={T0}&to={T0 + 3 * 24 * 60 * MINUTE}"],
)
def test_bad_range_is_a_json_400(module_worker: Worker, query: str) -> None:
    status, body = call("GET", f"{module_worker.url}/campaigns/x/stats{query}")
    assert status == 400
    assert body["error"] == "bad_parameter" and body["detail"]


def payloads_by_reason(now_ms: int) -> dict[str, bytes]:
    good = event("page_view", T0, "u-dlq")
    return {
        "malformed_json": b'{"event_id": "x", ',
        "not_an_object": b"[1, 2, 3]",
        "too_large": encode({**good, "properties": {"blob": "x" * 70_000}}),
        "missing_field": encode({k: v for k, v in good.items() if k != "event_id"}),
        "bad_type": encode({**good, "anonymous_id": 42}),
        "unknown_type": encode({**good, "type": "purchase"}),
        "bad_timestamp": encode({**good, "timestamp": "2021-03-01 noon"}),
        "future_timestamp": encode({**good, "timestamp": now_ms + 3_600_000}),
        "field_too_long": encode({**good, "url": "https://site.example/" + "x" * 9_000}),
        "too_old": encode(
            {
                **good,
                "event_id": "old",
                "timestamp": T0 + 2 * 60 * MINUTE - 24 * 60 * MINUTE - MINUTE,
            }
        ),
    }


def test_every_refused_event_reaches_the_dead_letter_topic(module_worker: Worker) -> None:
    key = f"dlq-{uuid.uuid4().hex}".encode()
    payloads = payloads_by_reason(int(time.time() * 1000))
    # An event two hours after T0 first, on the same key (so the same partition):
    # the too_old payload is then more than 24 h behind that partition's stream time.
    latest = encode(event("page_view", T0 + 2 * 60 * MINUTE, "u-dlq"))
    records = [(key, latest), *((key, raw) for raw in payloads.values())]
    sent = produce(module_worker.bootstrap, f"{module_worker.prefix}.events.raw", records)

    dlq = consume(
        module_worker.bootstrap,
        f"{module_worker.prefix}.events.dlq",
        lambda got: sum(r.key == key for r in got) >= len(payloads),
    )
    letters = {json.loads(r.value)["reason"]: json.loads(r.value) for r in dlq if r.key == key}
    assert set(letters) == set(payloads)
    for (reason, raw), meta in zip(payloads.items(), sent[1:], strict=True):
        letter = letters[reason]
        assert base64.b64decode(letter["raw"]) == raw
        assert letter["source"] == {
            "topic": meta.topic,
            "partition": meta.partition,
            "offset": meta.offset,
        }
        assert letter["detail"] and letter["received_at"].endswith("Z")


def outcome_counts(worker: Worker) -> dict[str, float]:
    samples = metrics(worker.url)
    invalid = sum(v for k, v in samples.items() if k.startswith("dmp_events_invalid_total{"))
    return {
        "received": samples['dmp_events_received_total{source="kafka"}']
        + samples['dmp_events_received_total{source="http"}'],
        "invalid": invalid,
        "duplicate": samples["dmp_events_duplicate_total"],
        "bot": samples["dmp_events_bot_total"],
        "accepted": samples["dmp_events_accepted_total"],
    }


def test_duplicates_bots_and_the_accounting_identity(make_worker: WorkerFactory) -> None:
    worker = make_worker().start()  # its own worker: nothing else moves its counters

    def balanced() -> dict[str, float] | None:
        c = outcome_counts(worker)
        return (
            c if c["received"] == c["invalid"] + c["duplicate"] + c["bot"] + c["accepted"] else None
        )

    before = wait_until(balanced, 60, "the counters to balance before the test")
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    first = event("impression", T0 + 20 * MINUTE, "d1", campaign)
    second = event("click", T0 + 20 * MINUTE, "d1", campaign)
    bot = event("impression", T0 + 20 * MINUTE, "crawler", campaign, user_agent=GOOGLEBOT)
    # Kafka then HTTP copies of `first`, HTTP then Kafka copies of `second`.
    produce(
        worker.bootstrap,
        f"{worker.prefix}.events.raw",
        [(None, encode(first)), (b"k", encode(bot)), (None, b"not json")],
    )
    assert send_http(worker, [first, second, {"type": "nope"}])[0] == 202
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(b"other-key", encode(second))])

    query = f"?from={T0 + 20 * MINUTE}&to={T0 + 21 * MINUTE}"
    body = wait_for_totals(worker, campaign, query, 1, 1, 0)
    assert body["totals"]["unique_users"] == 1

    def moved() -> dict[str, float] | None:
        c = balanced()
        return c if c and c["received"] - before["received"] == 7 else None

    after = wait_until(moved, 60, "all seven events to be accounted for")
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"received": 7, "invalid": 2, "duplicate": 2, "bot": 1, "accepted": 2}
    assert wait_for_totals(worker, campaign, query, 1, 1, 0)  # still once each


def test_collect_answers_partial_acceptance(module_worker: Worker) -> None:
    good = event("page_view", T0, "c1", user_agent=CHROME)
    status, body = send_http(module_worker, [good, {"event_id": "x"}, "text"])
    assert status == 202
    assert body["accepted"] == 1
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (1, "missing_field"),
        (2, "not_an_object"),
    ]

    status, body = send_http(module_worker, [{"event_id": "x"}])
    assert status == 400 and body["accepted"] == 0 and body["errors"][0]["index"] == 0

    status, body = call("POST", module_worker.url + "/collect", encode(good))
    assert status == 202 and body == {"accepted": 1, "errors": []}


@pytest.mark.parametrize(
    "body",
    [
        encode({**event("page_view", T0, "big"), "properties": {"blob": "x" * 70_000}}),
        json.dumps({"batch": [event("page_view", T0, "many")] * 501}).encode(),
    ],
    ids=["event-over-64KiB", "batch-over-500"],
)
def test_collect_refuses_oversized_bodies_with_413(module_worker: Worker, body: bytes) -> None:
    status, answer = call("POST", module_worker.url + "/collect", body)
    assert status == 413
    assert answer["error"] == "too_large"


def test_collect_refuses_a_declared_body_over_the_limit_before_reading_it(
    module_worker: Worker,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", module_worker.port, timeout=30)
    connection.putrequest("POST", "/collect")
    connection.putheader("Content-Length", str(5 * 1024 * 1024))
    connection.endheaders()
    connection.send(b"[" + b"0," * 1000)
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"] == "too_large"
    connection.close()


def test_health_metrics_and_json_errors(module_worker: Worker) -> None:
    status, body = call("GET", module_worker.url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["active_partitions"] == list(range(8))
    assert set(body["capacity"]) == {
        "arrival_rate", "service_rate", "utilisation", "expected_sojourn_s"
    }  # fmt: skip
    samples = metrics(module_worker.url)
    assert any(name.startswith("faust_") for name in samples), "Faust's own sensor is exported"
    assert "dmp_utilisation" in samples and "dmp_expected_sojourn_seconds" in samples
    assert not [name for name in samples if "_created" in name], "no *_created series"
    status, body = call("GET", module_worker.url + "/no/such/route")
    assert status == 404 and body["error"] == "not_found"


def test_capacity_measures_what_arrives_and_what_it_costs(make_worker: WorkerFactory) -> None:
    """Events arriving over HTTP for a few seconds: /health and the gauges show an arrival
    rate, a service rate from the CPU time they took, and the M/M/1 figures of the two."""
    worker = make_worker().start()
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    for second in range(6):
        batch = [event("impression", T0 + 40 * MINUTE + second * 100 + i, f"u{i}", campaign)
                 for i in range(100)]  # fmt: skip
        assert send_http(worker, batch)[0] == 202
        time.sleep(1)

    def measured() -> dict[str, Any] | None:
        found = call("GET", worker.url + "/health")[1]["capacity"]
        return found if found["utilisation"] is not None and found["arrival_rate"] > 0 else None

    capacity = wait_until(measured, 30, "the capacity figures")
    assert capacity["service_rate"] > 0
    assert capacity["utilisation"] == pytest.approx(
        capacity["arrival_rate"] / capacity["service_rate"], rel=1e-3
    )
    if capacity["utilisation"] < 1:
        expected = 1 / (capacity["service_rate"] - capacity["arrival_rate"])
        assert capacity["expected_sojourn_s"] == pytest.approx(expected, rel=1e-3)
    assert metrics(worker.url)["dmp_utilisation"] > 0


def test_a_busy_campaign_is_counted_exactly_while_windows_are_swept(module_worker: Worker) -> None:
    """Enough events on one partition for the expiry sweeps to run many times."""
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    events = [
        event("impression", T0 + 30 * MINUTE + i * 50, f"busy-{i}", campaign) for i in range(1500)
    ]
    produce(
        module_worker.bootstrap,
        f"{module_worker.prefix}.events.raw",
        [(None, encode(body)) for body in events],
    )
    query = f"?from={T0 + 30 * MINUTE}&to={T0 + 32 * MINUTE}"
    body = wait_for_totals(module_worker, campaign, query, len(events), 0, 0)
    assert body["totals"]["unique_users"] == pytest.approx(len(events), rel=0.02)
    assert [w["impressions"] for w in body["windows"]] == [1200, 300]


def committed_behind(worker: Worker) -> dict[str, int]:
    """Per topic a worker's stages read, the end offsets minus what its consumer groups
    committed, summed over partitions (only topics with something left)."""

    async def run() -> dict[str, int]:
        partitions = int(worker.env.get("DMP_PARTITIONS", "8"))
        tps = {
            topic: [TopicPartition(f"{worker.prefix}.{topic}", p) for p in range(partitions)]
            for topic in INPUT_TOPICS
        }
        admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
        reader = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap)
        await admin.start()
        await reader.start()
        try:
            behind = {}
            for topic, parts in tps.items():
                group = f"{worker.prefix}-intake" if topic in INTAKE_TOPICS else worker.prefix
                committed = await admin.list_consumer_group_offsets(group, partitions=parts)
                ends = await reader.end_offsets(parts)
                # -1: nothing committed (nor anything to commit, on an empty partition)
                done = {tp: max(committed[tp].offset, 0) for tp in committed}
                left = sum(ends[tp] - done.get(tp, 0) for tp in parts)
                if left:
                    behind[topic] = left
            return behind
        finally:
            await reader.stop()
            await admin.close()

    return asyncio.run(run())


def test_consumer_group_commits_reach_the_end_once_drained(make_worker: WorkerFactory) -> None:
    """Consumer lag on the worker's groups is what operators watch. Faust commits only what
    it acknowledged in a row, and a stage reads some records itself (the tails Faust
    leaves after a rebalance or at start): the commits must still follow the stages to
    the end of every topic, or lag shows records processed long ago (and `make bench`,
    which waits for the commits, never finished)."""
    worker = make_worker(DMP_PARTITIONS="4").start()
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    events = [
        event(kind, T0 + 30 * MINUTE + i, f"u{i % 40}", campaign)
        for i, kind in enumerate(["impression"] * 300 + ["click"] * 60)
    ]
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(e)) for e in events])
    wait_for_totals(worker, campaign, f"?from={T0 + 30 * MINUTE}&to={T0 + 31 * MINUTE}", 300, 60, 0)
    behind: list[dict[str, int]] = []

    def caught_up() -> bool:
        behind[:] = [committed_behind(worker)]
        return not behind[0]

    try:
        wait_until(caught_up, 60, "the commits to reach the ends")
    except AssertionError as exc:
        raise AssertionError(f"committed offsets behind the ends: {behind}") from exc


def test_stage_lag_counts_what_each_stage_has_left_and_reaches_zero(
    make_worker: WorkerFactory,
) -> None:
    """dmp_stage_lag and /health's stage_lag: every stage, every partition the worker
    owns, from the stage's own next offset. A backlog waiting when the worker starts
    shows as lag (no more than was sent), and every figure comes to 0 once it is
    processed."""
    worker = make_worker(DMP_PARTITIONS="4")
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    sent = 60_000
    events = [
        event("impression", T0 + 40 * MINUTE + i % 60_000, f"u{i % 500}", campaign)
        for i in range(sent)
    ]
    asyncio.run(create_topic(worker.bootstrap, f"{worker.prefix}.events.raw", 4))
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(e)) for e in events])
    stages = {
        "validate_events",
        "deduplicate_events",
        "build_profiles",
        "count_segment_sizes",
        "count_campaign_stats",
        "read_history",
    }
    peaks: Counter[str] = Counter()
    seen: list[Any] = []

    def drained() -> bool:
        status, body = call("GET", f"{worker.url}/health")
        lag = body.get("stage_lag", {})
        seen[:] = [lag]
        for stage, figures in lag.items():
            peaks[stage] = max(peaks[stage], figures["total"])
        return (
            status == 200
            and set(lag) == stages
            and all(set(lag[s]["partitions"]) == {"0", "1", "2", "3"} for s in stages)
            and all(lag[s]["total"] == 0 for s in stages)
        )

    watching = threading.Event()

    def watch() -> None:  # from the worker's first answer on, 503 included
        while not watching.wait(0.1):
            with contextlib.suppress(OSError, ValueError, AssertionError):
                drained()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        worker.start()
        wait_until(drained, 120, "every stage's lag to reach 0", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"stage_lag: {seen}") from exc
    finally:
        watching.set()
        watcher.join(5)
    # The intake reads fastest, and is often through before the first figures: some
    # stage after it still has records left then.
    assert 0 < max(peaks.values()) <= sent, peaks
    query = f"?from={T0 + 40 * MINUTE}&to={T0 + 41 * MINUTE}"
    wait_for_totals(worker, campaign, query, sent, 0, 0)
    samples = metrics(worker.url)
    series = {name for name in samples if name.startswith("dmp_stage_lag{")}
    assert len(series) == len(stages) * 4, sorted(series)
    assert all(samples[name] == 0 for name in series)
