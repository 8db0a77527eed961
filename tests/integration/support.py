"""What the integration tests drive: worker processes, HTTP, Kafka, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, RecordMetadata
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
PROJECT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


# --- HTTP -------------------------------------------------------------------


def call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def metrics(url: str) -> dict[str, float]:
    """Samples of ``GET /metrics`` as ``{'name{label="v"}': value}`` (labels sorted)."""
    status, text = call("GET", url + "/metrics")
    assert status == 200, text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


# --- Kafka ------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` (replication factor 1) on the broker at ``bootstrap``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> list[RecordMetadata]:
    async def run() -> list[RecordMetadata]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            futures = [await producer.send(topic, value=value, key=key) for key, value in records]
            return list(await asyncio.gather(*futures))
        finally:
            await producer.stop()

    return asyncio.run(run())


def consume(
    bootstrap: str, topic: str, until: Callable[[list[ConsumerRecord]], bool], timeout: float = 60
) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning until ``until(records)`` holds."""

    async def run() -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        try:
            while not until(records):
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out reading {topic}: {len(records)} records")
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


# --- workers ----------------------------------------------------------------


@dataclass
class Worker:
    """A ``dmp-faust worker`` process with its own web port and data directory."""

    bootstrap: str
    prefix: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"worker-{self.port}.log"

    def start(self, timeout: float = 120) -> Worker:
        env = {
            **os.environ,
            "DMP_KAFKA_BOOTSTRAP": self.bootstrap,
            "DMP_TOPIC_PREFIX": self.prefix,
            "DMP_DATA_DIR": str(self.data_dir),
            "DMP_WEB_PORT": str(self.port),
            "DMP_WEB_HOST": "127.0.0.1",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dmp_faust.cli", "worker"],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(OSError):
                return call("GET", self.url + "/health")[0] == 200
            return False

        try:
            wait_until(healthy, timeout, f"worker {self.url} to be healthy", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def crashes(self) -> list[str]:
        """Agent crashes in the log: Faust restarts a crashed agent, so look for them."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "Crashed reason=" in line]

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> None:
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 30)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def run_cli(worker: Worker, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``dmp-faust ARGS`` with the settings of ``worker`` (its broker, prefix, data)."""
    env = {
        **os.environ,
        "DMP_KAFKA_BOOTSTRAP": worker.bootstrap,
        "DMP_TOPIC_PREFIX": worker.prefix,
        "DMP_DATA_DIR": str(worker.data_dir),
        **worker.env,
    }
    return subprocess.run(
        [sys.executable, "-m", "dmp_faust.cli", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
