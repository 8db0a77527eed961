"""Sending micro-batches (see :mod:`dmp_faust.domain.batches`) and batch-time helpers."""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from aiokafka.partitioner import murmur2
from faust.streams import _current_event

from dmp_faust.app import settings
from dmp_faust.domain.batches import encode_batch
from dmp_faust.domain.watermarks import SOURCE_HEADER, encode_source

# How many records a stage takes from Faust at once, and how long it waits to fill them.
TAKE_MAX = 1000
TAKE_WITHIN_S = 0.02


def partition_for(key: str) -> int:
    """Kafka's default partitioner (murmur2), as every keyed topic here is partitioned."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % settings.partitions


class Outbox:
    """Items for one internal topic, gathered per destination partition, sent as one record each."""

    def __init__(self, topic: Any) -> None:
        self.topic = topic
        self._items: defaultdict[int, list[Any]] = defaultdict(list)

    def add(self, key: str, item: Any) -> None:
        self._items[partition_for(key)].append(item)

    async def send(self, source: tuple[int, int] | None = None) -> None:
        """Send what was gathered, stamped with ``source``: (source id, offset) of their record."""
        headers = [(SOURCE_HEADER, encode_source(*source))] if source else None
        for partition, items in self._items.items():
            await self.topic.send(partition=partition, value=encode_batch(items), headers=headers)
        self._items.clear()


@contextlib.contextmanager
def as_current(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table writes go to its partition.

    Inside ``stream.take_events`` the current event is the last one taken; a
    write for an earlier event of another partition would otherwise land in
    the wrong changelog partition.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
