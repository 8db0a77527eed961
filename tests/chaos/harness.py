"""One chaos run: a broker of its own, the load in chunks, and the faults between them.

Phases, over ``chunks`` equal slices of the load (20 by default):

a. one worker; after ``kills`` chunks chosen by the seed, at a random moment
   while it works through the chunk, ``kill -9`` and a restart on the same
   data directory and port;
b. a second worker (empty disk) joins; once the partitions are split, two
   more chunks; then one of the two (chosen by the seed) is killed for good.
   The survivor must own every partition and serve every campaign and a
   sample of profiles within ``takeover_limit_s``, none below what it served
   before the kill;
c. the broker is stopped (controlled shutdown) while the survivor works, and
   started again on the same data directory and ports after
   ``broker_down_s``; the worker must reconnect and go on. A worker that
   exits or hangs instead is a finding: it is recorded, and restarted as a
   supervisor would;

then the rest of the load, and the wait until the group has consumed every
input topic. Everything that happened is in :class:`Run`.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.cluster import Broker, Scraper
from tests.chaos.load import Load, Record
from tests.chaos.model import Expected
from tests.chaos.observe import INPUT_TOPICS, get_many, group_lag, health, produce
from tests.integration.support import Worker, wait_until

PARTITIONS = 8


@dataclass(frozen=True)
class ChaosConfig:
    events: int = 200_000
    kills: int = 5
    seed: int = 20210301
    guarantee: str = "at_least_once"
    chunks: int = 20
    takeover_limit_s: float = 30.0
    broker_down_s: float = 5.0
    drain_timeout_s: float = 1800.0
    assumed_rate: float = 8000.0  # ev/s, to aim the kills inside a chunk's processing
    phases: str = "abc"  # which faults to inject (to find which one a discrepancy comes from)


@dataclass
class Run:
    config: ChaosConfig
    prefix: str
    kills: list[dict[str, Any]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    takeover: dict[str, Any] = field(default_factory=dict)
    broker_restart: dict[str, Any] = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)
    produced: int = 0
    workers: list[Worker] = field(default_factory=list)
    seconds: float = 0.0


def say(text: str) -> None:
    print(f"chaos: {text}", file=sys.stderr, flush=True)


class Chaos:
    def __init__(self, config: ChaosConfig, load: Load, expected: Expected, root: Path) -> None:
        self.config, self.load, self.expected, self.root = config, load, expected, root
        self.rng = random.Random(config.seed + 1)
        self.broker = Broker(root / "kafka")
        self.run = Run(config, f"chaos{uuid.uuid4().hex[:6]}")
        self.scraper = Scraper()
        self.live: list[Worker] = []
        self.keep = False  # keep the directory (logs) when something went wrong

    # --- processes ------------------------------------------------------------

    def new_worker(self, name: str) -> Worker:
        env = {
            "DMP_PROCESSING_GUARANTEE": self.config.guarantee,
            "DMP_PARTITIONS": str(PARTITIONS),
            "DMP_LOG_LEVEL": "warn",
        }
        worker = Worker(self.broker.bootstrap, self.run.prefix, self.root / name, env=env)
        self.run.workers.append(worker)
        self.scraper.workers.append(worker)
        return worker

    def lag(self) -> dict[str, tuple[int, int]]:
        return group_lag(self.broker.bootstrap, self.run.prefix, PARTITIONS)

    def backlog(self) -> int:
        try:
            return sum(end - done for end, done in self.lag().values())
        except Exception:  # the broker may be away
            return -1

    def kill(self, worker: Worker) -> None:
        self.scraper.scrape(worker)
        worker.kill()

    def send(self, chunk: list[Record]) -> None:
        self.run.produced += produce(self.broker.bootstrap, f"{self.run.prefix}.events.raw", chunk)

    # --- the run ---------------------------------------------------------------

    def execute_and_compare(self) -> Any:
        """The phases, then the comparison while the survivor still serves."""
        from tests.chaos.report import ModeResult, compare_all

        began = time.monotonic()
        say(f"{self.config.guarantee}: broker up in {self.broker.start():.1f} s")
        try:
            with self.scraper:
                self._phases()
                self.collect_final_metrics()
            compared = time.monotonic()
            checks, drift = compare_all(self)
            compare_s = time.monotonic() - compared
        except BaseException:
            self.keep = True
            raise
        finally:
            for worker in self.run.workers:
                worker.stop()
            self.broker.stop()
            self.run.seconds = time.monotonic() - began
        result = ModeResult(self.config, self.run, checks, drift, self.run.seconds, compare_s)
        self.keep = not result.ok
        return result

    def _phases(self) -> None:
        config = self.config
        records = self.load.records
        size = -(-len(records) // config.chunks)
        chunks = [records[i : i + size] for i in range(0, len(records), size)]
        a_end = max(config.kills + 1, len(chunks) // 2)
        if a_end + 5 > len(chunks):
            raise ValueError(f"{len(chunks)} chunks are too few for {config.kills} kills")
        kill_after = set(self.rng.sample(range(1, a_end), config.kills))
        if "a" not in config.phases:
            kill_after = set()
        first = self.new_worker("w1").start()
        self.live = [first]
        say(f"worker {first.url} up; prefix {self.run.prefix}; {len(records)} events")
        for n in range(a_end):
            self.send(chunks[n])
            if n in kill_after:
                self.kill_and_restart(first, len(chunks[n]))
        rest = a_end
        if "b" in config.phases:
            self.two_workers(chunks[a_end : a_end + 3])
            rest += 3
        if "c" in config.phases:
            self.broker_bounce(chunks[rest : rest + 2])
            rest += 2
        for chunk in chunks[rest:]:
            self.send(chunk)
        self.wait_drained()

    def kill_and_restart(self, worker: Worker, chunk_len: int) -> None:
        delay = self.rng.uniform(0.05, 0.8) * chunk_len / self.config.assumed_rate
        time.sleep(delay)
        self.kill(worker)
        backlog = self.backlog()
        began = time.monotonic()
        worker.start(timeout=180)
        kill = {
            "phase": "a",
            "after_s": round(delay, 2),
            "backlog_at_kill": backlog,
            "restart_to_healthy_s": round(time.monotonic() - began, 1),
        }
        self.run.kills.append(kill)
        say(f"kill -9 #{len(self.run.kills)}: {kill}")

    # --- b: a second worker, then one of the two lost for good -------------------

    def two_workers(self, chunks: list[list[Record]]) -> None:
        first = self.live[0]
        second = self.new_worker("w2").start(timeout=180)
        self.live = [first, second]
        began = time.monotonic()
        wait_until(lambda: self.split(first, second), 180, "two workers to split the partitions")
        self.run.takeover["split_s"] = round(time.monotonic() - began, 1)
        for chunk in chunks:
            self.send(chunk)
        victim = self.rng.choice(self.live)
        survivor = second if victim is first else first
        time.sleep(self.rng.uniform(0.05, 0.8) * len(chunks[-1]) / self.config.assumed_rate)
        probes = self.probe_urls(survivor)
        before = dict(zip(probes, get_many(probes), strict=True))
        self.kill(victim)
        killed_at = time.monotonic()
        self.live = [survivor]
        self.run.kills.append({"phase": "b", "for_good": True, "backlog_at_kill": self.backlog()})
        served = self.wait_served(survivor, before, killed_at)
        self.run.takeover.update(
            victim=victim.data_dir.name,
            survivor=survivor.data_dir.name,
            probes=len(probes),
            serve_all_s=served,
            limit_s=self.config.takeover_limit_s,
        )
        say(f"takeover: {self.run.takeover}")

    def split(self, first: Worker, second: Worker) -> bool:
        for worker in (first, second):
            if worker.process is not None and worker.process.poll() is not None:
                raise AssertionError(
                    f"worker {worker.data_dir.name} exited with {worker.process.returncode} "
                    f"while the second worker joined: {last_error(worker)}"
                )
        a, b = health(first.url), health(second.url)
        if not a or not b:
            return False
        pa, pb = set(a["active_partitions"]), set(b["active_partitions"])
        return bool(pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS)))

    def probe_urls(self, worker: Worker) -> list[str]:
        """Every campaign over the whole load, and up to 300 profile lookups."""
        frm, to = self.span()
        urls = [f"{worker.url}/campaigns/{c}/stats?from={frm}&to={to}" for c in self.load.campaigns]
        ids = sorted(self.expected.lookups())
        step = max(1, len(ids) // 300)
        return urls + [f"{worker.url}/profiles/{i}" for i in ids[::step]]

    def span(self) -> tuple[int, int]:
        minute = 60_000
        first = self.expected.first_ms - self.expected.first_ms % minute
        last = self.expected.last_ms - self.expected.last_ms % minute + minute
        return first, last

    def wait_served(
        self, survivor: Worker, before: dict[str, tuple[int, Any]], killed_at: float
    ) -> float | None:
        """Seconds from the kill until the survivor owns every partition and serves every
        probe with 200 (404 only for a profile that was 404 before), none below before.
        The milestones on the way go to ``run.takeover["timeline"]``."""
        deadline = killed_at + max(120.0, 3 * self.config.takeover_limit_s)
        timeline: list[str] = []
        last_problem = ""
        while time.monotonic() < deadline:
            elapsed = round(time.monotonic() - killed_at, 1)
            body = health(survivor.url)
            state = "healthy" if body else "unhealthy"
            if body:
                state += f" owning {len(body['active_partitions'])}"
            if not timeline or not timeline[-1].endswith(state):
                timeline.append(f"{elapsed} s {state}")
            self.run.takeover["timeline"] = timeline
            if body and set(body["active_partitions"]) == set(range(PARTITIONS)):
                answers = get_many(list(before))
                problems = [
                    f"{url.split('/', 3)[3]}: {now[0]}"
                    for url, now in zip(before, answers, strict=True)
                    if not served_again(before[url], now)
                ]
                if not problems:
                    return round(time.monotonic() - killed_at, 1)
                last_problem = f"{len(problems)} probes not served, e.g. {problems[:2]}"
                timeline.append(f"{elapsed} s {last_problem}")
            time.sleep(0.5)
        self.run.findings.append(f"takeover: survivor did not serve every key: {last_problem}")
        return None

    # --- c: the broker goes away and comes back --------------------------------

    def broker_bounce(self, chunks: list[list[Record]]) -> None:
        self.send(chunks[0])
        time.sleep(self.rng.uniform(0.05, 0.5) * len(chunks[0]) / self.config.assumed_rate)
        backlog = self.backlog()
        began = time.monotonic()
        self.broker.stop()
        stopped_s = time.monotonic() - began
        time.sleep(self.config.broker_down_s)
        alive_while_down = [w.process is not None and w.process.poll() is None for w in self.live]
        up_s = self.broker.start()
        info: dict[str, Any] = {
            "backlog_at_stop": backlog,
            "stop_s": round(stopped_s, 1),
            "down_s": self.config.broker_down_s,
            "start_s": round(up_s, 1),
            "workers_alive_while_down": alive_while_down,
        }
        restarted = time.monotonic()
        self.send(chunks[1])
        for worker in self.live:
            info[worker.data_dir.name] = self.recovered(worker, restarted)
        self.run.broker_restart = info
        say(f"broker restart: {info}")

    def recovered(self, worker: Worker, since: float) -> dict[str, Any]:
        """Whether the worker went on by itself after the broker came back."""
        deadline = since + 120
        start_done = self.consumed_raw()
        while time.monotonic() < deadline:
            if worker.process is not None and worker.process.poll() is not None:
                code = worker.process.returncode
                self.run.findings.append(
                    f"broker restart: worker {worker.data_dir.name} exited with {code}; "
                    f"log: {last_error(worker)}"
                )
                worker.start(timeout=180)  # the supervisor's job
                return {"went_on": False, "exited": code, "restarted_by_harness": True}
            done = self.consumed_raw()
            moved = done is not None and start_done is not None and done > start_done
            if moved and health(worker.url):
                return {"went_on": True, "resumed_after_s": round(time.monotonic() - since, 1)}
            start_done = start_done if start_done is not None else done
            time.sleep(1.0)
        self.run.findings.append(
            f"broker restart: worker {worker.data_dir.name} made no progress for 120 s; "
            f"log: {last_error(worker)}; killed and restarted by the harness"
        )
        self.kill(worker)
        worker.start(timeout=180)
        return {"went_on": False, "hung": True, "restarted_by_harness": True}

    def consumed_raw(self) -> int | None:
        try:
            return self.lag()["events.raw"][1]
        except Exception:
            return None

    # --- the end ---------------------------------------------------------------

    def wait_drained(self) -> None:
        """Until the raw topic is consumed and the group's offsets stay still for 10 s
        with no lag left (a transactional topic may keep one commit marker per
        partition past the last record)."""
        began = time.monotonic()
        allowed = PARTITIONS * len(INPUT_TOPICS) if self.config.guarantee == "exactly_once" else 0
        last: Any = None
        still_since = time.monotonic()
        while time.monotonic() - began < self.config.drain_timeout_s:
            for worker in self.live:
                if worker.process is not None and worker.process.poll() is not None:
                    self.run.findings.append(
                        f"drain: worker {worker.data_dir.name} exited with "
                        f"{worker.process.returncode}; log: {last_error(worker)}"
                    )
                    worker.start(timeout=180)
            try:
                lag = self.lag()
            except Exception:
                time.sleep(1)
                continue
            residual = sum(end - done for end, done in lag.values())
            if lag != last:
                last, still_since = lag, time.monotonic()
            elif (
                lag["events.raw"][0] == lag["events.raw"][1]
                and residual <= allowed
                and time.monotonic() - still_since >= 10
            ):
                seconds = round(time.monotonic() - began, 1)
                self.run.drain = {"seconds": seconds, "residual": residual}
                return
            time.sleep(1)
        self.run.drain = {"seconds": None, "lag": last}
        self.run.findings.append(f"drain: not drained after {self.config.drain_timeout_s} s")

    def collect_final_metrics(self) -> None:
        for worker in self.live:
            self.scraper.scrape(worker)


def served_again(before: tuple[int, Any], now: tuple[int, Any]) -> bool:
    status, body = now
    if status == 404 and before[0] == 404:
        return True
    if status != 200:
        return False
    if before[0] != 200:
        return True
    if "totals" in body:
        old, new = before[1]["totals"], body["totals"]
        return all(new[k] >= old[k] for k in ("impressions", "clicks", "conversions"))
    old_counts, new_counts = before[1]["counts"], body["counts"]
    return all(new_counts.get(k, 0) >= n for k, n in old_counts.items())


def last_error(worker: Worker) -> str:
    lines = [
        line
        for line in worker.tail(400).splitlines()
        if "Error" in line or "error" in line or "Crashed" in line
    ]
    return (lines[-1] if lines else worker.tail(3)).strip()[:300]


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
