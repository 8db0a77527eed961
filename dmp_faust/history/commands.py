"""``dmp-faust sql`` and ``dmp-faust history compact``: the history from the shell.

Both read the settings a worker reads (``DMP_HISTORY_URI``, ``DMP_DATA_DIR``,
``DMP_TOPIC_PREFIX``), so they find the files the workers write.
"""

from __future__ import annotations

import argparse
import sys
import time

from dmp_faust.history.files import Storage
from dmp_faust.history.sink import Erased
from dmp_faust.settings import Settings, SettingsError


def sql_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="dmp-faust sql",
        description="Run SQL over the Parquet history with DuckDB. The view `events` holds "
        "every accepted event (erased people left out), with hive columns `date` and `hour`.",
    )
    parser.add_argument("query", help='e.g. "SELECT type, count(*) FROM events GROUP BY 1"')
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    args = parser.parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    import duckdb

    from dmp_faust.history.query import open_history, run_sql

    storage = Storage(settings.history_root)
    try:
        conn = open_history(storage, Erased.load(storage, settings.app_id))
        print(run_sql(conn, args.query, args.format), end="")
    except duckdb.Error as exc:
        print(f"dmp-faust sql: {exc}", file=sys.stderr)
        return 1
    return 0


def history_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="dmp-faust history",
        description="Look after the Parquet history. `compact` merges each closed hour's "
        "files per partition; safe to stop at any point and to run while workers write.",
    )
    parser.add_argument("action", choices=("compact",))
    parser.parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    from dmp_faust.history.compact import compact

    storage = Storage(settings.history_root)
    started = time.monotonic()
    done = compact(storage, int(time.time() * 1000), Erased.load(storage, settings.app_id))
    print(
        f"history compact: {done.inputs} files merged into {done.merged} "
        f"({done.rows} rows), {done.removed} covered files removed, "
        f"in {time.monotonic() - started:.1f} s ({settings.history_root})"
    )
    return 0


def _settings() -> Settings | None:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"dmp-faust: {exc}", file=sys.stderr)
        return None
