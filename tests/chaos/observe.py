"""What the chaos run reads from the outside: Kafka (produce, lag, output topics) and HTTP.

Only the external interface: topic names under the prefix, the consumer group
(the prefix), ``GET`` routes and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from dmp_faust.store import Epochs, record_epoch
from tests.chaos.load import Record

INPUT_TOPICS: Final = (
    "events.raw",
    "events.valid",
    "events.by_campaign",
    "profiles.in",
    "segments.deltas",
)
# The raw topic is read by the intake's consumer group, the rest by Faust's.
INTAKE_TOPICS: Final = ("events.raw",)
# The stage reading each of Faust's input topics: each keeps the offset of its next
# record per partition in the stream_times table ("<stage>:next:<partition>").
STAGES: Final = {
    "events.valid": "deduplicate",
    "events.by_campaign": "campaign_stats",
    "profiles.in": "profiles",
    "segments.deltas": "segment_sizes",
}


def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> int:
    """Send ``records`` in order, idempotently (a retry never writes a record twice)."""

    async def run() -> int:
        logging.getLogger("aiokafka").setLevel(logging.ERROR)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            max_batch_size=256 * 1024,
            request_timeout_ms=60_000,
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)
            return len(futures)
        finally:
            await producer.stop()

    return asyncio.run(run())


def group_lag(bootstrap: str, prefix: str, partitions: int) -> dict[str, tuple[int, int]]:
    """Per input topic: (end offsets summed, processed offsets summed).

    Processed is the committed offset of the group reading the topic
    (``<prefix>-intake`` for the raw topic, ``<prefix>`` for the others) or, when
    higher, the stage's own next offset from its stream_times changelog: after a
    hole Faust's committed offset can lag behind what the stage processed (see
    docs/RELIABILITY.md), and the stage's offset is what decides a restart."""

    async def run() -> dict[str, tuple[int, int]]:
        tps = [TopicPartition(f"{prefix}.{t}", p) for t in INPUT_TOPICS for p in range(partitions)]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            intake = [tp for tp in tps if tp.topic.split(".", 1)[1] in INTAKE_TOPICS]
            rest = [tp for tp in tps if tp not in intake]
            committed = {
                **await admin.list_consumer_group_offsets(f"{prefix}-intake", partitions=intake),
                **await admin.list_consumer_group_offsets(prefix, partitions=rest),
            }
            ends = await consumer.end_offsets(tps)
            stages = await _stage_offsets(consumer, prefix, partitions)
        finally:
            await consumer.stop()
            await admin.close()
        out: dict[str, tuple[int, int]] = {}
        for tp in tps:
            done = committed[tp].offset if tp in committed else 0
            stage = STAGES.get(tp.topic.split(".", 1)[1])
            done = max(done, stages.get(f"{stage}:next:{tp.partition}", 0))
            end, total = ends.get(tp, 0), out.get(tp.topic.split(".", 1)[1], (0, 0))
            out[tp.topic.split(".", 1)[1]] = (total[0] + end, total[1] + max(0, done))
        return out

    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    return asyncio.run(run())


async def _stage_offsets(
    consumer: AIOKafkaConsumer, prefix: str, partitions: int
) -> dict[str, int]:
    """The "<stage>:next:<partition>" values on the stream_times changelog, as the table
    applies them (the last, of those not written late by a worker that had lost the
    partition: see dmp_faust/store.py)."""
    tps = [TopicPartition(f"{prefix}-stream_times-changelog", p) for p in range(partitions)]
    ends = await consumer.end_offsets(tps)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    epochs = {tp.partition: Epochs(applied=-1) for tp in tps}
    found: dict[str, int] = {}
    remaining = {tp for tp in tps if ends.get(tp, 0) > 0}
    while remaining:
        fetched = await consumer.getmany(*remaining, timeout_ms=2000)
        if not fetched:
            break
        for tp, records in fetched.items():
            for record in records:
                if not epochs[tp.partition].admit(record_epoch(record.headers)):
                    continue
                key = (record.key or b"").decode(errors="replace")
                if ":next:" in key and record.value:
                    found[key] = int(record.value)
            if records and records[-1].offset + 1 >= ends[tp]:
                remaining.discard(tp)
    return found


def read_topic(bootstrap: str, topic: str, partitions: int, committed_only: bool) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end offsets at call time."""

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if committed_only else "read_uncommitted",
            max_partition_fetch_bytes=8 * 2**20,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            records: list[Any] = []
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
                for part in batch.values():
                    records.extend(part)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


@dataclass
class TopicAccounting:
    """What the output topics say: dead letters by source record, clean events by id."""

    received: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    dead_letter_copies: int = 0  # dead letters beyond one per source record
    accepted_ids: Counter[str] = field(default_factory=Counter)  # event_id -> copies

    @property
    def clean_copies(self) -> int:
        return sum(n - 1 for n in self.accepted_ids.values())


def topic_accounting(
    bootstrap: str, prefix: str, partitions: int, committed_only: bool
) -> TopicAccounting:
    out = TopicAccounting()
    raw = read_topic(bootstrap, f"{prefix}.events.raw", partitions, committed_only)
    out.received = len(raw)
    sources: dict[tuple[int, int], str] = {}
    for record in read_topic(bootstrap, f"{prefix}.events.dlq", partitions, committed_only):
        letter = json.loads(record.value)
        source = (letter["source"]["partition"], letter["source"]["offset"])
        if source in sources:
            out.dead_letter_copies += 1
        sources[source] = letter["reason"]
        base64.b64decode(letter["raw"])  # must be the original bytes, base64
    out.invalid = Counter(sources.values())
    for record in read_topic(bootstrap, f"{prefix}.events.clean", partitions, committed_only):
        out.accepted_ids[json.loads(record.value)["event_id"]] += 1
    return out


# --- HTTP -------------------------------------------------------------------


def auth() -> dict[str, str]:
    """The bearer token when the run sets ``DMP_API_TOKEN`` (the workers inherit it)."""
    token = os.environ.get("DMP_API_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def request(method: str, url: str, timeout: float = 30) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body or text, headers); status 0 when no answer came (refused,
    reset, timed out)."""
    req = urllib.request.Request(url, method=method, headers=auth())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    except (OSError, http.client.HTTPException) as exc:
        return 0, str(exc), {}
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw.decode(errors="replace"), headers


def get_json(url: str) -> tuple[int, Any]:
    status, body, _ = request("GET", url)
    return status, body


def get_many(urls: list[str], threads: int = 12) -> list[tuple[int, Any]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(get_json, urls))


def probe_many(urls: list[str], threads: int = 12) -> list[tuple[int, Any, dict[str, str]]]:
    """Like :func:`get_many` with the headers, 10 s at most a request."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda url: request("GET", url, timeout=10), urls))


def health(base: str) -> dict[str, Any] | None:
    status, body = get_json(base + "/health")
    return body if status == 200 and isinstance(body, dict) else None
