"""Sends and table writes paid per batch, below Faust's per-record machinery.

Faust's ``Topic.send`` and ``Table.__setitem__`` cost tens of microseconds a
record: a PendingMessage and a FutureMessage, sensor calls, and for a table a
RocksDB write of the changelog offset after every record. A stage handling a
thousand events at once would pay that a thousand times. Here:

- :class:`Records` appends a batch's records for a topic into one aiokafka
  record batch per partition (``create_batch``/``send_batch``);
- :class:`TableWrites` reads a batch's keys of one table partition with one
  RocksDB multi-get, sends their changelog records as one record batch and,
  once Kafka has them, writes them with one ``WriteBatch`` and stores the
  changelog offset once.

The guarantees are Faust's own: both wait until Kafka acknowledged the
records before the agent goes on (so a failed send raises in the agent, and
Faust flushes the producer before committing offsets anyway); the changelog
offset is stored only for acknowledged records, and under exactly-once only
when the transaction commits, as ``Table._on_changelog_sent`` does.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from dmp_faust.fence import Fenced
from dmp_faust.store import EPOCH_KEY, decode_epoch, epoch_header

Headers = list[tuple[str, bytes]]  # aiokafka's C record builder takes a list only


def _kafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's (the one Faust's own sends use)."""
    return app.producer._producer


class Records:
    """Records for one topic, gathered per partition and sent as record batches."""

    def __init__(self, app: Any, topic: Any) -> None:
        self.app = app
        self.topic = topic
        self._pending: defaultdict[int, list[tuple[bytes | None, bytes | None, Headers]]]
        self._pending = defaultdict(list)

    def __len__(self) -> int:
        return sum(len(records) for records in self._pending.values())

    def add(
        self, partition: int, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        self._pending[partition].append((key, value, headers or []))

    async def send(self) -> dict[int, int]:
        """Send what was gathered; return the last offset written per partition."""
        if not self._pending:
            return {}
        producer = _kafka_producer(self.app)
        name = self.topic.get_topic_name()
        sent: list[tuple[int, int, Any]] = []  # (partition, records, delivery future)
        for partition, records in self._pending.items():
            batch, count = producer.create_batch(), 0
            for key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    # Full: send it and start another (a first record always fits).
                    sent.append(
                        (
                            partition,
                            count,
                            await producer.send_batch(batch, name, partition=partition),
                        )
                    )
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
                count += 1
            sent.append(
                (partition, count, await producer.send_batch(batch, name, partition=partition))
            )
        self._pending.clear()
        delivered = await asyncio.gather(*(future for _, _, future in sent))
        last: dict[int, int] = {}
        for (partition, count, _), metadata in zip(sent, delivered, strict=True):
            last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
        return last


class TableWrites:
    """One batch's reads and writes of one partition of a Faust table.

    Reads see the batch's own writes. ``commit`` sends the changelog records,
    waits for them to be acknowledged, then writes RocksDB once; nothing is
    visible in the table before it.
    """

    def __init__(self, app: Any, table: Any, partition: int) -> None:
        self.app = app
        self.table = table
        self.partition = partition
        self._db = table.data._db_for_partition(partition)  # Faust's rocksdict store
        self._writes: dict[bytes, bytes | None] = {}
        self._reads: dict[bytes, bytes | None] = {}

    def prefetch(self, keys: Sequence[bytes]) -> None:
        """Read ``keys`` with one multi-get, for the ``get`` calls that follow."""
        missing = [key for key in keys if key not in self._writes and key not in self._reads]
        if missing:
            self._reads.update(zip(missing, self._db.get(missing), strict=True))

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        if key not in self._reads:
            self._reads[key] = self._db.get(key)
        return self._reads[key]

    def put(self, key: bytes, value: bytes | None) -> None:
        """Set ``key`` (``None`` deletes it, with a tombstone in the changelog)."""
        self._writes[key] = value

    async def commit(self, epoch: int, holds: Callable[[int], bool]) -> None:
        """Send the changelog records (tagged with ``epoch``, the group generation the
        take ran in; see :mod:`dmp_faust.store`), then write the database.

        ``holds(epoch)`` is asked once they are sent: a worker that left that
        generation meanwhile does not write its database (:class:`Fenced`).
        """
        if not self._writes:
            return
        batch = WriteBatch(raw_mode=True)
        changelog = Records(self.app, self.table.changelog_topic)
        tag = [epoch_header(epoch)]
        stored = decode_epoch(self._db.get(EPOCH_KEY))
        if epoch < stored:
            # Generations went back: the group was forgotten (empty for longer than the
            # broker's offsets retention) and started again at 1. A member of a group never
            # recovers records of a generation to come, so this is no woken worker: the
            # record marks where the changelog's epochs start again (see EpochStore).
            changelog.add(self.partition, EPOCH_KEY, str(epoch).encode(), tag)
        if epoch != stored:
            batch.put(EPOCH_KEY, str(epoch).encode())
        for key, value in self._writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            changelog.add(self.partition, key, value, tag)
        self._writes.clear()
        self._reads.clear()
        # The changelog first: the local database must never hold what the changelog
        # lacks. A replay after a crash finds such a write already applied and does not
        # write it again, so the partition's next owner, which has only the changelog,
        # would never see it. The other way round, a crash between the two leaves the
        # write in the changelog, and recovery puts it in the database.
        sent = await changelog.send()
        if not holds(epoch):
            # Its records are on the changelog, where the partition's owner skips them.
            raise Fenced(f"left generation {epoch} while writing {self.table.name}")
        self._db.write(batch)
        for partition, offset in sent.items():
            self._persist(TP(self.table.changelog_topic.get_topic_name(), partition), offset)

    def _persist(self, tp: TP, offset: int) -> None:
        if self.app.in_transaction:
            self.app.tables.persist_offset_on_commit(self.table.data, tp, offset)
        else:
            self.table.data.set_persisted_offset(tp, offset)
