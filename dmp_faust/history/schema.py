"""The history's file layout and row schema (version 1).

Every accepted event (a ``dmp.events.clean`` record) is one row of Apache
Parquet, in hive partitions by the event's UTC date and hour::

    <root>/events/date=YYYY-MM-DD/hour=HH/p003-000000001200-000000001799-g000011.parquet

The file name says which ``events.clean`` partition (``p003``) and which range
of its offsets (first and last, inclusive) the file's rows came from, and the
group generation of the worker that wrote it; a file made by ``dmp-faust
history compact`` ends in ``-c.parquet`` instead. A file
holds only the rows of its range whose event falls in its date and hour.

Columns are typed; ``properties`` and ``traits`` are JSON text, the user agent
and UTM parameters are columns of their own. ``kafka_partition`` and
``kafka_offset`` say where the row was read. The version is in each file's
key-value metadata (``dmp.schema_version``). A later version only adds
columns, so files of every version are read together by column name
(DuckDB's ``union_by_name``; a column a file lacks reads as NULL).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import pyarrow as pa

from dmp_faust.domain.enrich import UTM_KEYS, CleanEvent

SCHEMA_VERSION: Final = 1
VERSION_KEY: Final = b"dmp.schema_version"
EVENTS_DIR: Final = "events"

_STRING_COLUMNS: Final = (
    "event_id",
    "type",
    "profile_id",
    "anonymous_id",
    "user_id",
    "campaign_id",
    "ad_id",
    "url",
    "referrer",
    "ip",
)
_AGENT_COLUMNS: Final = ("browser", "browser_version", "os", "os_version", "device")

SCHEMA: Final = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("profile_id", pa.string(), nullable=False),
        *(pa.field(name, pa.string()) for name in _STRING_COLUMNS[3:]),
        pa.field("revenue", pa.float64()),
        pa.field("properties", pa.string()),  # JSON text
        pa.field("traits", pa.string()),  # JSON text
        *(pa.field(name, pa.string()) for name in _AGENT_COLUMNS),
        *(pa.field(name, pa.string()) for name in UTM_KEYS),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

# Ids a person can be found by: what erasure removes rows by.
ID_COLUMNS: Final = ("profile_id", "anonymous_id", "user_id")

_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 24 * _HOUR_MS
_NAME = re.compile(r"p(\d{3,})-(\d{12,})-(\d{12,})(?:(-c)|-g(\d{6,}))?\.parquet")
_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(CleanEvent)


@dataclass(frozen=True, order=True)
class FileName:
    """What a history file's name says: its partition, offsets, and if compacted, or
    else the group generation of the worker that wrote it (so that two workers that
    both believed they owned the partition never write the same file)."""

    partition: int
    first: int
    last: int
    compacted: bool = False
    generation: int | None = None

    def __str__(self) -> str:
        if self.compacted:
            tail = "-c"
        else:
            tail = "" if self.generation is None else f"-g{self.generation:06d}"
        return f"p{self.partition:03d}-{self.first:012d}-{self.last:012d}{tail}.parquet"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The name's parts, or None for a file that is not one of the history's."""
        match = _NAME.fullmatch(name)
        if match is None:
            return None
        generation = int(match[5]) if match[5] is not None else None
        return cls(int(match[1]), int(match[2]), int(match[3]), match[4] is not None, generation)


def hour_of(ts_ms: int) -> int:
    """The start (epoch ms) of the UTC hour that holds ``ts_ms``."""
    return ts_ms - ts_ms % _HOUR_MS


def hour_dir(hour_ms: int) -> str:
    """The hive directory of an hour, relative to the root."""
    days, rest = divmod(hour_ms, _DAY_MS)
    date = _civil(days)
    return f"{EVENTS_DIR}/date={date}/hour={rest // _HOUR_MS:02d}"


def parse_hour_dir(path: str) -> int | None:
    """The hour (epoch ms) of a hive directory ``.../date=D/hour=H``, or None."""
    match = re.search(r"date=(\d{4})-(\d{2})-(\d{2})/hour=(\d{2})/?$", path)
    if match is None:
        return None
    year, month, day, hour = (int(part) for part in match.groups())
    if hour > 23:
        return None
    try:
        return _days(year, month, day) * _DAY_MS + hour * _HOUR_MS
    except ValueError:  # not a date (2024-02-30)
        return None


class Rows:
    """Rows of one file under construction, kept as columns."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {field.name: [] for field in SCHEMA}

    def __len__(self) -> int:
        return len(self.columns["event_id"])

    def add(self, event: CleanEvent, partition: int, offset: int) -> None:
        columns = self.columns
        for name in _STRING_COLUMNS:
            columns[name].append(getattr(event, name))
        columns["timestamp"].append(event.timestamp)
        columns["revenue"].append(event.revenue)
        columns["properties"].append(_text(event.properties))
        columns["traits"].append(_text(event.traits))
        agent = event.user_agent
        for name in _AGENT_COLUMNS:
            columns[name].append(getattr(agent, name) if agent is not None else None)
        utm = event.utm or {}
        for name in UTM_KEYS:
            columns[name].append(utm.get(name))
        columns["kafka_partition"].append(partition)
        columns["kafka_offset"].append(offset)

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.columns, schema=SCHEMA)


def decode_clean(value: bytes) -> CleanEvent:
    """An ``events.clean`` record's value."""
    return _decode.decode(value)


def _text(value: dict[str, object] | None) -> str | None:
    return None if value is None else _json.encode(value).decode()


def _civil(days: int) -> str:
    """YYYY-MM-DD of a day count since 1970-01-01 (proleptic Gregorian)."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def _days(year: int, month: int, day: int) -> int:
    return (dt.date(year, month, day) - dt.date(1970, 1, 1)).days
