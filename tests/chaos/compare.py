"""Compare what the workers serve with the independent expectation.

Units: *lost* and *double-counted* are counts (events in a window or a
profile, profiles in a segment, records in the accounting) below or above
the expectation; *mismatched* are keys whose other values differ (revenue,
unique users beyond the sketch's 2 %, ids, first/last seen, interests,
segments, a profile answering for the wrong id, an erasure not done, a
takeover probe answering 404 or less than before).

Each check says whether exactness is promised. Every table check is promised
in both modes (the watermarks make replays idempotent, and every stage sends
its output before it writes its tables; see docs/RELIABILITY.md), and so is
the accounting read from the topics by distinct event. Copies of records on
the output topics (a replay sends them again) and the Prometheus counters
(per process) are reported, never promised.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.cluster import Scraper
from tests.chaos.erasures import Outcome, Planned
from tests.chaos.model import CAMPAIGN_TYPES, Expected, timestamp_ms
from tests.chaos.observe import TopicAccounting, get_many
from tests.integration.support import Worker

COUNT_FIELDS = {"impression": "impressions", "click": "clicks", "conversion": "conversions"}


@dataclass
class Check:
    name: str
    promised: bool
    keys: int = 0
    lost: int = 0
    double: int = 0
    mismatched: int = 0
    note: str = ""
    examples: list[str] = field(default_factory=list)
    figures: Any = None  # a check's own figures (the erasures')

    def count(self, expected: int, observed: int) -> None:
        if observed < expected:
            self.lost += expected - observed
        elif observed > expected:
            self.double += observed - expected

    def example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.double or self.mismatched)


def check_campaigns(expected: Expected, base: str, span: tuple[int, int]) -> Check:
    check = Check("campaign windows", promised=True)
    campaigns = sorted(expected.windows)
    urls = [f"{base}/campaigns/{c}/stats?from={span[0]}&to={span[1]}" for c in campaigns]
    for campaign, (status, body) in zip(campaigns, get_many(urls), strict=True):
        windows = expected.windows[campaign]
        if status != 200:
            check.lost += sum(sum(w.counts.values()) for w in windows.values())
            check.example(f"{campaign}: HTTP {status} {str(body)[:100]}")
            continue
        users: set[str] = set()
        for row in body["windows"]:
            start = timestamp_ms(row["start"])
            window = windows.get(start)
            check.keys += 1
            counts = window.counts if window else {}
            before = (check.lost, check.double)
            for kind in CAMPAIGN_TYPES:
                check.count(counts.get(kind, 0), row[COUNT_FIELDS[kind]])
            if (check.lost, check.double) != before:
                check.example(f"{campaign} {row['start']}: {row} expected {dict(counts)}")
                continue
            cents = window.revenue_cents if window else 0
            truth = len(window.users) if window else 0
            users |= window.users if window else set()
            if round(row["revenue"] * 100) != cents or not near(row["unique_users"], truth):
                check.mismatched += 1
                check.example(
                    f"{campaign} {row['start']}: revenue {row['revenue']} unique "
                    f"{row['unique_users']}, expected {cents / 100} and {truth}"
                )
        if not near(body["totals"]["unique_users"], len(users)):
            check.mismatched += 1
            unique = body["totals"]["unique_users"]
            check.example(f"{campaign} totals: unique users {unique}, expected {len(users)}")
    return check


def near(estimate: int, truth: int) -> bool:
    """The contract's sketch bound: within 2 % (and 1 for tiny counts)."""
    return abs(estimate - truth) <= max(1, 0.02 * truth)


def check_profiles(expected: Expected, base: str) -> Check:
    check = Check("profiles", promised=True)
    lookups = expected.lookups()
    ids = sorted(lookups)
    answers = get_many([f"{base}/profiles/{i}" for i in ids])
    for profile_id, (status, body) in zip(ids, answers, strict=True):
        check.keys += 1
        want = expected.profiles[lookups[profile_id]].view()
        if status != 200:
            check.lost += sum(want["counts"].values())
            check.example(f"{profile_id}: HTTP {status} {str(body)[:100]}")
            continue
        for kind in set(want["counts"]) | set(body["counts"]):
            check.count(want["counts"].get(kind, 0), body["counts"].get(kind, 0))
        if body["counts"] != want["counts"]:
            check.example(f"{profile_id}: counts {body['counts']} expected {want['counts']}")
        elif body != want:
            check.mismatched += 1
            diff = {k: (body.get(k), want[k]) for k in want if body.get(k) != want[k]}
            check.example(f"{profile_id}: {diff}")
    bots = get_many([f"{base}/profiles/{b}" for b in expected.bots])
    for bot, (status, body) in zip(expected.bots, bots, strict=True):
        check.keys += 1
        if status != 404:
            check.double += sum(body.get("counts", {}).values()) if status == 200 else 0
            check.mismatched += 0 if status == 200 else 1
            check.example(f"bot {bot}: HTTP {status}, expected 404")
    return check


def check_segments(expected: Expected, base: str) -> Check:
    check = Check("segment sizes", promised=True)
    want = expected.segment_sizes()
    status, body = get_many([f"{base}/segments"])[0]
    if status != 200:
        check.lost += sum(want.values())
        check.example(f"GET /segments: HTTP {status}")
        return check
    got = {row["segment"]: row["size"] for row in body}
    for segment, size in want.items():
        check.keys += 1
        check.count(size, got.get(segment, 0))
        if got.get(segment) != size:
            check.example(f"{segment}: {got.get(segment)} expected {size}")
    return check


def check_profile_gauge(expected: Expected, scraper: Scraper, live: list[Worker]) -> Check:
    check = Check("dmp_profiles gauge", promised=True, keys=1)
    observed = int(scraper.live_total("dmp_profiles", live))
    check.count(len(expected.profiles), observed)
    if not check.ok:
        check.example(f"sum over live workers {observed}, expected {len(expected.profiles)}")
    return check


def check_accounting(expected: Expected, topics: TopicAccounting) -> Check:
    """The accounting from the output topics: dead letters counted once per source
    record, clean events once per event_id; duplicate + bot is what remains."""
    check = Check("accounting (topics)", promised=True)
    check.keys = 3
    check.count(expected.received, topics.received)
    for reason in set(expected.invalid) | set(topics.invalid):
        check.keys += 1
        check.count(expected.invalid.get(reason, 0), topics.invalid.get(reason, 0))
        if expected.invalid.get(reason, 0) != topics.invalid.get(reason, 0):
            check.example(
                f"invalid {reason}: {topics.invalid.get(reason, 0)} "
                f"expected {expected.invalid.get(reason, 0)}"
            )
    seen = set(topics.accepted_ids)
    missing, extra = expected.accepted_ids - seen, seen - expected.accepted_ids
    check.lost += len(missing)
    check.double += len(extra)
    if missing:
        check.example(f"{len(missing)} accepted event ids missing, e.g. {sorted(missing)[:3]}")
    if extra:
        check.example(f"{len(extra)} event ids accepted that should not be: {sorted(extra)[:3]}")
    rest = topics.received - sum(topics.invalid.values()) - len(seen)
    check.count(expected.duplicate + expected.bot, rest)
    check.note = (
        f"replayed copies: events.clean {topics.clean_copies}, events.dlq "
        f"{topics.dead_letter_copies}"
    )
    return check


def counter_drift(expected: Expected, scraper: Scraper) -> list[dict[str, Any]]:
    """Each accounting counter summed over every process lifetime (its last scrape)."""
    rows = []
    for name, want in (
        ("received", expected.received),
        ("invalid", sum(expected.invalid.values())),
        ("duplicate", expected.duplicate),
        ("bot", expected.bot),
        ("accepted", expected.accepted),
    ):
        got = int(scraper.totals(f"dmp_events_{name}_total"))
        rows.append({"counter": name, "expected": want, "summed": got, "drift": got - want})
    return rows


def check_takeover_probes(probes: int, false_probes: dict[str, str]) -> Check:
    """Keys that answered 200 before a takeover (phases b and p) and then, from the
    survivor, 404 or less than before: a false answer each (503 is allowed)."""
    check = Check("takeover probes", promised=True, keys=probes, mismatched=len(false_probes))
    for key, answer in sorted(false_probes.items())[:5]:
        check.example(f"{key}: {answer} after 200 before the fault")
    return check


@dataclass
class ErasureFigures:
    planned: int = 0
    sent: int = 0  # DELETEs answered for good (any status)
    accepted: int = 0  # 202 with an erasure_id
    confirmed: int = 0  # GET /erasures said "erased"
    ids_absent: int = 0  # ids checked: GET /profiles/{id} answered 404
    ids_checked: int = 0
    frequency_checked: int = 0  # (id, campaign) pairs whose frequency read 0
    frequency_zero: int = 0


def check_history(expected: Expected, root: Path, patience_s: float) -> Check:
    """Every Parquet file of the history read whole: each accepted event once, no
    erased person's row, nothing else. Waits ``patience_s`` for the last flushes and
    erasure rewrites (``DMP_HISTORY_FLUSH_S``, ``DMP_HISTORY_ERASE_S``)."""
    import pyarrow.parquet as pq

    wanted = expected.history_ids()
    erased = {i for person in expected.erased.values() for i in person.ids}

    def read() -> tuple[Counter[str], int]:
        ids: Counter[str] = Counter()
        people = 0
        for path in (root / "events").rglob("*.parquet"):
            table = pq.read_table(path, columns=["event_id", "anonymous_id", "user_id"])
            ids.update(table.column("event_id").to_pylist())
            for column in ("anonymous_id", "user_id"):
                people += len(erased.intersection(table.column(column).to_pylist()))
        return ids, people

    deadline = time.monotonic() + patience_s
    found, people = read()
    while (set(found) != wanted or people) and time.monotonic() < deadline:
        time.sleep(2)
        found, people = read()
    check = Check("history", promised=True, keys=len(wanted))
    for event_id in wanted:
        check.count(1, found.get(event_id, 0))
        if found.get(event_id, 0) != 1:
            check.example(f"{event_id}: {found.get(event_id, 0)} rows")
    strangers = [e for e in found if e not in wanted]
    check.mismatched += len(strangers) + people
    for event_id in strangers[:3]:
        check.example(f"{event_id}: in the history, not expected (erased or never accepted)")
    check.note = f"{sum(found.values())} rows, {len(erased)} erased ids, {people} of their rows"
    return check


def check_erasures(
    expected: Expected, planned: list[Planned], outcomes: list[Outcome], base: str
) -> Check:
    """Every planned erasure: the DELETE accepted, ``erased`` confirmed, and for every
    id of the person no profile (404) and frequency 0 on each campaign they saw. One
    mismatch for each thing that is not so."""
    check = Check("erasures", promised=True)
    figures = ErasureFigures(planned=len(planned))
    sent = {o.planned.user_id for o in outcomes}
    for erasure in planned:
        if erasure.user_id not in sent:
            check.mismatched += 1
            check.example(f"{erasure.user_id} ({erasure.moment}): never sent")
    for outcome in outcomes:
        check.keys += 1
        figures.sent += outcome.status is not None
        figures.accepted += outcome.accepted
        figures.confirmed += outcome.confirmed == "erased"
        for problem in outcome.problems:
            check.mismatched += 1
            check.example(f"{outcome.planned.user_id} ({outcome.planned.moment}): {problem}")
    people = [expected.erased[p.user_id] for p in planned]
    ids = [i for person in people for i in person.ids]
    for profile_id, (status, body) in zip(
        ids, get_many([f"{base}/profiles/{i}" for i in ids]), strict=True
    ):
        figures.ids_checked += 1
        if status == 404:
            figures.ids_absent += 1
            continue
        check.mismatched += 1
        check.example(f"erased {profile_id}: HTTP {status} {str(body)[:120]}")
    pairs = [(i, c) for person in people for i in person.ids for c in person.campaigns]
    urls = [f"{base}/frequency/{i}/{c}" for i, c in pairs]
    for (profile_id, campaign), (status, body) in zip(pairs, get_many(urls), strict=True):
        figures.frequency_checked += 1
        if status == 200 and body.get("impressions_24h") == 0:
            figures.frequency_zero += 1
            continue
        check.mismatched += 1
        check.example(f"erased {profile_id} frequency on {campaign}: HTTP {status} {body}")
    check.figures = figures
    check.note = (
        f"{figures.planned} erasures: {figures.accepted} accepted, {figures.confirmed} "
        f"confirmed erased; ids absent {figures.ids_absent}/{figures.ids_checked}; "
        f"frequency 0 {figures.frequency_zero}/{figures.frequency_checked}"
    )
    return check
