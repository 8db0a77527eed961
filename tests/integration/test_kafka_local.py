"""The local broker of ``dmp-faust kafka``: start, status, a real round trip, stop.

These tests start brokers of their own (not the session's), in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dmp_faust import kafka_local
from dmp_faust.kafka_local import BrokerInfo
from tests.integration.support import create_topic, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerInfo]:
    info = kafka_local.start(free_port(), tmp_path / "kafka", controller_port=free_port())
    try:
        yield info
    finally:
        kafka_local.stop(info.data_dir)


async def _round_trip(bootstrap: str, topic: str) -> tuple[bytes | None, bytes | None]:
    """Create ``topic``, produce one record to it, and read it back."""
    await create_topic(bootstrap, topic, 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"hello": 1}', key=b"k1")
    finally:
        await producer.stop()
    return await _first_record(bootstrap, topic)


async def _first_record(bootstrap: str, topic: str) -> tuple[bytes | None, bytes | None]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    return record.key, record.value


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_start_round_trip_stop(broker: BrokerInfo) -> None:
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert kafka_local.status(broker.data_dir) == broker
    assert (broker.data_dir / "kafka.pid").read_text().strip() == str(broker.pid)

    key, value = asyncio.run(_round_trip(broker.bootstrap, "kafka-local-test"))
    assert (key, value) == (b"k1", b'{"hello": 1}')

    assert kafka_local.stop(broker.data_dir) is True
    assert kafka_local.status(broker.data_dir) is None
    assert not (broker.data_dir / "kafka.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(broker.pid, 0)
    assert not _accepts(broker.port)
    assert kafka_local.stop(broker.data_dir) is False  # nothing left to stop


def test_start_twice_is_idempotent(broker: BrokerInfo, capsys: pytest.CaptureFixture[str]) -> None:
    again = kafka_local.start(broker.port, broker.data_dir)
    assert again == broker

    argv = ["start", "--port", str(broker.port), "--data-dir", str(broker.data_dir)]
    assert kafka_local.main(argv) == 0
    assert "already running" in capsys.readouterr().out
    assert kafka_local.main(["status", "--data-dir", str(broker.data_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"running ({broker})"


def test_restart_keeps_data_and_refuses_a_taken_port(broker: BrokerInfo) -> None:
    asyncio.run(_round_trip(broker.bootstrap, "kept"))
    assert kafka_local.stop(broker.data_dir)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(kafka_local.KafkaLocalError, match="already in use"):
            kafka_local.start(broker.port, broker.data_dir, controller_port=free_port())
    restarted = kafka_local.start(broker.port, broker.data_dir, controller_port=free_port())
    assert restarted.pid != broker.pid
    assert kafka_local.status(broker.data_dir) == restarted
    assert asyncio.run(_first_record(restarted.bootstrap, "kept")) == (b"k1", b'{"hello": 1}')


def test_stop_and_status_when_nothing_runs(tmp_path: Path) -> None:
    assert kafka_local.status(tmp_path) is None
    assert kafka_local.stop(tmp_path) is False
    assert kafka_local.main(["status", "--data-dir", str(tmp_path)]) == 1
    assert kafka_local.main(["stop", "--data-dir", str(tmp_path)]) == 0
