"""The Parquet history on a live worker: each accepted event once, SQL, HTTP, erasure."""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from dmp_faust.history.schema import FileName
from tests.integration.conftest import WorkerFactory
from tests.integration.events import GOOGLEBOT, MINUTE, T0, encode, event
from tests.integration.support import Worker, call, produce, run_cli, wait_until

pytestmark = pytest.mark.integration

HOUR = 60 * MINUTE
FAST = {"DMP_HISTORY_FLUSH_S": "2"}


def sql(worker: Worker, query: str) -> list[dict[str, Any]]:
    done = run_cli(worker, "sql", query, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def history_ids(worker: Worker) -> Counter[str]:
    """Every event id in every Parquet file of the worker's history, with its count."""
    ids: Counter[str] = Counter()
    for path in (worker.data_dir / "history" / "events").rglob("*.parquet"):
        ids.update(pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist())
    return ids


def files(worker: Worker) -> list[Path]:
    return sorted((worker.data_dir / "history" / "events").rglob("*.parquet"))


def send(worker: Worker, events: list[dict[str, Any]]) -> None:
    produce(
        worker.bootstrap,
        f"{worker.prefix}.events.raw",
        [(e.get("anonymous_id", "").encode() or None, encode(e)) for e in events],
    )


def campaign_traffic(campaign: str, users: int = 20) -> list[dict[str, Any]]:
    """Impressions, clicks and conversions over two hours from T0, and page views."""
    events = []
    for i in range(users):
        user = f"anon-{campaign}-{i}"
        for minute in range(0, 120, 7):
            ts = T0 + minute * MINUTE + i * 1000
            events.append(event("impression", ts, user, campaign))
            if (i + minute) % 5 == 0:
                events.append(event("click", ts + 500, user, campaign))
            if (i + minute) % 13 == 0:
                events.append(event("conversion", ts + 800, user, campaign, revenue=2.5 + i))
        events.append(event("page_view", T0 + i * MINUTE, user, url="/sport/x?utm_source=news"))
    return events


def test_every_accepted_event_is_in_the_history_once_and_answers_sql_and_http(
    make_worker: WorkerFactory,
) -> None:
    worker = make_worker(**FAST).start()
    campaign = f"cmp-{uuid.uuid4().hex[:8]}"
    accepted = campaign_traffic(campaign)
    copy = dict(accepted[3])  # the same event_id again: a duplicate, not accepted
    bot = event("impression", T0 + 5_000, "anon-bot", campaign, user_agent=GOOGLEBOT)
    half = len(accepted) // 2  # two flushes at least: files for compaction to merge
    send(worker, accepted[:half])
    early = Counter(e["event_id"] for e in accepted[:half])
    wait_until(lambda: history_ids(worker) == early, 90, "the first half in the history")
    send(worker, [*accepted[half:], copy, bot])
    wanted = Counter(e["event_id"] for e in accepted)
    wait_until(lambda: history_ids(worker) == wanted, 90, "every accepted event in the history")

    # the layout: hive directories by the event's hour, names with partition and offsets
    for path in files(worker):
        assert path.parent.parent.name == "date=2021-03-01", path
        assert path.parent.name in ("hour=12", "hour=13"), path
        name = FileName.parse(path.name)
        assert name is not None and name.first <= name.last, path
    enriched = sql(
        worker,
        "SELECT browser, utm_source, ip, hour FROM events WHERE type = 'page_view' LIMIT 1",
    )
    expected = {"browser": "Chrome", "utm_source": "news", "ip": "203.0.113.0", "hour": 12}
    assert enriched == [expected]

    # SQL: a table by default, csv, json; a bad query fails with DuckDB's message
    total = run_cli(worker, "sql", "SELECT count(*) AS n FROM events", "--format", "csv")
    assert total.returncode == 0 and total.stdout.split() == ["n", str(len(accepted))]
    table = run_cli(worker, "sql", "SELECT type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")
    assert table.returncode == 0 and "impression" in table.stdout and "type" in table.stdout
    bad = run_cli(worker, "sql", "SELECT nope FROM events")
    assert bad.returncode != 0 and "nope" in bad.stderr

    # HTTP: over the last 24 h the history agrees with the live windows
    span = f"from={T0}&to={T0 + 2 * HOUR}"
    status, live = call("GET", f"{worker.url}/campaigns/{campaign}/stats?{span}")
    assert status == 200, live
    status, by_hour = call("GET", f"{worker.url}/history/campaigns/{campaign}?{span}")
    assert status == 200, by_hour
    assert [w["start"] for w in by_hour["windows"]] == [
        "2021-03-01T12:00:00Z",
        "2021-03-01T13:00:00Z",
    ]
    for key in ("impressions", "clicks", "conversions", "revenue", "ctr"):
        assert by_hour["totals"][key] == live["totals"][key], key
    assert by_hour["totals"]["impressions"] > 0
    assert abs(by_hour["totals"]["unique_users"] - live["totals"]["unique_users"]) <= 1
    for hour, window in enumerate(by_hour["windows"]):
        minutes = live["windows"][hour * 60 : (hour + 1) * 60]
        assert window["clicks"] == sum(m["clicks"] for m in minutes)
        assert window["impressions"] == sum(m["impressions"] for m in minutes)
    status, by_day = call(
        "GET", f"{worker.url}/history/campaigns/{campaign}?from={T0}&granularity=day"
    )
    assert status == 200 and len(by_day["windows"]) == 30
    assert by_day["windows"][0]["impressions"] == live["totals"]["impressions"]
    assert call("GET", f"{worker.url}/history/campaigns/{campaign}?granularity=week")[0] == 400

    # compaction: the closed hours' files merge per partition, nothing lost or doubled
    before = len(files(worker))
    worker.stop()  # nothing more arrives; compaction is also safe while workers write
    done = run_cli(worker, "history", "compact")
    assert done.returncode == 0, done.stderr
    after = files(worker)
    assert len(after) < before
    assert all(FileName.parse(path.name).compacted for path in after if "-c" in path.name)
    per_hour = Counter((path.parent, FileName.parse(path.name).partition) for path in after)
    assert set(per_hour.values()) == {1}
    assert history_ids(worker) == wanted


def test_a_killed_worker_leaves_neither_loss_nor_copies(make_worker: WorkerFactory) -> None:
    worker = make_worker(**FAST).start()
    first = [event("page_view", T0 + i * 1000, f"anon-k{i % 30}") for i in range(600)]
    send(worker, first)
    wait_until(
        lambda: len(history_ids(worker)) == len(first), 90, "the first events in the history"
    )
    second = [event("page_view", T0 + i * 1000, f"anon-k{i % 30}") for i in range(600)]
    send(worker, second)
    worker.kill()  # some of the second batch read, maybe flushed, maybe not
    # and a flush that wrote its file, then died before its state: a file past the
    # partition's stored offset (here a copy of rows it holds already)
    state = json.loads((worker.data_dir / "history" / "_sink" / "p000.json").read_text())
    some = next(p for p in files(worker) if FileName.parse(p.name).partition == 0)
    orphan = some.parent / str(FileName(0, state["next_offset"], state["next_offset"] + 5000))
    shutil.copy(some, orphan)
    worker.start()
    wanted = Counter(e["event_id"] for e in first + second)
    wait_until(lambda: history_ids(worker) == wanted, 90, "every event once after the kill")
    assert not orphan.exists()


def test_an_erased_person_leaves_the_history(make_worker: WorkerFactory) -> None:
    worker = make_worker(**FAST, DMP_HISTORY_ERASE_S="10").start()
    person, other = f"user-{uuid.uuid4().hex[:6]}", f"anon-{uuid.uuid4().hex[:6]}"
    cookie = f"anon-{uuid.uuid4().hex[:6]}"
    events = [event("page_view", T0 + i * 1000, cookie) for i in range(5)]
    events.append(event("identify", T0 + 10_000, cookie, user_id=person))
    events += [event("page_view", T0 + 20_000 + i, cookie, user_id=person) for i in range(3)]
    events += [event("page_view", T0 + i * 1000, other) for i in range(4)]
    send(worker, events)
    wait_until(lambda: len(history_ids(worker)) == len(events), 90, "the events in the history")
    status, body = call("DELETE", f"{worker.url}/profiles/{person}")
    assert status == 202, body
    ids = f"'{person}', '{cookie}'"
    query = f"SELECT count(*) AS n FROM events WHERE anonymous_id IN ({ids}) OR user_id IN ({ids})"
    wait_until(lambda: sql(worker, query) == [{"n": 0}], 30, "queries without the person")
    assert sql(worker, "SELECT count(*) AS n FROM events") == [{"n": 4}]

    def files_clean() -> bool:
        for path in files(worker):
            table = pq.read_table(path, columns=["profile_id", "anonymous_id", "user_id"])
            values = {v for column in table.columns for v in column.to_pylist()}
            if values & {person, cookie}:
                return False
        return True

    wait_until(files_clean, 40, "every file rewritten without the person")
    assert sum(history_ids(worker).values()) == 4
