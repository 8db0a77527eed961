"""Which input partitions of a stage have records that will never come by themselves.

After a rebalance, Faust 0.15 can drop records it had fetched and queued: when
its recovery finds no changelog to read, it resumes the flow (and the fetcher
fetches and queues records), seeks the stream partitions to their committed
offsets, then resumes the flow again, and that second resume empties every
queue. The fetch position stays past the dropped records, so Faust never
fetches them again. The stage's input gate (:class:`dmp_faust.state.InputGate`)
reads such a hole when a later record of the partition shows it; at the end of
a partition nothing later comes, and the records would wait for the next
input, however long that takes (a takeover test waited minutes, see
docs/RELIABILITY.md).

So a stage that waited a while with nothing arriving from a partition
compares the next offset it has to process with the partition's end offset,
and reads what lies between itself. These functions decide which partitions
and which offsets; the gate does the reading, between two takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping


def quiet_partitions(
    assigned: Iterable[int],
    last_seen: MutableMapping[int, float],
    now: float,
    quiet_s: float,
) -> list[int]:
    """The ``assigned`` partitions nothing arrived from for ``quiet_s`` (sorted).

    ``last_seen`` holds, per partition, when a record of it last arrived, on the
    same clock as ``now`` (the gate's counts only the time the stage waits); it is
    updated here: a partition newly assigned starts its clock now (Faust may
    be about to deliver its records, and a read of them would be wasted), and
    a partition no longer assigned is forgotten, so that it starts afresh if
    it comes back.
    """
    mine = set(assigned)
    for partition in list(last_seen):
        if partition not in mine:
            del last_seen[partition]
    for partition in mine:
        last_seen.setdefault(partition, now)
    return sorted(p for p in mine if now - last_seen[p] >= quiet_s)


def unread_tails(
    next_offsets: Mapping[int, int], ends: Mapping[int, int], budget: int
) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets ``(first, stop)`` the stage is to read now: from the
    next one it has to process towards the partition's end offset, where there are any.

    ``next_offsets`` are the stage's own (for a partition it never processed, the
    start of the partition's log); ``ends`` the partitions' end offsets, as
    read from Kafka; a partition missing from either is left alone. At most
    ``budget`` offsets in all, shared evenly (at least one each): a tail can be
    a whole backlog, and the stage holds what it reads in memory, as it holds a
    take. What is left is for the next check.
    """
    tails = {
        partition: (first, ends[partition])
        for partition, first in sorted(next_offsets.items())
        if partition in ends and first < ends[partition]
    }
    share = max(1, budget // len(tails)) if tails else 0
    return {
        partition: (first, min(end, first + share)) for partition, (first, end) in tails.items()
    }
