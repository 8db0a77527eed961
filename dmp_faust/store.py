"""The tables' RocksDB store: Faust's, plus the epoch each changelog record was written in.

A worker paused past the session timeout (``SIGSTOP``, a VM stall) loses its
partitions, and can still send the changelog records of the take it held when
it wakes: Kafka does not fence a producer outside transactions. Those records
land after the ones of the partition's new owner, and a rebuild from the
changelog (a restart, a takeover, a worker on an empty disk) would end on
them: older values, written late.

So every changelog record a stage writes carries, in the header
:data:`EPOCH_HEADER`, the consumer group generation its take ran in, and this
store applies a changelog the way the fencing token of a lease is checked: a
record written in an older generation than one already applied to the same
changelog partition is skipped. The group coordinator numbers generations in
increasing order and gives a partition to one member per generation, so the
new owner writes in a newer generation than the one the woken worker still
believes in; the records the woken worker sent before the first of the new
owner's are kept, and they are what the new owner would have written for the
same input records (it reads them again after them; see docs/RELIABILITY.md).

The highest epoch applied is kept in each partition's database under
:data:`EPOCH_KEY` (next to Faust's changelog offset, under Faust's reserved
prefix), so a recovery that starts from the stored offset goes on judging
records as a full rebuild would. Records without the header (none that this
project writes) are applied as Faust applies them. A group the broker forgot
(empty past its offsets retention) starts its generations again at 1: the
first write after that puts a record under :data:`EPOCH_KEY` on the
changelog, from which epochs are judged anew.

The woken worker's own database is the other half: it applied its late
writes and stored an offset past the new owner's records, so a recovery from
it would never read them. :meth:`EpochStore.wipe` empties such a database; see
:mod:`dmp_faust.fence` for when.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from mode.utils.queues import FlowControlQueue
from rocksdict import WriteBatch

log = logging.getLogger(__name__)

EPOCH_HEADER = "dmp-epoch"
EPOCH_KEY = b"__faust\0dmp_epoch__"
SCHEME = "dmprocksdb"


def epoch_header(epoch: int) -> tuple[str, bytes]:
    return (EPOCH_HEADER, str(epoch).encode())


def record_epoch(headers: Any) -> int | None:
    """The epoch in a record's headers (a list of pairs, or a dict), or None."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        if key == EPOCH_HEADER:
            return int(value)
    return None


def decode_epoch(raw: bytes | None) -> int:
    return int(raw) if raw else -1


class Epochs:
    """Which changelog records of one partition to apply, in log order."""

    def __init__(self, applied: int) -> None:
        self.applied = applied  # the highest epoch applied so far (-1: none)
        self.skipped = 0

    def admit(self, epoch: int | None) -> bool:
        """Whether a record written in ``epoch`` (None: untagged) is applied."""
        if epoch is None:
            return True
        if epoch < self.applied:
            self.skipped += 1
            return False
        self.applied = epoch
        return True

    def restart(self, epoch: int) -> None:
        """The group started its generations again at ``epoch``: judge from there."""
        self.applied = epoch


class EpochStore(RocksDBStore):
    """Faust's RocksDB store that skips changelog records of a superseded epoch."""

    def epoch(self, partition: int) -> int:
        """The highest epoch this partition's database holds records of (-1: none)."""
        return decode_epoch(self._db_for_partition(partition).get(EPOCH_KEY))

    def apply_changelog_batch(
        self,
        batch: Iterable[Any],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        writes: defaultdict[int, WriteBatch] = defaultdict(lambda: WriteBatch(raw_mode=True))
        epochs: dict[int, Epochs] = {}
        offsets: dict[TP, int] = {}
        for event in batch:
            message = event.message
            offsets[message.tp] = max(message.offset, offsets.get(message.tp, -1))
            partition = message.partition
            if partition not in epochs:
                epochs[partition] = self._epochs_from(message)
            if message.key == EPOCH_KEY:  # generations started again (TableWrites.commit)
                epochs[partition].restart(decode_epoch(message.value))
                continue
            if not epochs[partition].admit(record_epoch(message.headers)):
                continue
            if message.value is None:
                writes[partition].delete(message.key)
            else:
                writes[partition].put(message.key, message.value)
        for partition, tracked in epochs.items():
            writes[partition].put(EPOCH_KEY, str(tracked.applied).encode())
            if tracked.skipped:
                self.log.warning(
                    "%s[%d]: skipped %d changelog records of an older generation "
                    "(written by a worker that had lost the partition)",
                    self.table_name,
                    partition,
                    tracked.skipped,
                )
        for partition, write in writes.items():
            self._db_for_partition(partition).write(write)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)

    def _epochs_from(self, message: Any) -> Epochs:
        """How to judge a partition's records from ``message`` on: from the epoch its
        database holds, unless the database already holds this record (its stored
        offset is at or past it). Then the changelog is being read again from an
        earlier point, and the stored epoch belongs to records that come later:
        judged by it, every record before them would be skipped. That happened after
        a wipe (``make test``, the short chaos run): changelog records Faust had
        buffered before the wipe were applied after it, and the rebuild from the
        start skipped 37 records of a window table, a whole campaign."""
        stored = self.persisted_offset(message.tp)
        if stored is not None and message.offset <= stored:
            return Epochs(-1)
        return Epochs(self.epoch(message.partition))

    def wipe(self) -> list[int]:
        """Empty every partition database this worker opened; return their numbers.

        With no changelog offset left, the next recovery of each reads its
        changelog from the start.
        """
        wiped = []
        for partition, db in list(self._dbs.items()):
            cursor = db.iter()
            cursor.seek_to_first()
            if not cursor.valid():
                continue
            first = cursor.key()
            cursor.seek_to_last()
            last = cursor.key()
            del cursor
            batch = WriteBatch(raw_mode=True)
            batch.delete_range(first, last)  # a range tombstone, whatever the size
            batch.delete(last)  # the end of a range is not in it
            db.write(batch)
            wiped.append(partition)
        self._key_index.clear()
        return wiped

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        for key in super()._visible_keys(db):
            if key != EPOCH_KEY:
                yield key

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        for key, value in super()._visible_items(db):
            if key != EPOCH_KEY:
                yield key, value


class ChangelogQueue(FlowControlQueue):  # type: ignore[type-arg]
    """Faust's queue of changelog records for its recovery, minus the records that
    were fetched in an earlier group generation than the current one.

    Faust's recovery (``Recovery._slurp_changelogs``) remembers the highest offset
    it took from this queue per partition, and skips any record at or below it. A
    rebalance clears the queue when the flow resumes, but a record whose delivery
    was waiting for the flow to resume (``Conductor.on_message`` waits before it
    puts) goes in after that clearing: a record fetched before the rebalance,
    taken as the next one of a recovery that has just started again from an
    earlier offset. The recovery then skipped every record from where it started up
    to that one, and the table lacked them. Found by the chaos suite: a worker
    woken from a pause empties its databases (:func:`dmp_faust.fence.wipe_if_dropped`)
    and rebuilds them from offset 0, while standby records it had fetched before
    the pause, hundreds of offsets further, were still waiting; the profile whose
    only record lay in between was gone. Every message carries the generation it
    was fetched in (Faust's ``Message.generation_id``): a record of an earlier
    generation is dropped here; the recovery reads it again from where it resumes.
    """

    def __init__(self, current_generation: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.current_generation = current_generation
        self.dropped = 0
        self._warned: int | None = None  # the generation of the last warning (one each)

    async def get(self) -> Any:
        while True:
            event = await super().get()
            fetched_in = getattr(event.message, "generation_id", None)
            if fetched_in is None or fetched_in == self.current_generation():
                return event
            self.dropped += 1
            if self._warned == self.current_generation():
                continue
            self._warned = self.current_generation()
            log.warning(
                "recovery: dropped changelog records fetched before the rebalance, the "
                "first of %s[%d] at offset %d, fetched in generation %s (now %s); read again",
                event.message.topic,
                event.message.partition,
                event.message.offset,
                fetched_in,
                self.current_generation(),
            )


def install_changelog_queue(app: Any) -> ChangelogQueue:
    """Give ``app``'s tables a :class:`ChangelogQueue` (before they are started)."""
    queue = ChangelogQueue(
        lambda: app.consumer_generation_id,
        maxsize=app.conf.stream_buffer_maxsize,
        flow_control=app.flow_control,
        clear_on_resume=True,
    )
    app.tables._changelog_queue = queue
    return queue


STORES.aliases[SCHEME] = f"{__name__}:EpochStore"
