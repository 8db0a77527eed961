"""The processes of one chaos run: a broker of its own and the workers, plus a scraper
that remembers the last ``/metrics`` of every worker process before it died."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dmp_faust import kafka_local
from tests.integration.support import Worker, free_port, metrics


@dataclass
class Broker:
    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        began = time.monotonic()
        kafka_local.start(self.port, self.data_dir, controller_port=self.controller_port)
        return time.monotonic() - began

    def stop(self) -> None:
        kafka_local.stop(self.data_dir)


class Scraper:
    """Scrapes every live worker's ``/metrics`` each second; keeps the last scrape of
    each process (by pid), so counters of a process killed with -9 are not forgotten.
    Processes in ``paused`` (stopped with SIGSTOP) are left alone."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.paused: set[int] = set()
        self.last: dict[int, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def scrape(self, worker: Worker) -> None:
        process = worker.process
        if process is None or process.poll() is not None or process.pid in self.paused:
            return
        with contextlib.suppress(OSError, AssertionError, ValueError):
            samples = metrics(worker.url)
            with self._lock:
                self.last[process.pid] = samples

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            for worker in list(self.workers):
                self.scrape(worker)

    def totals(self, prefix: str) -> float:
        """A counter summed over its labels and over every process lifetime seen."""
        with self._lock:
            return sum(
                value
                for samples in self.last.values()
                for name, value in samples.items()
                if name == prefix or name.startswith(prefix + "{")
            )

    def live_total(self, prefix: str, workers: list[Worker]) -> float:
        with self._lock:
            pids = {w.process.pid for w in workers if w.process and w.process.poll() is None}
            return sum(
                value
                for pid, samples in self.last.items()
                if pid in pids
                for name, value in samples.items()
                if name == prefix or name.startswith(prefix + "{")
            )
