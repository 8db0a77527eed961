"""DuckDB over the Parquet history: the events view, campaign history, erasure, ad-hoc SQL."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from dmp_faust.domain.enrich import CleanEvent, UserAgent
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.history.query import (
    _HISTORY_SQL,
    _history_params,
    campaign_history,
    connect,
    files_glob,
    run_sql,
)
from dmp_faust.history.schema import SCHEMA, FileName, Rows, hour_dir, hour_of

HOUR = 3_600_000
DAY = 24 * HOUR
DAY0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
CAMPAIGNS = ("c1", "c2", "c3")
TYPES = ("impression", "impression", "impression", "click", "conversion", "page_view", "identify")


def write(root: Path, events: list[CleanEvent], partition: int = 0, offset: int = 0) -> int:
    """Write ``events`` as history files, one per hour; the number of files."""
    by_hour: dict[int, list[CleanEvent]] = defaultdict(list)
    for event in events:
        by_hour[hour_of(event.timestamp)].append(event)
    for hour, group in sorted(by_hour.items()):
        rows = Rows()
        for i, event in enumerate(group):
            rows.add(event, partition, offset + i)
        directory = root / hour_dir(hour)
        directory.mkdir(parents=True, exist_ok=True)
        name = FileName(partition, offset, offset + len(group) - 1)
        pq.write_table(rows.table(), directory / str(name))
        offset += len(group)
    return len(by_hour)


def generate(n: int = 3000, seed: int = 7) -> list[CleanEvent]:
    """Events over three days from DAY0: several campaigns and types, revenue on conversions."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        kind = rng.choice(TYPES)
        events.append(
            CleanEvent(
                event_id=f"e{i}",
                type=kind,
                timestamp=DAY0 + rng.randrange(3 * DAY),
                profile_id=f"p{rng.randrange(150)}",
                campaign_id=rng.choice((*CAMPAIGNS, None)),
                revenue=round(rng.uniform(0, 100), 2) if kind == "conversion" else None,
                user_agent=UserAgent("Firefox", "120.0", "Linux", None, "Other"),
                url="https://shop.example/?utm_source=news&utm_content=a",
            )
        )
    return events


def expected(
    events: list[CleanEvent], campaign_id: str, from_ms: int, to_ms: int, size: int
) -> tuple[list[dict[str, Any]], int]:
    """The windows campaign_history should answer, and the range's unique users."""
    windows = []
    all_users: set[str] = set()
    counted = ("impression", "click", "conversion")
    for start in range(from_ms, to_ms, size):
        mine = [
            e
            for e in events
            if e.campaign_id == campaign_id
            and start <= e.timestamp < start + size
            and e.type in counted
        ]
        impressions = sum(e.type == "impression" for e in mine)
        clicks = sum(e.type == "click" for e in mine)
        users = {e.profile_id for e in mine}
        all_users |= users
        windows.append(
            {
                "start": format_timestamp(start),
                "end": format_timestamp(start + size),
                "impressions": impressions,
                "clicks": clicks,
                "conversions": sum(e.type == "conversion" for e in mine),
                "revenue": round(sum(e.revenue or 0.0 for e in mine), 6),
                "ctr": round(clicks / impressions, 6) if impressions else 0.0,
                "unique_users": len(users),
            }
        )
    return windows, len(all_users)


def event(i: int, ts: int, **fields: object) -> CleanEvent:
    values: dict[str, object] = {"type": "impression", "profile_id": f"p{i}", "campaign_id": "c1"}
    values.update(fields)
    return CleanEvent(event_id=f"e{i}", timestamp=ts, **values)  # type: ignore[arg-type]


def sha(namespace: str, value: str) -> str:
    return hashlib.sha256(f"{namespace}\x1f{value}".encode()).hexdigest()


EXPECTED_COLUMNS = [*SCHEMA.names, "date", "hour"]


@pytest.mark.parametrize("make", [False, True])
def test_empty_root_has_the_columns_and_no_rows(tmp_path: Path, make: bool) -> None:
    root = tmp_path / "history"
    if make:
        (root / "events" / "date=2024-01-01").mkdir(parents=True)
    conn = connect(str(root))
    described = conn.execute("DESCRIBE events").fetchall()
    assert [row[0] for row in described] == EXPECTED_COLUMNS
    types = {row[0]: row[1] for row in described}
    assert types["date"] == "DATE"
    assert types["hour"] == "BIGINT"
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    body = campaign_history(conn, "c1", DAY0, DAY0 + 2 * DAY, "day")
    assert [w["impressions"] for w in body["windows"]] == [0, 0]
    assert body["totals"]["unique_users"] == 0


def test_empty_root_with_erasure_has_no_rows(tmp_path: Path) -> None:
    conn = connect(str(tmp_path), erased=[sha("", "p1")])
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_files_glob() -> None:
    assert files_glob("/data/history/") == "/data/history/events/**/*.parquet"
    assert files_glob("s3://bucket/prefix") == "s3://bucket/prefix/events/**/*.parquet"


def test_view_reads_hours_and_days_with_hive_columns(tmp_path: Path) -> None:
    root = tmp_path / "it's here"  # a quote in the path must not break the view's SQL
    events = [
        event(1, DAY0 + 3 * HOUR + 5),
        event(2, DAY0 + 3 * HOUR + 6),
        event(3, DAY0 + DAY + 23 * HOUR),
    ]
    assert write(root, events) == 2
    conn = connect(str(root) + "/")
    rows = conn.execute(
        "SELECT event_id, date, hour, epoch_ms(timestamp), kafka_offset FROM events ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("e1", dt.date(2024, 1, 1), 3, DAY0 + 3 * HOUR + 5, 0),
        ("e2", dt.date(2024, 1, 1), 3, DAY0 + 3 * HOUR + 6, 1),
        ("e3", dt.date(2024, 1, 2), 23, DAY0 + DAY + 23 * HOUR, 2),
    ]


def test_older_schema_reads_together_by_name(tmp_path: Path) -> None:
    write(tmp_path, [event(1, DAY0, utm={"utm_content": "new"})])
    rows = Rows()
    rows.add(event(2, DAY0 + DAY, utm={"utm_content": "old"}), 1, 42)
    old = rows.table().drop_columns(["utm_content", "kafka_offset"])
    directory = tmp_path / hour_dir(DAY0 + DAY)
    directory.mkdir(parents=True)
    pq.write_table(old, directory / str(FileName(1, 42, 42)))

    conn = connect(str(tmp_path))
    assert [row[0] for row in conn.execute("DESCRIBE events").fetchall()] == EXPECTED_COLUMNS
    rows_read = conn.execute(
        "SELECT event_id, utm_content, kafka_partition, kafka_offset FROM events ORDER BY 1"
    ).fetchall()
    assert rows_read == [("e1", "new", 0, 0), ("e2", None, 1, None)]
    body = campaign_history(conn, "c1", DAY0, DAY0 + 2 * DAY, "day")
    assert [w["impressions"] for w in body["windows"]] == [1, 1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[CleanEvent]]:
    root = tmp_path_factory.mktemp("history")
    events = generate()
    # two source partitions, so an hour has more than one file
    write(root, events[::2], partition=0)
    write(root, events[1::2], partition=1)
    return root, events


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_campaign_history_by_day(
    generated: tuple[Path, list[CleanEvent]], campaign_id: str
) -> None:
    root, events = generated
    conn = connect(str(root))
    # a day before and a day after the data: buckets with nothing in them
    from_ms, to_ms = DAY0 - DAY, DAY0 + 4 * DAY
    body = campaign_history(conn, campaign_id, from_ms, to_ms, "day")
    windows, users = expected(events, campaign_id, from_ms, to_ms, DAY)
    assert body["campaign_id"] == campaign_id
    assert body["from"] == "2023-12-31T00:00:00Z"
    assert body["to"] == "2024-01-05T00:00:00Z"
    assert body["granularity"] == "day"
    assert len(body["windows"]) == 5
    assert body["windows"] == windows
    assert body["windows"][0]["impressions"] == 0 and body["windows"][-1]["clicks"] == 0
    assert sum(w["impressions"] for w in body["windows"]) > 100
    totals = body["totals"]
    assert totals["impressions"] == sum(w["impressions"] for w in windows)
    assert totals["conversions"] == sum(w["conversions"] for w in windows)
    assert totals["revenue"] == pytest.approx(sum(w["revenue"] for w in windows), abs=1e-6)
    assert totals["unique_users"] == users
    # distinct over the range, not the sum of the days
    assert totals["unique_users"] < sum(w["unique_users"] for w in body["windows"])
    assert totals["ctr"] == round(totals["clicks"] / totals["impressions"], 6)


def test_campaign_history_by_hour_across_midnight(
    generated: tuple[Path, list[CleanEvent]],
) -> None:
    root, events = generated
    conn = connect(str(root))
    from_ms, to_ms = DAY0 + 17 * HOUR, DAY0 + DAY + 9 * HOUR
    body = campaign_history(conn, "c2", from_ms, to_ms, "hour")
    windows, users = expected(events, "c2", from_ms, to_ms, HOUR)
    assert len(body["windows"]) == 16
    assert body["windows"] == windows
    assert body["windows"][6]["start"] == "2024-01-01T23:00:00Z"
    assert body["windows"][7]["start"] == "2024-01-02T00:00:00Z"
    assert body["totals"]["unique_users"] == users


def test_unknown_campaign_is_all_zeros(generated: tuple[Path, list[CleanEvent]]) -> None:
    conn = connect(str(generated[0]))
    body = campaign_history(conn, "nope", DAY0, DAY0 + 3 * DAY, "hour")
    assert len(body["windows"]) == 72
    zero = {
        "impressions": 0,
        "clicks": 0,
        "conversions": 0,
        "revenue": 0.0,
        "ctr": 0.0,
        "unique_users": 0,
    }
    assert all({k: w[k] for k in zero} == zero for w in body["windows"])
    assert body["totals"] == zero


def test_injection_in_campaign_id_is_a_value(tmp_path: Path) -> None:
    tricky = "x' OR '1'='1"
    write(tmp_path, [event(1, DAY0), event(2, DAY0 + 1, campaign_id=tricky)])
    conn = connect(str(tmp_path))
    assert campaign_history(conn, "x", DAY0, DAY0 + DAY, "day")["totals"]["impressions"] == 0
    assert campaign_history(conn, tricky, DAY0, DAY0 + DAY, "day")["totals"]["impressions"] == 1


@pytest.mark.parametrize(
    ("from_ms", "to_ms", "granularity"),
    [
        (DAY0, DAY0 + DAY, "minute"),
        (DAY0 + HOUR, DAY0 + DAY, "day"),
        (DAY0, DAY0 + HOUR + 1, "hour"),
        (DAY0, DAY0, "day"),
        (DAY0, DAY0 + 10_001 * HOUR, "hour"),
    ],
)
def test_campaign_history_refuses_bad_ranges(
    tmp_path: Path, from_ms: int, to_ms: int, granularity: str
) -> None:
    with pytest.raises(ValueError):
        campaign_history(connect(str(tmp_path)), "c1", from_ms, to_ms, granularity)


def test_a_few_years_by_day(tmp_path: Path) -> None:
    write(tmp_path, [event(1, DAY0 + 5)])
    body = campaign_history(
        connect(str(tmp_path)), "c1", DAY0 - 1000 * DAY, DAY0 + 100 * DAY, "day"
    )
    assert len(body["windows"]) == 1100
    assert body["windows"][1000]["impressions"] == 1
    assert body["totals"]["impressions"] == 1


def _files_read(conn: duckdb.DuckDBPyConnection, params: dict[str, object]) -> list[str]:
    """How many files each scan of the campaign query read (from EXPLAIN ANALYZE)."""
    plan = conn.execute("EXPLAIN ANALYZE " + _HISTORY_SQL, params).fetchall()[0][1]
    return re.findall(r"Total Files Read: (\d+)", plan)


@pytest.mark.parametrize("erased", [(), (sha("", "p1"),)])
def test_campaign_history_reads_only_the_range_days(tmp_path: Path, erased: tuple[str]) -> None:
    write(tmp_path, [event(i, DAY0 + i * DAY) for i in range(4)])
    conn = connect(str(tmp_path), erased=erased)
    params = _history_params("c1", DAY0 + DAY, DAY0 + 2 * DAY, DAY)
    assert _files_read(conn, params) == ["1"]


def test_duckdb_sha256_is_hashlib_hexdigest() -> None:
    conn = duckdb.connect()
    for value in ("ns\x1fuser-1", "\x1fé ü 漢字", ""):
        got = conn.execute("SELECT sha256(?)", [value]).fetchone()
        assert got == (hashlib.sha256(value.encode()).hexdigest(),)


def test_erased_people_are_not_in_the_view(tmp_path: Path) -> None:
    ns = "tenant-a"
    events = [
        # the erased person: seen anonymously, then logged in as user-x
        event(1, DAY0, profile_id="prof-x", anonymous_id="anon-x"),
        event(2, DAY0 + 1, profile_id="prof-x", anonymous_id="anon-x", user_id="user-x"),
        event(3, DAY0 + DAY, profile_id="prof-y", user_id="user-x"),
        # someone else, with and without the optional ids
        event(4, DAY0 + 2, profile_id="prof-z", anonymous_id="anon-z"),
        event(5, DAY0 + DAY + 1, profile_id="prof-w"),
        event(6, DAY0 + 3, profile_id="prof-v", anonymous_id="anon-v", user_id="user-v"),
    ]
    write(tmp_path, events)
    ids = "SELECT event_id FROM events ORDER BY event_id"

    conn = connect(str(tmp_path), erased=[sha(ns, "anon-x"), sha(ns, "user-x")], namespace=ns)
    assert [row[0] for row in conn.execute(ids).fetchall()] == ["e4", "e5", "e6"]
    body = campaign_history(conn, "c1", DAY0, DAY0 + 2 * DAY, "day")
    assert [w["impressions"] for w in body["windows"]] == [2, 1]
    assert body["totals"]["unique_users"] == 3

    # by profile id too, and hashes given in upper case
    conn = connect(str(tmp_path), erased=[sha(ns, "prof-z").upper()], namespace=ns)
    assert [row[0] for row in conn.execute(ids).fetchall()] == ["e1", "e2", "e3", "e5", "e6"]

    # the namespace is part of the hash: another tenant's hashes erase nothing
    conn = connect(str(tmp_path), erased=[sha("other", "anon-x")], namespace=ns)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (6,)
    assert connect(str(tmp_path)).execute("SELECT count(*) FROM events").fetchone() == (6,)


@pytest.fixture
def small(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    write(
        tmp_path,
        [
            event(1, DAY0, type="conversion", revenue=12.5, user_id="u,1"),
            event(2, DAY0 + 1, profile_id="p-long-profile-id"),
        ],
    )
    return connect(str(tmp_path))


QUERY = "SELECT event_id, revenue, user_id, date FROM events ORDER BY event_id"


def test_run_sql_table(small: duckdb.DuckDBPyConnection) -> None:
    text = run_sql(small, QUERY)
    assert text.splitlines() == [
        "event_id  revenue  user_id  date",
        "--------  -------  -------  ----------",
        "e1           12.5  u,1      2024-01-01",
        "e2                          2024-01-01",
    ]
    assert text == run_sql(small, QUERY, "table")


def test_run_sql_csv(small: duckdb.DuckDBPyConnection) -> None:
    text = run_sql(small, QUERY, "csv")
    assert list(csv.reader(io.StringIO(text))) == [
        ["event_id", "revenue", "user_id", "date"],
        ["e1", "12.5", "u,1", "2024-01-01"],
        ["e2", "", "", "2024-01-01"],
    ]


def test_run_sql_json(small: duckdb.DuckDBPyConnection) -> None:
    sql = "SELECT event_id, revenue, user_id, date, timestamp FROM events ORDER BY event_id"
    text = run_sql(small, sql, "json")
    assert text.endswith("]\n")  # a line of its own in a terminal
    assert json.loads(text) == [
        {
            "event_id": "e1",
            "revenue": 12.5,
            "user_id": "u,1",
            "date": "2024-01-01",
            "timestamp": "2024-01-01 00:00:00+00:00",
        },
        {
            "event_id": "e2",
            "revenue": None,
            "user_id": None,
            "date": "2024-01-01",
            "timestamp": "2024-01-01 00:00:00.001000+00:00",
        },
    ]
    assert json.loads(run_sql(small, "SELECT 1 AS x WHERE false", "json")) == []


def test_run_sql_errors(small: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error, match="nope"):
        run_sql(small, "SELECT nope FROM events")
    with pytest.raises(duckdb.Error):
        run_sql(small, "SELEC 1", "csv")
    with pytest.raises(ValueError):
        run_sql(small, "SELECT 1", "xml")
