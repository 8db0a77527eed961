"""The input gate reads a hole from Kafka, waiting out a broker that is away.

A stage that jumps past records asks the gate for them; giving up because the
broker is restarting would lose them for good (the stage's next offset moves
on). A broker of the test's own, stopped and started again mid-read.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from dmp_faust.settings import Settings
from dmp_faust.state import InputGate
from tests.chaos.cluster import Broker
from tests.integration.support import create_topic

pytestmark = pytest.mark.integration

TOPIC = "gate.in"


@dataclass
class Message:
    partition: int
    offset: int


@dataclass
class Delivered:
    """An event as Faust hands it to a stage, as far as the gate looks at it."""

    message: Message


class Topic:
    def get_topic_name(self) -> str:
        return TOPIC


class Consumer:
    """Faust's consumer, as far as the gate uses it."""

    def __init__(self) -> None:
        self.gaps: list[tuple[int, int, int]] = []

    async def _add_gap(self, tp: object, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp.partition, offset_from, offset_to))  # type: ignore[attr-defined]


async def _fill(bootstrap: str, records: int) -> None:
    await create_topic(bootstrap, TOPIC, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for offset in range(records):
            await producer.send_and_wait(TOPIC, str(offset).encode(), partition=0)
    finally:
        await producer.stop()


def test_input_gate_waits_out_a_broker_restart_to_read_a_hole(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka")
    broker.start()
    try:
        asyncio.run(_fill(broker.bootstrap, 20))
        broker.stop()  # the hole is asked for while the broker is down
        gate = InputGate("test", Topic(), Settings(kafka_bootstrap=broker.bootstrap))
        consumer = Consumer()

        async def read_across_restart() -> tuple[list[Delivered], bool]:
            reading = asyncio.create_task(
                gate.complete([Delivered(Message(0, 15))], {0: 5}.__getitem__, consumer)
            )
            await asyncio.sleep(4)
            waited = not reading.done()
            restart = threading.Thread(target=broker.start)
            restart.start()
            ordered = await asyncio.wait_for(reading, 120)
            await asyncio.to_thread(restart.join)
            await gate._reader.stop()
            return ordered, waited

        ordered, waited = asyncio.run(read_across_restart())
    finally:
        broker.stop()
    assert waited, "the gate gave up on the hole while the broker was down"
    assert [event.message.offset for event in ordered] == list(range(5, 16))
    assert [bytes(event.value) for event in ordered[:-1]] == [str(o).encode() for o in range(5, 15)]
    assert consumer.gaps == [(0, 0, 4), (0, 5, 14)]
