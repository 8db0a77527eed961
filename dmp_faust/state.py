"""Table helpers shared by the agents: stream time and expiry sweeps.

Both must run inside an agent's stream iteration: Faust writes a table's
changelog to the partition of the event being processed, which is why a
sweep deletes only keys of the partition whose event it is handling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from dmp_faust.domain.windows import advance_stream_time


def encode_int(value: int) -> bytes:
    return str(value).encode()


def decode_int(raw: bytes | None) -> int | None:
    return int(raw) if raw else None


def header(headers: Any, name: str) -> bytes:
    """The value of Kafka header ``name`` (aiokafka gives a list of pairs), or b""."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        if key == name:
            return bytes(value)
    return b""


class StreamClock:
    """Stream time of one pipeline stage, per partition, kept in a table.

    Kept in a table rather than only in memory so that it survives restarts
    and moves with its partition to whichever worker owns it next. Writing
    the table on every event would cost a changelog record per event, so it
    is written when stream time enters a new second; the exact value is also
    kept in memory. Stream time only grows, so a remembered value is never
    ahead of the truth and ``max(memory, table, ts)`` is always right; after
    a restart the stage resumes from the last whole second it stored.
    """

    def __init__(self, table: Any, stage: str, persist_ms: int = 1000) -> None:
        self.table = table
        self.stage = stage
        self.persist_ms = persist_ms
        self._latest: dict[int, int] = {}

    def _key(self, partition: int) -> str:
        return f"{self.stage}:{partition}"

    def get(self, partition: int) -> int | None:
        stored = decode_int(self.table.get(self._key(partition)))
        latest = self._latest.get(partition)
        return stored if latest is None else advance_stream_time(stored, latest)

    def advance(self, partition: int, ts_ms: int) -> int:
        """Take ``ts_ms`` into account and return the partition's stream time."""
        stored = decode_int(self.table.get(self._key(partition)))
        new = advance_stream_time(
            advance_stream_time(stored, ts_ms), self._latest.get(partition, ts_ms)
        )
        self._latest[partition] = new
        if stored is None or new // self.persist_ms > stored // self.persist_ms:
            self.table[self._key(partition)] = encode_int(new)
        return new


ExpiredFn = Callable[[bytes, bytes, int], bool]
# Faust keeps the changelog offset of each partition's RocksDB under a key of its
# own (``__faust\0offset__``) in the same database as the table's keys.
FAUST_KEY_PREFIX = b"__faust"


class Sweeper:
    """Finds a table's expired keys a slice at a time, for an agent to delete.

    Every ``every`` events of a partition, the next ``scan`` keys of that
    partition's RocksDB are read from a cursor and those for which
    ``is_expired(key, value, stream_time)`` holds are returned, for the agent
    to delete (with a changelog tombstone). The cost per event stays constant and a full pass
    over a partition of ``n`` keys takes ``n * every / scan`` events. The
    cursor is memory only: after a restart a pass starts again from the top.
    """

    def __init__(self, table: Any, is_expired: ExpiredFn, every: int = 500, scan: int = 500):
        self.table = table
        self.is_expired = is_expired
        self.every = every
        self.scan = scan
        self._countdown: defaultdict[int, int] = defaultdict(int)
        self._cursor: dict[int, bytes | None] = {}

    def tick(self, partition: int, stream_time: int) -> list[bytes]:
        """Count one event of ``partition``; when a slice is due, return its expired keys.

        The caller deletes them, with the writes of the batch it is handling.
        """
        self._countdown[partition] += 1
        if self._countdown[partition] < self.every:
            return []
        self._countdown[partition] = 0
        return self._scan(partition, stream_time)

    def _scan(self, partition: int, stream_time: int) -> list[bytes]:
        db = self.table.data._db_for_partition(partition)  # Faust's RocksDB store
        expired: list[bytes] = []
        items = db.items(from_key=self._cursor.get(partition))
        for seen, (key, value) in enumerate(items):
            if seen == self.scan:
                self._cursor[partition] = key
                break
            if key.startswith(FAUST_KEY_PREFIX):  # Faust's own bookkeeping, not table data
                continue
            if self.is_expired(key, value, stream_time):
                expired.append(key)
        else:
            self._cursor[partition] = None
        return expired
