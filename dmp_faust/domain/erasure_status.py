"""The erasure status table: the latest erasures of each partition, and no more.

Every ``DELETE /profiles/{id}`` starts an erasure with an id of its own, and
the profiles agent keeps its status (``erasing`` or ``erased``, and the hashed
ids it covers, :class:`dmp_faust.domain.identity.ErasureState`) under that id,
on the ``profiles.in`` partition the id falls on. So that the table does not
grow with the number of ``DELETE`` calls, each partition keeps the statuses
of its latest :data:`MAX_ERASURE_STATUSES` erasures: every new status gets the
next sequence number of its partition, and once more than the limit are kept
the oldest goes (its status and its sequence entry are deleted, with
tombstones). ``GET /erasures/{id}`` then answers 404 for it, as for an id
never issued. The order is the partition's order of the notes that created
them, so replays decide the same way.

Three kinds of keys share the table, none of which is a valid erasure id
(those start with ``er-``, :func:`is_erasure_id`):

* ``er-…``: an :class:`~dmp_faust.domain.identity.ErasureState`, msgpack;
* ``#seq:<partition>:<n>``: the erasure id that got sequence number ``n``;
* ``#log:<partition>``: a :class:`StatusLog`, msgpack.

Replays: a note is applied against the log, which keeps the position of the
last note applied. A note read again (at or below that position) updates a
status it finds (folding a note in twice changes nothing, see
:func:`~dmp_faust.domain.identity.note_erasure`) but does not create one: its
status has expired since. A note that is not read again but comes for an
erasure that expired (a late report, after a long outage) records it again,
as the newest.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from dmp_faust.domain.identity import ErasureNote, ErasureState, note_erasure

MAX_ERASURE_STATUSES: Final = 4096  # statuses kept per partition of the table
ERASURE_ID_PREFIX: Final = "er-"


class StatusLog(msgspec.Struct, omit_defaults=True):
    """Which statuses a partition keeps: sequence numbers ``first`` to ``next - 1``."""

    first: int = 0
    next: int = 0
    applied: int = -1  # position (in profiles.in) of the last note applied


class Store(Protocol):
    """One partition of the table, as the agent writes it (``bulk.TableWrites``)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes | None) -> None: ...


_logs: Final = msgspec.msgpack.Decoder(StatusLog)
_states: Final = msgspec.msgpack.Decoder(ErasureState)


def is_erasure_id(key: str) -> bool:
    return key.startswith(ERASURE_ID_PREFIX)


def log_key(partition: int) -> bytes:
    return f"#log:{partition}".encode()


def seq_key(partition: int, seq: int) -> bytes:
    return f"#seq:{partition}:{seq}".encode()


def read_status(raw: bytes | None) -> ErasureState | None:
    return _states.decode(raw) if raw else None


def keep_note(
    store: Store,
    partition: int,
    note: ErasureNote,
    position: int,
    limit: int = MAX_ERASURE_STATUSES,
) -> None:
    """Fold ``note`` (read at ``position`` of ``partition``) into its erasure's status,
    and evict the oldest statuses past ``limit``."""
    raw_log = store.get(log_key(partition))
    log = _logs.decode(raw_log) if raw_log else StatusLog()
    key = note.erasure_id.encode()
    raw = store.get(key)
    if raw is None and position <= log.applied:
        return  # read again: its status has expired since
    store.put(key, msgspec.msgpack.encode(note_erasure(read_status(raw), note)))
    if raw is None:
        store.put(seq_key(partition, log.next), key)
        log.next += 1
        while log.next - log.first > limit:
            oldest = store.get(seq_key(partition, log.first))
            if oldest is not None:
                store.put(oldest, None)
            store.put(seq_key(partition, log.first), None)
            log.first += 1
    log.applied = max(log.applied, position)
    store.put(log_key(partition), msgspec.msgpack.encode(log))
