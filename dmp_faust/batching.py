"""Sending micro-batches (see :mod:`dmp_faust.domain.batches`), partitioning, batch helpers."""

from __future__ import annotations

import functools
import zlib
from collections import defaultdict
from typing import Any

from aiokafka.partitioner import murmur2

from dmp_faust.app import settings
from dmp_faust.bulk import Records
from dmp_faust.domain.batches import RECORD_MAX_BYTES, encode_within
from dmp_faust.domain.watermarks import SOURCE_HEADER, encode_source

# How many records a stage takes from Faust at once, and how long it waits to fill them.
TAKE_MAX = 1000
TAKE_WITHIN_S = 0.02


@functools.lru_cache(maxsize=1 << 16)
def partition_for(key: str) -> int:
    """Kafka's default partitioner (murmur2), as every keyed topic here is partitioned.

    Cached: murmur2 is pure Python (about 4 µs), and profile and campaign ids recur.
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % settings.partitions


def dedup_partition(event_id: str) -> int:
    """The ``events.valid`` partition of an event id: where all its copies meet.

    Not a lookup key (nothing is ever asked for by event id), so any stable hash
    does; CRC-32 is in C, and event ids never recur enough to cache.
    """
    return zlib.crc32(event_id.encode()) % settings.partitions


class Outbox:
    """Items for one internal topic, gathered per destination partition.

    ``close`` turns them into records (one per destination partition, split
    above :data:`RECORD_MAX_BYTES` or :data:`~dmp_faust.domain.batches.MAX_ITEMS`
    items, the most a position can index) on the shared :class:`~dmp_faust.bulk.Records`,
    stamped with their source; the caller sends the records once per batch.
    """

    def __init__(self, records: Records) -> None:
        self.records = records
        self._items: defaultdict[int, list[Any]] = defaultdict(list)

    def add(self, key: str, item: Any) -> None:
        self._items[partition_for(key)].append(item)

    def add_to(self, partition: int, item: Any) -> None:
        self._items[partition].append(item)

    def close(self, source: tuple[int, int] | None = None) -> None:
        """Make records of what was gathered, stamped with ``source`` (source id, offset)."""
        headers = [(SOURCE_HEADER, encode_source(*source))] if source else []
        for partition, items in self._items.items():
            for value in encode_within(items, RECORD_MAX_BYTES):
                self.records.add(partition, None, value, headers)
        self._items.clear()
