"""What one take of a stage may do: expiry sweeps that see the take's own writes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, metrics, wait_until

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
