"""Erasures in the chaos load: which linked users, when, and what the cluster answered.

About ``share`` of the users the load links (at least ``minimum``) are erased
with ``DELETE /profiles/{user_id}``, each after the last record carrying any
of its ids, at one of three seeded moments:

* ``in_flight``: right after that record was produced (the harness splits the
  chunk there), so its merge fragments are likely still travelling;
* ``near_kill``: just before a ``kill -9`` (phase a's kills, phase b's worker
  lost for good), sent to any live worker, the doomed one included;
* ``near_pause``: right after a worker was stopped with ``SIGSTOP`` (phase p),
  sent first to the stopped worker.

The DELETEs run in threads of their own, so a worker that does not answer
never holds up the faults. A DELETE that finds no worker (refused, reset,
timed out, 5xx) is tried again on the next live worker after a second, for
at most ``limit_s``; any other answer is final, and anything but 202 with an
``erasure_id`` is recorded as a problem. After the drain each erasure_id is
polled with ``GET /erasures/{id}`` until it says ``erased`` (bounded).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.load import Linked
from tests.chaos.observe import request

MOMENTS = ("in_flight", "near_kill", "near_pause")
RETRYABLE = frozenset({0, 500, 502, 503, 504})


@dataclass(frozen=True)
class Planned:
    """One erasure: ``user_id`` (and ``ids``) erased after record ``after`` (an index
    into the load) was produced, at ``moment`` of chunk ``chunk``."""

    user_id: str
    ids: tuple[str, ...]
    chunk: int
    after: int
    moment: str


def plan(
    linked: dict[str, Linked],
    chunk_size: int,
    faults: list[tuple[int, str]],
    rng: random.Random,
    share: float,
    minimum: int,
) -> list[Planned]:
    """``faults``: (chunk, ``near_kill`` or ``near_pause``) for the faults after
    chunks, in order of preference. For up to half the target (rounded up; none
    when the target is one), one user whose last record is in such a chunk (else
    in an earlier one) is erased near the fault; the rest right after their last
    record."""
    target = min(len(linked), max(minimum, round(share * len(linked))))
    by_chunk: dict[int, list[Linked]] = {}
    for person in linked.values():
        by_chunk.setdefault(person.last // chunk_size, []).append(person)
    chosen: list[Planned] = []
    taken: set[str] = set()
    near_budget = max(1, (target + 1) // 2) if target > 1 else 0
    for chunk, moment in faults:
        candidates = [p for p in by_chunk.get(chunk, []) if p.user_id not in taken]
        if not candidates:  # someone whose last record came earlier
            end = (chunk + 1) * chunk_size
            candidates = [p for p in linked.values() if p.last < end and p.user_id not in taken]
        if not candidates or len(chosen) >= near_budget:
            continue
        person = rng.choice(candidates)
        taken.add(person.user_id)
        chosen.append(Planned(person.user_id, person.ids, chunk, person.last, moment))
    rest = [p for p in linked.values() if p.user_id not in taken]
    for person in rng.sample(rest, min(len(rest), target - len(chosen))):
        chunk = person.last // chunk_size
        chosen.append(Planned(person.user_id, person.ids, chunk, person.last, "in_flight"))
    return sorted(chosen, key=lambda p: (p.after, p.user_id))


@dataclass
class Outcome:
    """What the cluster answered to one planned erasure."""

    planned: Planned
    attempts: list[str] = field(default_factory=list)  # "w<port> <status>" per try
    status: int | None = None  # the final answer to the DELETE
    body: Any = None
    erasure_id: str | None = None
    confirmed: str | None = None  # the last status GET /erasures answered
    hashed_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.status == 202 and self.erasure_id is not None


def hashed_id(namespace: str, profile_id: str) -> str:
    """How GET /erasures names an id it covered: sha256 of the app id, 0x1f, the id."""
    return hashlib.sha256(f"{namespace}\x1f{profile_id}".encode()).hexdigest()


class Eraser:
    """Sends the planned DELETEs in the background and remembers every answer."""

    def __init__(
        self,
        urls: Callable[[], list[str]],
        rng: random.Random,
        namespace: str,
        limit_s: float = 120.0,
    ) -> None:
        self.urls, self.rng, self.limit_s = urls, rng, limit_s
        self.namespace = namespace  # the app id: what the erased ids are hashed with
        self.outcomes: list[Outcome] = []
        self._futures: list[Future[None]] = []
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="erase")
        self._lock = threading.Lock()

    def submit(self, planned: Planned, first: str | None = None) -> None:
        outcome = Outcome(planned)
        with self._lock:
            self.outcomes.append(outcome)
            start = self.rng.randrange(1 << 16)
        self._futures.append(self._pool.submit(self._delete, outcome, start, first))

    def _delete(self, outcome: Outcome, start: int, first: str | None) -> None:
        user_id = outcome.planned.user_id
        deadline = time.monotonic() + self.limit_s
        attempt = 0
        while True:
            urls = self.urls()
            url = first if first and attempt == 0 else urls[(start + attempt) % len(urls)]
            status, body, _ = request("DELETE", f"{url}/profiles/{user_id}", timeout=10)
            attempt += 1
            outcome.attempts.append(f"{url.rsplit(':', 1)[-1]} {status}")
            if status not in RETRYABLE or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        outcome.status, outcome.body = status, body
        if status in RETRYABLE:
            outcome.problems.append(f"DELETE found no worker for {self.limit_s:.0f} s")
        elif status != 202:
            outcome.problems.append(f"DELETE answered {status}: {str(body)[:120]}")
        elif not isinstance(body, dict) or not body.get("erasure_id"):
            outcome.problems.append(f"DELETE answered 202 without an erasure_id: {body}")
        else:
            outcome.erasure_id = str(body["erasure_id"])
            if body.get("status") != "erasing":
                outcome.problems.append(f"DELETE answered status {body.get('status')!r}")

    def wait(self) -> None:
        """Until every DELETE is answered for good (each is bounded by ``limit_s``)."""
        for future in self._futures:
            future.result()
        self._pool.shutdown()

    def confirm(self, urls: Sequence[str], timeout_s: float) -> float:
        """Poll ``GET /erasures/{id}`` until every accepted erasure says ``erased``, at
        most ``timeout_s``; the seconds it took. 404 (unknown) is polled again too."""
        began = time.monotonic()
        waiting = [o for o in self.outcomes if o.erasure_id]
        while waiting:
            for outcome in list(waiting):
                status, body, _ = request("GET", f"{urls[0]}/erasures/{outcome.erasure_id}")
                if status == 200 and isinstance(body, dict):
                    outcome.confirmed = str(body.get("status"))
                    outcome.hashed_ids = [str(i) for i in body.get("ids", [])]
                else:
                    outcome.confirmed = f"HTTP {status}"
                if outcome.confirmed == "erased":
                    waiting.remove(outcome)
            if not waiting or time.monotonic() - began > timeout_s:
                break
            time.sleep(1.0)
        for outcome in waiting:
            outcome.problems.append(f"not erased after {timeout_s:.0f} s: {outcome.confirmed}")
        for outcome in self.outcomes:
            if outcome.confirmed == "erased" and hashed_id(
                self.namespace, outcome.planned.user_id
            ) not in set(outcome.hashed_ids):
                outcome.problems.append("GET /erasures does not list the erased id's hash")
        return round(time.monotonic() - began, 1)
