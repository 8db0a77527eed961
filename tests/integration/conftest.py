"""One real Kafka broker for the whole test session; workers per module or test.

The broker is the project's own (``dmp_faust.kafka_local``): Apache Kafka in
KRaft mode from Maven Central's jars, on free ports, in a temporary
directory, stopped when the session ends. Each worker gets a fresh topic
prefix, so tests never see each other's topics, tables or consumer groups.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmp_faust import kafka_local
from tests.integration.support import Worker, free_port

_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("kafka")
    broker = kafka_local.start(free_port(), data_dir, controller_port=free_port())
    try:
        yield broker.bootstrap
    finally:
        kafka_local.stop(data_dir)


WorkerFactory = Callable[..., Worker]


def _factory(kafka: str, root: Path, workers: list[Worker]) -> WorkerFactory:
    def make(prefix: str | None = None, data_dir: Path | None = None, **env: str) -> Worker:
        prefix = prefix or f"t{next(_counter)}x{uuid.uuid4().hex[:6]}"
        data_dir = data_dir or root / f"{prefix}-{len(workers)}"
        worker = Worker(kafka, prefix, data_dir, env=dict(env))
        workers.append(worker)
        return worker

    return make


@pytest.fixture
def make_worker(kafka: str, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Workers for one test, stopped after it."""
    workers: list[Worker] = []
    yield _factory(kafka, tmp_path, workers)
    for worker in workers:
        worker.stop()
    assert not [line for worker in workers for line in worker.crashes()]


@pytest.fixture(scope="module")
def module_worker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One running worker shared by the tests of a module."""
    workers: list[Worker] = []
    worker = _factory(kafka, tmp_path_factory.mktemp("worker"), workers)().start()
    yield worker
    worker.stop()
    assert not worker.crashes()
