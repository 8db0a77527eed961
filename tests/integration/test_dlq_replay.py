"""``dmp-faust dlq replay`` against a live worker: what passes today goes back, once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from dmp_faust.domain.deadletter import Source, dead_letter
from dmp_faust.domain.events import Rejection
from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, consume, metrics, produce, run_cli, wait_until

pytestmark = pytest.mark.integration


def replay(worker: Worker, *args: str) -> str:
    done = run_cli(worker, "dlq", "replay", "--quiet", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def raw_end(worker: Worker) -> int:
    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap)
        await consumer.start()
        try:
            topic = f"{worker.prefix}.events.raw"
            cluster = await consumer._client.fetch_all_metadata()
            tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(run())


def impressions(worker: Worker, campaign: str) -> int:
    path = f"/campaigns/{campaign}/stats?from={T0}&to={T0 + MINUTE}"
    status, body = call("GET", worker.url + path)
    assert status == 200, body
    return int(body["totals"]["impressions"])


def test_dead_letters_that_pass_today_are_replayed_once(make_worker: WorkerFactory) -> None:
    worker = make_worker().start()
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    fixed = event("impression", T0 + 5_000, "anon-replay", campaign)
    broken: dict[str, Any] = {"event_id": "no-time", "type": "page_view", "anonymous_id": "a"}
    # a dead letter an older version wrote (its rules refused what today's accept), and a
    # real one, from an event without a timestamp
    old = dead_letter(
        Rejection("bad_type", "refused by an older rule"),
        encode(fixed),
        Source(f"{worker.prefix}.events.raw", 0, 0),
        T0 + 60_000,
    )
    produce(worker.bootstrap, f"{worker.prefix}.events.dlq", [(b"anon-replay", old)])
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(broken))])
    consume(worker.bootstrap, f"{worker.prefix}.events.dlq", lambda got: len(got) >= 2)
    before = raw_end(worker)

    line = replay(worker, "--dry-run")
    assert line == ("dlq replay: read 2, selected 2, would replay 1, still refused 1, unreadable 0")
    assert raw_end(worker) == before  # a dry run sends nothing
    line = replay(worker, "--reason", "missing_field")
    assert line.startswith("dlq replay: read 2, selected 1, replayed 0, still refused 1")
    line = replay(worker, "--until", str(T0 + 60_000))  # refused at T0 + 60 s and now
    assert line.startswith("dlq replay: read 2, selected 0, replayed 0")
    line = replay(
        worker, "--dry-run", "--since", str(T0 + 60_000), "--until", "2021-03-02T00:00:00Z"
    )
    assert line.startswith("dlq replay: read 2, selected 1, would replay 1, still refused 0")
    assert raw_end(worker) == before

    assert replay(worker).startswith("dlq replay: read 2, selected 2, replayed 1, still refused 1")
    wait_until(lambda: impressions(worker, campaign) == 1, 60, "the replayed impression")
    samples = metrics(worker.url)
    assert samples['dmp_events_received_total{source="replay"}'] == 1
    duplicates = samples["dmp_events_duplicate_total"]

    # the same range again: the copy meets de-duplication by event id
    assert replay(worker).startswith("dlq replay: read 2, selected 2, replayed 1")
    wait_until(
        lambda: metrics(worker.url)["dmp_events_duplicate_total"] == duplicates + 1,
        60,
        "the second copy to be dropped as a duplicate",
    )
    assert impressions(worker, campaign) == 1
    samples = metrics(worker.url)
    assert samples['dmp_events_received_total{source="replay"}'] == 2
    received = sum(v for k, v in samples.items() if k.startswith("dmp_events_received_total"))
    refused = sum(v for k, v in samples.items() if k.startswith("dmp_events_invalid_total"))
    assert received == (
        refused
        + samples["dmp_events_duplicate_total"]
        + samples["dmp_events_bot_total"]
        + samples["dmp_events_accepted_total"]
    )
