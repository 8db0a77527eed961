"""Poison profiles: one visitor cannot grow a value past its bound, nor stop a partition.

The attack of issue 9 over the unauthenticated ``POST /collect``: 40,000 page
views for one anonymous id, each with a different first path segment (625
times the 64 interests a profile keeps), in batches of 500; with them,
impressions of 200 campaigns in each of 40 minutes (three times the 64
campaigns, and four times the 2,048 buckets, of frequency kept), and 3,000
anonymous ids linked to one user (30 times the 100 ids listed; the links it
cannot list are unlinked, so that an erasure still reaches every link). A bystander
on the same ``profiles.in`` partition as the attacker gets an event in every
batch.

Then: every event is accounted for (received = invalid + duplicate + bot +
accepted, with the field_too_long refusals sent along), the bystander's
profile is complete, the attacked profiles are bounded as the README says
(and count every event), every profile changelog record is under the bound,
and no agent crashed.

And a stage in a crash loop (the profile changelog made to refuse records
over 300 bytes) makes ``/health`` answer 503, naming the stage and the error.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import murmur2

from tests.integration.conftest import WorkerFactory
from tests.integration.events import CHROME, MINUTE, T0
from tests.integration.support import Worker, call, metrics, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 8
BATCH = 500
VIEWS = 40_000
CAMPAIGNS, MINUTES = 200, 40  # 8,000 impressions, each a (campaign, minute) bucket of its own
LINKED = 3_000
# The README's limits.
MAX_INTERESTS, MAX_IDS, MAX_CAMPAIGNS, MAX_BUCKETS = 64, 100, 64, 2048
MAX_PROFILE_BYTES = 320 * 1024


def partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def body(kind: str, ts: int, anon: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"p-{uuid.uuid4().hex}",
        "type": kind,
        "timestamp": ts,
        "anonymous_id": anon,
        "user_agent": CHROME,
        **extra,
    }


def attack(attacker: str, bystander: str, user: str) -> Iterator[list[dict[str, Any]]]:
    """Batches of the attack; each also carries one bystander page view and one refusal."""
    events: list[dict[str, Any]] = [
        body("page_view", T0 + n, attacker, url=f"https://site.example/s{n}/page")
        for n in range(VIEWS)
    ]
    events += [
        body("impression", T0 + m * MINUTE, attacker, campaign_id=f"cmp-{c}")
        for m in range(MINUTES)
        for c in range(CAMPAIGNS)
    ]
    events += [
        body("identify", T0 + n, f"{user}-anon-{n:05d}", user_id=user) for n in range(LINKED)
    ]
    for start in range(0, len(events), BATCH - 2):
        batch = events[start : start + BATCH - 2]
        batch.append(body("page_view", T0, bystander, url="https://site.example/news/a"))
        batch.append(body("page_view", T0, attacker, user_agent="x" * 5_000))  # field_too_long
        yield batch


def outcomes(worker: Worker) -> dict[str, float]:
    samples = metrics(worker.url)
    return {
        "received": sum(v for k, v in samples.items() if k.startswith("dmp_events_received_total")),
        "invalid": sum(v for k, v in samples.items() if k.startswith("dmp_events_invalid_total{")),
        "field_too_long": samples.get('dmp_events_invalid_total{reason="field_too_long"}', 0),
        "duplicate": samples["dmp_events_duplicate_total"],
        "bot": samples["dmp_events_bot_total"],
        "accepted": samples["dmp_events_accepted_total"],
    }


def profile(worker: Worker, profile_id: str) -> dict[str, Any] | None:
    status, found = call("GET", f"{worker.url}/profiles/{profile_id}")
    return found if status == 200 else None


async def _changelog_sizes(bootstrap: str, topic: str) -> list[int]:
    """The size of every value on ``topic``, read to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        sizes: list[int] = []
        deadline = time.monotonic() + 120
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"reading {topic} took too long"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                sizes += [len(r.value) for r in records if r.value is not None]
        return sizes
    finally:
        await consumer.stop()


def test_a_poison_attack_is_bounded_and_stops_nothing(make_worker: WorkerFactory) -> None:
    worker = make_worker().start()
    tag = uuid.uuid4().hex[:6]
    attacker, user = f"poison-{tag}", f"user-{tag}"
    bystander = next(
        f"bystander-{tag}-{i}"
        for i in range(1000)
        if partition(f"bystander-{tag}-{i}") == partition(attacker)
    )
    batches, deadline = 0, time.monotonic() + 300
    for batch in attack(attacker, bystander, user):
        assert time.monotonic() < deadline, f"the collector fell behind at batch {batches}"
        status, answer = call(
            "POST",
            worker.url + "/collect",
            json.dumps({"batch": batch}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 202 and [e["reason"] for e in answer["errors"]] == ["field_too_long"]
        batches += 1
    sent = VIEWS + CAMPAIGNS * MINUTES + LINKED + 2 * batches

    want = {
        attacker: {"page_view": VIEWS, "impression": CAMPAIGNS * MINUTES},
        user: {"identify": LINKED},
        bystander: {"page_view": batches},
    }

    def settled() -> dict[str, Any] | None:
        found = {key: profile(worker, key) for key in want}
        complete = all(p is not None and p["counts"] == want[k] for k, p in found.items())
        return found if complete else None

    done = wait_until(settled, 600, "every event to reach the profiles", interval=2)

    counts = outcomes(worker)
    assert counts["received"] == sent
    assert counts["invalid"] == counts["field_too_long"] == batches
    assert counts["received"] == (
        counts["invalid"] + counts["duplicate"] + counts["bot"] + counts["accepted"]
    )
    assert counts["accepted"] == sent - batches

    poison = done[attacker]
    assert len(poison["interests"]) == MAX_INTERESTS
    assert sum(poison["interests"].values()) + poison["interests_other"] == VIEWS
    # Every interest counted once: the 64 smallest names stay (ties broken by name).
    assert set(poison["interests"]) == set(sorted(f"s{n}" for n in range(VIEWS))[:MAX_INTERESTS])

    linked = done[user]
    assert len(linked["ids"]) == MAX_IDS and linked["ids_truncated"] is True
    assert user in linked["ids"]
    # The largest names were left out, so unlinked: counted in the user, no longer a link.
    left_out = f"{user}-anon-{LINKED - 1:05d}"
    assert left_out not in linked["ids"]
    # Its own record is unlinked by a command to its partition, which may come after the
    # user's counts are complete: wait for it, within a bound.
    wait_until(
        lambda: call("GET", f"{worker.url}/profiles/{left_out}")[0] == 404,
        60,
        f"{left_out}, left out of the user's ids, to answer 404",
    )
    kept = f"{user}-anon-{0:05d}"
    assert kept in linked["ids"] and (profile(worker, kept) or {}).get("profile_id") == user

    # Frequency: at most 64 campaigns still counted, at most 2,048 buckets (one impression
    # each) over all of them; which ones stay depends on the order, past the limits.
    counted = []
    for c in range(CAMPAIGNS):
        status, answer = call("GET", f"{worker.url}/frequency/{attacker}/cmp-{c}")
        assert status == 200
        counted.append(answer["impressions_24h"])
    assert 0 < len([n for n in counted if n]) <= MAX_CAMPAIGNS
    assert 0 < sum(counted) <= MAX_BUCKETS

    sizes = asyncio.run(_changelog_sizes(worker.bootstrap, f"{worker.prefix}-profiles-changelog"))
    assert sizes and max(sizes) <= MAX_PROFILE_BYTES
    assert not worker.crashes()


async def _set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


def test_a_stage_in_a_crash_loop_makes_health_answer_503(kafka: str, tmp_path: Path) -> None:
    prefix = f"crash{uuid.uuid4().hex[:6]}"
    worker = Worker(kafka, prefix, tmp_path / prefix).start()  # its log will hold crashes
    try:
        status, health = call("GET", worker.url + "/health")
        assert status == 200
        assert {"validate_events", "deduplicate_events", "build_profiles"} <= set(health["stages"])
        assert {s["status"] for s in health["stages"].values()} == {"ok"}
        changelog = f"{prefix}-profiles-changelog"
        limit = {"cleanup.policy": "compact", "max.message.bytes": "300"}
        asyncio.run(_set_topic_config(kafka, changelog, limit))

        def failing() -> dict[str, Any] | None:
            # A profile of 50 interests is over 300 bytes; sent again and again, as an attack is.
            views = [
                body("page_view", T0 + n, "crash-1", url=f"https://x.example/section-{n:04d}/")
                for n in range(50)
            ]
            call("POST", worker.url + "/collect", json.dumps({"batch": views}).encode())
            status, health = call("GET", worker.url + "/health")
            stage = health["stages"]["build_profiles"]
            return health if status == 503 and stage["status"] == "failing" else None

        health = wait_until(failing, 120, "/health to name the failing stage", interval=1)
        stage = health["stages"]["build_profiles"]
        assert "TooLarge" in stage["error"] and stage["crashes"] >= 2
        assert "build_profiles" in health["detail"] and health["status"] == "unavailable"
        assert health["stages"]["validate_events"]["status"] == "ok"
        assert worker.crashes()  # Faust's own log line of each crash
    finally:
        worker.stop()
