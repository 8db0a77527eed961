"""DuckDB over the history: the ``events`` view, campaign statistics, ad-hoc SQL.

:func:`connect` opens an in-memory database whose view ``events`` reads every
Parquet file under ``<root>/events/``, with the hive columns ``date`` (DATE)
and ``hour`` (BIGINT), files of every schema version read together by column
name. Rows of erased people are left out of the view, so nothing built on it
sees them.

:func:`campaign_history` answers what ``GET /campaigns/{id}/stats`` answers,
over hours or days of the history instead of the live minutes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from glob import iglob
from typing import Any, Final

import duckdb
import pyarrow as pa

from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.domain.windows import CLICK, CONVERSION, IMPRESSION, ctr
from dmp_faust.history.compact import history_files, visible
from dmp_faust.history.files import Storage
from dmp_faust.history.schema import EVENTS_DIR, ID_COLUMNS, SCHEMA
from dmp_faust.history.sink import Erased

GRANULARITIES: Final = {"hour": 3_600_000, "day": 86_400_000}
MAX_BUCKETS: Final = 10_000
_EPOCH: Final = dt.date(1970, 1, 1)
_DAY_MS: Final = GRANULARITIES["day"]
_HIVE: Final = pa.schema([pa.field("date", pa.date32()), pa.field("hour", pa.int64())])


def files_glob(root: str) -> str:
    """The glob of every history file under ``root``, a directory or a URI."""
    return f"{root.rstrip('/')}/{EVENTS_DIR}/**/*.parquet"


def open_history(storage: Storage, erased: Erased) -> duckdb.DuckDBPyConnection:
    """:func:`connect` to the files of ``storage`` a reader should see: those no
    compacted file covers (see :mod:`dmp_faust.history.compact`)."""
    files = visible(history_files(storage.list(EVENTS_DIR)))
    scheme = storage.uri.partition("://")[0] + "://" if storage.local is None else ""
    paths = [f"{scheme}{storage.root}/{file.path}" for file in files]
    return connect(storage.root, erased.hashes, erased.namespace, paths)


def connect(
    root: str,
    erased: Iterable[str] = (),
    namespace: str = "",
    files: Sequence[str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the view ``events`` over the history at ``root``
    (``files``, when given: those files only).

    ``erased`` holds the hex sha256 of ``namespace + "\\x1f" + id`` of every
    erased id; a row whose profile, anonymous or user id hashes into it is not
    in the view. With no files yet the view is empty but has every column.
    """
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    pattern = files_glob(root)
    if files is not None and not files:
        _create_empty_files(conn)
    elif files is not None or _has_files(root, pattern):
        try:
            _create_files_view(conn, pattern if files is None else files)
        except duckdb.IOException as exc:
            if "No files found" not in str(exc):
                raise
            _create_empty_files(conn)
    else:
        _create_empty_files(conn)
    hashes = sorted({value.lower() for value in erased})
    if not hashes:
        conn.execute("CREATE VIEW events AS SELECT * FROM _files")
        return conn
    conn.execute("CREATE TABLE _erasure_prefix (prefix VARCHAR NOT NULL)")
    conn.execute("INSERT INTO _erasure_prefix VALUES (?)", [f"{namespace}\x1f"])
    hash_table = pa.table({"hash": pa.array(hashes, pa.string())})
    conn.from_arrow(hash_table).create("_erased")
    kept = " AND ".join(
        f"({column} IS NULL OR sha256((SELECT prefix FROM _erasure_prefix) || {column})"
        " NOT IN (SELECT hash FROM _erased))"
        for column in ID_COLUMNS
    )
    conn.execute(f"CREATE VIEW events AS SELECT * FROM _files WHERE {kept}")
    return conn


def _has_files(root: str, pattern: str) -> bool:
    """Whether a local root has a history file; a URI is taken to have some."""
    if "://" in root:
        return True
    return next(iglob(pattern, recursive=True), None) is not None


def _create_files_view(conn: duckdb.DuckDBPyConnection, pattern: str | Sequence[str]) -> None:
    # CREATE VIEW cannot take prepared parameters (DuckDB: "This type of statement
    # can't be prepared"), and the relation API's read_parquet has no hive_types,
    # so the glob goes into the SQL as a string literal: quotes doubled, the only
    # escape a standard SQL literal has. hive_types keeps ``hour`` a number
    # ("03" would otherwise be read as VARCHAR).
    if isinstance(pattern, str):
        literal = _literal(pattern)
    else:
        literal = "[" + ", ".join(_literal(path) for path in pattern) + "]"
    conn.execute(
        "CREATE VIEW _files AS SELECT * FROM read_parquet("
        f"{literal}, hive_partitioning = true, union_by_name = true,"
        " hive_types = {'date': DATE, 'hour': BIGINT})"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _create_empty_files(conn: duckdb.DuckDBPyConnection) -> None:
    columns = [*SCHEMA, *_HIVE]
    empty = pa.schema(columns).empty_table()
    conn.from_arrow(empty).create("_files")


def campaign_history(
    conn: duckdb.DuckDBPyConnection, campaign_id: str, from_ms: int, to_ms: int, granularity: str
) -> dict[str, Any]:
    """Campaign statistics of ``[from_ms, to_ms)`` by hour or by day, from the history.

    The body of the live stats route: one window per bucket of the range, in
    order, empty buckets as zeros; the totals' ``unique_users`` counts each
    profile once over the whole range.
    """
    size = GRANULARITIES.get(granularity)
    if size is None:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}")
    if from_ms % size or to_ms % size:
        raise ValueError(f"from and to must be aligned to the {granularity}")
    if to_ms <= from_ms:
        raise ValueError("to must be after from")
    count = (to_ms - from_ms) // size
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} {granularity}s is more than {MAX_BUCKETS}")
    rows = conn.execute(_HISTORY_SQL, _history_params(campaign_id, from_ms, to_ms, size))
    found: dict[int, tuple[Any, ...]] = {}
    total_users = 0
    for bucket, impressions, clicks, conversions, revenue, users, is_total in rows.fetchall():
        if is_total:
            total_users = users
        else:
            found[bucket] = (impressions, clicks, conversions, revenue, users)
    windows = [
        _window(from_ms + i * size, size, *found.get(i, (0, 0, 0, 0.0, 0))) for i in range(count)
    ]
    impressions = sum(w["impressions"] for w in windows)
    clicks = sum(w["clicks"] for w in windows)
    return {
        "campaign_id": campaign_id,
        "from": format_timestamp(from_ms),
        "to": format_timestamp(to_ms),
        "granularity": granularity,
        "totals": {
            "impressions": impressions,
            "clicks": clicks,
            "conversions": sum(w["conversions"] for w in windows),
            # as the live route: the sum of the windows' rounded revenue
            "revenue": round(sum(w["revenue"] for w in windows), 6),
            "ctr": round(ctr(clicks, impressions), 6),
            "unique_users": total_users,
        },
        "windows": windows,
    }


# One scan: a row per non-empty bucket, and the range's row (is_total) for its
# distinct users. The date condition lets DuckDB skip other days' directories.
_HISTORY_SQL: Final = """
SELECT
    (epoch_ms("timestamp") - $from_ms) // $size AS bucket,
    count(*) FILTER (WHERE type = $impression),
    count(*) FILTER (WHERE type = $click),
    count(*) FILTER (WHERE type = $conversion),
    coalesce(sum(revenue) FILTER (WHERE type = $conversion), 0.0),
    count(DISTINCT profile_id),
    grouping(bucket) = 1
FROM events
WHERE campaign_id = $campaign_id
    AND type IN ($impression, $click, $conversion)
    AND "date" BETWEEN $from_date AND $to_date
    AND "timestamp" >= make_timestamptz($from_us)
    AND "timestamp" < make_timestamptz($to_us)
GROUP BY GROUPING SETS ((bucket), ())
"""


def _history_params(campaign_id: str, from_ms: int, to_ms: int, size: int) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "from_ms": from_ms,
        "size": size,
        "from_us": from_ms * 1000,
        "to_us": to_ms * 1000,
        "from_date": _EPOCH + dt.timedelta(days=from_ms // _DAY_MS),
        "to_date": _EPOCH + dt.timedelta(days=(to_ms - 1) // _DAY_MS),
        "impression": IMPRESSION,
        "click": CLICK,
        "conversion": CONVERSION,
    }


def _window(
    start: int,
    size: int,
    impressions: int,
    clicks: int,
    conversions: int,
    revenue: float,
    users: int,
) -> dict[str, Any]:
    return {
        "start": format_timestamp(start),
        "end": format_timestamp(start + size),
        "impressions": impressions,
        "clicks": clicks,
        "conversions": conversions,
        "revenue": round(revenue, 6),
        "ctr": round(ctr(clicks, impressions), 6),
        "unique_users": users,
    }


FORMATS: Final = ("table", "csv", "json")


def run_sql(conn: duckdb.DuckDBPyConnection, sql: str, fmt: str = "table") -> str:
    """The result of ``sql`` as an aligned text table, CSV, or a JSON array of objects.

    NULL is an empty cell in a table and in CSV, ``null`` in JSON. A bad query
    raises :class:`duckdb.Error`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    result = conn.execute(sql)
    names = [column[0] for column in result.description or ()]
    rows = result.fetchall()
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str) + "\n"
    return _table(names, rows)


def _table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(name) for name in names]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    right = [_is_number_column(rows, i) for i in range(len(names))]

    def line(values: Sequence[str]) -> str:
        padded = (
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(names), rule, *(line(row) for row in cells)]) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


def _is_number_column(rows: Sequence[Sequence[Any]], index: int) -> bool:
    values = [row[index] for row in rows if row[index] is not None]
    return bool(values) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values
    )
