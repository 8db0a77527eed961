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

p. with two workers (one joins if only one is left), a
   chunk, and while they work through it one of the two (chosen by the seed)
   is stopped with ``SIGSTOP`` for ``pause_factor`` times the session timeout:
   the other takes its partitions and the next chunk is produced meanwhile;
   then ``SIGCONT``. The woken worker (a zombie with a take half done) must
   neither overwrite the new owner's tables nor count anything twice: the
   final comparison decides. It must rejoin, or it is a finding (and
   restarted);

a comes first; b, c and p follow in the order the phases setting names them
(``abcp`` by default); then the rest of the load, and the wait until the
group has consumed every input topic. Erasures (:mod:`.erasures`) are sent
while all this goes on.

Takeover probes (b and p): every campaign and up to 300 profiles are read
from the survivor before the fault and again until it serves them all. A
404 for a key that answered 200 before (and the model says exists), or a
count below what it answered before, is a mismatch, whenever it comes; a 503
with ``Retry-After`` is the allowed answer while a partition recovers and is
asked again. Everything that happened is in :class:`Run`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.cluster import Broker, Scraper
from tests.chaos.erasures import Eraser, Planned, plan
from tests.chaos.load import Load, Record, linked_people
from tests.chaos.model import Expected
from tests.chaos.observe import INPUT_TOPICS, get_many, group_lag, health, probe_many, produce
from tests.integration.support import Worker, wait_until

PARTITIONS = 8
HISTORY_FLUSH_S = 5  # DMP_HISTORY_FLUSH_S of the workers
HISTORY_ERASE_S = 20  # DMP_HISTORY_ERASE_S: erased rows swept out every 5 s
HISTORY_PATIENCE_S = 90  # how long the history check waits for flushes and sweeps
PHASE_CHUNKS = {"b": 3, "p": 2, "c": 2}  # chunks each later phase sends


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
    phases: str = "abcp"  # which faults to inject, in this order after a (to find which one a
    # discrepancy comes from)
    session_timeout_s: int = 6  # DMP_SESSION_TIMEOUT_S of the workers
    pause_factor: float = 2.0  # phase p stops a worker for this many session timeouts
    erasures: bool = True  # erase about erase_share of the linked users
    erase_share: float = 0.01
    erase_min: int = 3
    erase_limit_s: float = 120.0  # how long one DELETE is tried again while no worker answers
    confirm_timeout_s: float = 120.0  # how long GET /erasures is polled for "erased"


@dataclass
class Run:
    config: ChaosConfig
    prefix: str
    kills: list[dict[str, Any]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    takeover: dict[str, Any] = field(default_factory=dict)
    pause: dict[str, Any] = field(default_factory=dict)
    broker_restart: dict[str, Any] = field(default_factory=dict)
    probes: int = 0  # takeover probes (b and p) of keys that answered 200 before
    false_probes: dict[str, str] = field(default_factory=dict)  # "<phase> <key>" -> answer
    planned: list[Planned] = field(default_factory=list)
    eraser: Eraser | None = None
    confirm_s: float | None = None
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
        self.history = root / "history"
        self.run = Run(config, f"chaos{uuid.uuid4().hex[:6]}")
        self.scraper = Scraper()
        self.live: list[Worker] = []
        self.keep = False  # keep the directory (logs) when something went wrong
        records = load.records
        self.chunk_size = -(-len(records) // config.chunks)
        self.chunks = [
            records[i : i + self.chunk_size] for i in range(0, len(records), self.chunk_size)
        ]

    # --- processes ------------------------------------------------------------

    def new_worker(self, name: str) -> Worker:
        env = {
            "DMP_PROCESSING_GUARANTEE": self.config.guarantee,
            "DMP_PARTITIONS": str(PARTITIONS),
            "DMP_LOG_LEVEL": "warn",
            "DMP_SESSION_TIMEOUT_S": str(self.config.session_timeout_s),
            # one history for the cluster, as on a shared store; flushed and erased soon
            "DMP_HISTORY_URI": str(self.history),
            "DMP_HISTORY_FLUSH_S": str(HISTORY_FLUSH_S),
            "DMP_HISTORY_ERASE_S": str(HISTORY_ERASE_S),
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

    def send_chunk(self, n: int) -> None:
        """Chunk ``n``, split after the last record of each person erased "in flight"
        there: the DELETE goes out as soon as that record is acknowledged."""
        start = n * self.chunk_size
        chunk = self.chunks[n]
        for erasure in (p for p in self.run.planned if p.chunk == n and p.moment == "in_flight"):
            cut = erasure.after + 1 - start
            self.send(chunk[:cut])
            chunk, start = chunk[cut:], erasure.after + 1
            self.erase(erasure)
        if chunk:
            self.send(chunk)

    def erase(self, erasure: Planned, first: str | None = None) -> None:
        if self.run.eraser is not None:
            self.run.eraser.submit(erasure, first)

    def erase_near(self, n: int, first: str | None = None) -> None:
        """The erasures planned near the fault that follows chunk ``n``."""
        for erasure in self.run.planned:
            if erasure.chunk == n and erasure.moment != "in_flight":
                self.erase(erasure, first)

    def live_urls(self) -> list[str]:
        return [w.url for w in list(self.live)]

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
                self.resume(worker)
                worker.stop()
            self.broker.stop()
            self.run.seconds = time.monotonic() - began
        result = ModeResult(self.config, self.run, checks, drift, self.run.seconds, compare_s)
        self.keep = not result.ok
        return result

    def layout(self) -> tuple[int, dict[str, range]]:
        """Phase a's chunks ``[0, a_end)``, then each later phase's chunks, in the order
        the phases setting names them."""
        config, count = self.config, len(self.chunks)
        needed = sum(n for phase, n in PHASE_CHUNKS.items() if phase in config.phases)
        a_end = max(config.kills + 1, min(count // 2, count - needed))
        if a_end + needed > count:
            raise ValueError(f"{count} chunks are too few for {config.kills} kills")
        ranges, start = {}, a_end
        for phase in config.phases:
            if phase in PHASE_CHUNKS:
                ranges[phase] = range(start, start + PHASE_CHUNKS[phase])
                start += PHASE_CHUNKS[phase]
        return a_end, ranges

    def plan_erasures(self, kill_after: set[int], ranges: dict[str, range]) -> None:
        """Which linked users are erased and when; the model forgets them now, so
        no probe and no check expects their data."""
        faults = [(ranges["b"][-1], "near_kill")] if "b" in ranges else []
        faults += [(ranges["p"][0], "near_pause")] if "p" in ranges else []
        faults += [(n, "near_kill") for n in sorted(kill_after)]
        config = self.config
        rng = random.Random(config.seed + 3)
        linked = linked_people(self.load)
        self.run.planned = plan(
            linked, self.chunk_size, faults, rng, config.erase_share, config.erase_min
        )
        for erasure in self.run.planned:
            self.expected.erase(erasure.user_id)
        self.run.eraser = Eraser(self.live_urls, rng, self.run.prefix, config.erase_limit_s)
        moments = [p.moment for p in self.run.planned]
        say(f"erasing {len(moments)} of {len(linked)} linked users: {moments}")

    def _phases(self) -> None:
        config = self.config
        a_end, ranges = self.layout()
        kill_after = set(self.rng.sample(range(1, a_end), config.kills))
        if "a" not in config.phases:
            kill_after = set()
        if config.erasures:
            self.plan_erasures(kill_after, ranges)
        first = self.new_worker("w1").start()
        self.live = [first]
        say(f"worker {first.url} up; prefix {self.run.prefix}; {len(self.load.records)} events")
        for n in range(a_end):
            self.send_chunk(n)
            if n in kill_after:
                self.kill_and_restart(first, n)
        faults = {"b": self.two_workers, "c": self.broker_bounce, "p": self.pause_one}
        for phase, chunks in ranges.items():
            faults[phase](chunks)
        for n in range(max(r.stop for r in [range(a_end), *ranges.values()]), len(self.chunks)):
            self.send_chunk(n)
        if self.run.eraser is not None:
            self.run.eraser.wait()
        self.wait_drained()
        if self.run.eraser is not None:
            self.run.confirm_s = self.run.eraser.confirm(
                self.live_urls(), self.config.confirm_timeout_s
            )

    def kill_and_restart(self, worker: Worker, n: int) -> None:
        self.erase_near(n)
        delay = self.rng.uniform(0.05, 0.8) * len(self.chunks[n]) / self.config.assumed_rate
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

    def two_workers(self, chunks: range) -> None:
        first = self.live[0]
        second = self.new_worker("w2").start(timeout=180)
        self.live = [first, second]
        began = time.monotonic()
        wait_until(lambda: self.split(first, second), 180, "two workers to split the partitions")
        self.run.takeover["split_s"] = round(time.monotonic() - began, 1)
        for n in chunks:
            self.send_chunk(n)
        victim = self.rng.choice(self.live)
        survivor = second if victim is first else first
        self.erase_near(chunks[-1])
        time.sleep(
            self.rng.uniform(0.05, 0.8) * len(self.chunks[chunks[-1]]) / self.config.assumed_rate
        )
        probes = self.probe_urls(survivor)
        before = dict(zip(probes, get_many(probes), strict=True))
        self.kill(victim)
        killed_at = time.monotonic()
        self.live = [survivor]
        self.run.kills.append({"phase": "b", "for_good": True, "backlog_at_kill": self.backlog()})
        deadline = killed_at + max(120.0, 3 * self.config.takeover_limit_s)
        watch = self.watch_takeover("b", survivor, before, killed_at, deadline)
        if watch["serve_all_s"] is None:
            self.run.findings.append(
                f"takeover: survivor did not serve every key: {watch['last_problem']}"
            )
        self.run.takeover.update(
            victim=victim.data_dir.name,
            survivor=survivor.data_dir.name,
            probes=len(probes),
            serve_all_s=watch["serve_all_s"],
            limit_s=self.config.takeover_limit_s,
            timeline=watch["timeline"],
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
        """Every campaign over the whole load, and up to 300 profile lookups (never an
        erased id: the model knows of none)."""
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

    def watch_takeover(
        self,
        phase: str,
        survivor: Worker,
        before: dict[str, tuple[int, Any]],
        since: float,
        deadline: float,
    ) -> dict[str, Any]:
        """Probe the survivor until it owns every partition and serves every probe
        with 200 (404 only for a profile that did not answer 200 before), none below before, or
        until ``deadline``. A 404 or a count below before, for a key that answered
        200 before, is a false answer: it goes to ``run.false_probes`` (once a key).
        503 with ``Retry-After`` is asked again; 503 without it is noted."""
        timeline: list[str] = []
        last_problem = ""
        self.run.probes += sum(1 for answer in before.values() if answer[0] == 200)
        while time.monotonic() < deadline:
            elapsed = round(time.monotonic() - since, 1)
            body = health(survivor.url)
            state = "healthy" if body else "unhealthy"
            if body:
                state += f" owning {len(body['active_partitions'])}"
            if not timeline or not timeline[-1].endswith(state):
                timeline.append(f"{elapsed} s {state}")
            if body and set(body["active_partitions"]) == set(range(PARTITIONS)):
                answers = probe_many(list(before))
                problems = []
                for url, (status, answer, headers) in zip(before, answers, strict=True):
                    now = (status, answer)
                    if served_again(before[url], now):
                        continue
                    key = f"{phase} {url.split('/', 3)[3].split('?')[0]}"
                    problems.append(f"{key}: {status}")
                    retry_after = any(h.lower() == "retry-after" for h in headers)
                    if before[url][0] == 200 and status in (200, 404):
                        self.run.false_probes.setdefault(key, f"{status} at {elapsed} s")
                    elif status == 503 and not retry_after:
                        problems[-1] += " (no Retry-After)"
                if not problems:
                    return {
                        "serve_all_s": round(time.monotonic() - since, 1),
                        "timeline": timeline,
                        "last_problem": "",
                    }
                last_problem = f"{len(problems)} probes not served, e.g. {problems[:2]}"
                timeline.append(f"{elapsed} s {last_problem}")
            time.sleep(0.5)
        return {"serve_all_s": None, "timeline": timeline, "last_problem": last_problem}

    # --- p: one of two workers stopped longer than the session timeout ----------

    def pause_one(self, chunks: range) -> None:
        """SIGSTOP one of two workers mid-take for ``pause_factor`` session timeouts,
        produce the next chunk meanwhile, then SIGCONT; the zombie must rejoin."""
        config = self.config
        if len(self.live) < 2:
            self.live.append(self.new_worker(f"w{len(self.run.workers) + 1}").start(timeout=180))
        a, b = self.live[:2]
        began = time.monotonic()
        wait_until(lambda: self.split(a, b), 180, "two workers to split the partitions")
        info: dict[str, Any] = {"split_s": round(time.monotonic() - began, 1)}
        zombie = self.rng.choice([a, b])
        other = b if zombie is a else a
        probes = self.probe_urls(other)
        before = dict(zip(probes, get_many(probes), strict=True))
        assert zombie.process is not None
        self.scraper.scrape(zombie)
        self.send_chunk(chunks[0])
        time.sleep(self.rng.uniform(0.0, 0.3) * len(self.chunks[chunks[0]]) / config.assumed_rate)
        self.scraper.paused.add(zombie.process.pid)
        os.killpg(zombie.process.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        pause_s = config.pause_factor * config.session_timeout_s
        info.update(zombie=zombie.data_dir.name, other=other.data_dir.name, pause_s=pause_s)
        info["backlog_after_stop"] = self.backlog()
        self.erase_near(chunks[0], first=zombie.url)
        self.send_chunk(chunks[1])
        watch = self.watch_takeover("p", other, before, paused_at, paused_at + pause_s)
        info.update(other_serves_all_s=watch["serve_all_s"], timeline=watch["timeline"])
        time.sleep(max(0.0, paused_at + pause_s - time.monotonic()))
        info["backlog_at_resume"] = self.backlog()
        log_before = zombie.log_path.stat().st_size if zombie.log_path.exists() else 0
        self.resume(zombie)
        resumed = time.monotonic()
        info.update(self.rejoined(zombie, other, resumed))
        info["zombie_log"] = log_lines(zombie, log_before)
        self.run.pause = info
        say(f"pause: {info}")

    def resume(self, worker: Worker) -> None:
        process = worker.process
        if process is not None and process.pid in self.scraper.paused:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
            self.scraper.paused.discard(process.pid)

    def rejoined(self, zombie: Worker, other: Worker, since: float) -> dict[str, Any]:
        """Whether the woken worker went on and the two split the partitions again."""
        deadline = since + 180
        while time.monotonic() < deadline:
            for worker in (zombie, other):
                if worker.process is not None and worker.process.poll() is not None:
                    code = worker.process.returncode
                    self.run.findings.append(
                        f"pause: worker {worker.data_dir.name} exited with {code} after the "
                        f"SIGCONT; log: {last_error(worker)}"
                    )
                    worker.start(timeout=180)  # the supervisor's job
                    return {"rejoined": False, "exited": worker.data_dir.name, "code": code}
            if self.split(zombie, other):
                return {"rejoined": True, "split_again_s": round(time.monotonic() - since, 1)}
            time.sleep(0.5)
        self.run.findings.append(
            f"pause: the workers did not split the partitions within 180 s of the SIGCONT; "
            f"log: {last_error(zombie)}"
        )
        return {"rejoined": False}

    # --- c: the broker goes away and comes back --------------------------------

    def broker_bounce(self, chunks: range) -> None:
        self.send_chunk(chunks[0])
        time.sleep(
            self.rng.uniform(0.05, 0.5) * len(self.chunks[chunks[0]]) / self.config.assumed_rate
        )
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
        start_done = self.consumed_raw()
        self.send_chunk(chunks[1])
        for worker in self.live:
            info[worker.data_dir.name] = self.recovered(worker, restarted, start_done)
        self.run.broker_restart = info
        say(f"broker restart: {info}")

    def recovered(self, worker: Worker, since: float, start_done: int | None) -> dict[str, Any]:
        """Whether the worker went on by itself after the broker came back: alive,
        healthy, and the raw topic read past ``start_done`` (by the group: with two
        workers, either may hold the partitions of the chunk sent since)."""
        deadline = since + 120
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
    """Whether ``now`` is a full answer: 200, none of its counts below ``before``'s
    (404 only where ``before`` was not 200: a key whose events come later in the load
    answers 404 until they do, and a 503 before the fault says nothing either way)."""
    status, body = now
    if status == 404 and before[0] != 200:
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


def log_lines(worker: Worker, offset: int, limit: int = 4) -> list[str]:
    """The first warnings and errors ``worker`` logged past byte ``offset``."""
    with worker.log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
    return [line.split("] ", 3)[-1].strip()[:200] for line in lines[:limit]]


def last_error(worker: Worker) -> str:
    lines = [
        line
        for line in worker.tail(400).splitlines()
        if "Error" in line or "error" in line or "Crashed" in line
    ]
    return (lines[-1] if lines else worker.tail(3)).strip()[:300]


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
