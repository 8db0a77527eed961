"""A ``dmp-faust worker`` child process, and what the benchmark asks of it over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.config import PROJECT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerDied(RuntimeError):
    pass


@dataclass
class WorkerProcess:
    """One worker: its own process group, web port and data directory; log in ``log_path``."""

    bootstrap: str
    prefix: str
    partitions: int
    data_dir: Path
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # DMP_* settings of this worker

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker was not started"
        return self.process.pid

    def start(self) -> None:
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "DMP_KAFKA_BOOTSTRAP": self.bootstrap,
            "DMP_TOPIC_PREFIX": self.prefix,
            "DMP_PARTITIONS": str(self.partitions),
            "DMP_DATA_DIR": str(self.data_dir),
            "DMP_WEB_PORT": str(self.port),
            "DMP_WEB_HOST": "127.0.0.1",
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dmp_faust.cli", "worker"],
                cwd=PROJECT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise WorkerDied(f"the worker exited with {self.process.returncode}:\n{self.tail()}")

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float) -> float:
        """Poll ``GET /health`` every 50 ms; the monotonic time of the first 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(self.url + "/health") as response:
                    if response.status == 200:
                        return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the worker was not healthy after {timeout:g} s:\n{self.tail()}")

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """``GET /metrics``, each sample name summed over its labels."""
        async with session.get(self.url + "/metrics") as response:
            response.raise_for_status()
            text = await response.text()
        return sum_samples(text)

    async def get_json(self, session: aiohttp.ClientSession, path: str) -> Any:
        async with session.get(self.url + path) as response:
            response.raise_for_status()
            return await response.json()

    def memory_kib(self) -> dict[str, int]:
        """``VmHWM`` (peak resident set) and ``VmRSS`` from ``/proc/<pid>/status``."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0])
        return found

    def kill(self) -> None:
        """``kill -9`` the worker's process group and reap it."""
        self._signal(signal.SIGKILL, 30)

    def stop(self, timeout: float = 60) -> None:
        self._signal(signal.SIGTERM, timeout)

    def crashes(self) -> list[str]:
        """The log's "agent crashed" lines (Faust restarts a crashed agent after a pause)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "Crashed reason=" in line]

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def sum_samples(text: str) -> dict[str, float]:
    """Prometheus text → ``{sample name: value summed over all label sets}``."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals
