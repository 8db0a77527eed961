"""What one take of a stage may do: expiry sweeps that see the take's own writes,
and no more items between two write phases than the cap."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from dmp_faust.domain.batches import encode_batch
from dmp_faust.domain.events import Event, validate_bytes
from dmp_faust.state import TAKE_ITEMS
from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, consume, metrics, produce, wait_until

pytestmark = pytest.mark.integration

SWEEP_EVERY = 500  # agents.deduplicate: its sweeper reads a slice every 500 events


def produce_one_batch(worker: Worker, values: list[bytes]) -> None:
    """``values`` to partition 0 of the raw topic as one record batch, so that the
    intake reads them in one fetch and de-duplication handles them in one take."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, max_batch_size=1 << 20)
        await producer.start()
        try:
            batch = producer.create_batch()
            for value in values:
                assert batch.append(key=None, value=value, timestamp=None) is not None
            await (await producer.send_batch(batch, f"{worker.prefix}.events.raw", partition=0))
        finally:
            await producer.stop()

    asyncio.run(run())


def outcomes(worker: Worker) -> tuple[float, float]:
    samples = metrics(worker.url)
    return samples["dmp_events_accepted_total"], samples["dmp_events_duplicate_total"]


def test_an_id_seen_again_after_the_horizon_is_not_swept_in_the_same_take(
    make_worker: WorkerFactory,
) -> None:
    """The sweep of one take must not delete the sighting that take wrote.

    One partition, a horizon of one minute. ``x`` is seen once and stored. Then
    one take: an event five minutes later (``x``'s sighting is now past the
    horizon, but still in RocksDB: no sweep ran yet), ``x`` again (new: stored
    anew, in the take's pending writes), fillers up to the sweep, which finds
    the old sighting expired in RocksDB, and ``x`` a third time: a duplicate of
    the second. Judged by RocksDB alone, the sweep deleted the second sighting
    and the third copy counted once more.
    """
    worker = make_worker(DMP_PARTITIONS="1", DMP_DEDUP_HORIZON_MS=str(MINUTE)).start()
    anon = f"x-{uuid.uuid4().hex[:8]}"
    first = event("page_view", T0, anon, url="https://a.example/news/1")
    produce_one_batch(worker, [encode(first)])
    wait_until(lambda: outcomes(worker) == (1, 0), 60, "the first sighting to be stored")

    later = T0 + 5 * MINUTE
    fillers = SWEEP_EVERY - 3  # ticks: first (1), later (2), again (3), fillers, third
    take = [event("page_view", later, f"f-{uuid.uuid4().hex[:8]}")]
    take.append(first)  # past the horizon: new again
    take += [event("page_view", later, f"f-{uuid.uuid4().hex[:8]}") for _ in range(fillers)]
    take.append(first)  # within the horizon of the second sighting: a duplicate
    produce_one_batch(worker, [encode(body) for body in take])

    total = 1 + len(take)
    wait_until(lambda: sum(outcomes(worker)) == total, 60, "every event to be judged")
    assert outcomes(worker) == (total - 1, 1)
    status, profile = call("GET", f"{worker.url}/profiles/{anon}")
    assert status == 200, profile
    assert profile["counts"] == {"page_view": 2}


def test_a_stage_writes_after_at_most_the_item_cap_however_big_its_take(
    make_worker: WorkerFactory,
) -> None:
    """40 ``events.valid`` records of 1,000 events each, sent at once: Faust hands
    de-duplication takes of up to 64 records (64,000 events). Its next input
    offset, stored after each write phase, must never move by more records
    than the item cap holds, and every event still gets through."""
    worker = make_worker(DMP_PARTITIONS="1").start()
    per_record, records = 1000, 40
    bodies = [
        [
            event("page_view", T0 + n, f"c-{n % 500}")
            for n in range(r * per_record, (r + 1) * per_record)
        ]
        for r in range(records)
    ]
    valid = [[validate_bytes(encode(body), T0) for body in batch] for batch in bodies]
    assert all(isinstance(item, Event) for batch in valid for item in batch)
    produce(
        worker.bootstrap,
        f"{worker.prefix}.events.valid",
        [(None, encode_batch(batch)) for batch in valid],  # type: ignore[arg-type]
    )
    total = per_record * records
    wait_until(lambda: outcomes(worker)[0] == total, 120, "every event to be accepted")

    key = b"deduplicate:next:0"
    changelog = consume(
        worker.bootstrap,
        f"{worker.prefix}-stream_times-changelog",
        lambda got: any(r.key == key and int(r.value) == records for r in got),
    )
    offsets = [int(r.value) for r in changelog if r.key == key]
    steps = [b - a for a, b in zip([0, *offsets], offsets, strict=False)]
    assert max(steps) <= TAKE_ITEMS // per_record, steps
    assert sum(steps) == records
