"""Identity stitching as a fold: one command in, a record and messages out.

The profile agent reads ``profiles.in``, keyed by an id. For each command it
calls :func:`handle` with the record stored under that key, and gets back
the new record, the commands to send on (keyed by other ids), and the
segment changes. Everything that must cross partitions travels as one of
these keyed commands; nothing is shared in memory.

**What a link is.** Every id has at most one record. An event carrying an
anonymous id ``a`` and a user id ``u`` (``a != u``) is a *link request*,
decided on ``a``'s partition, in that partition's order:

* if ``a``'s record has never been linked, it links now: it freezes
  (``merged_into = u``: the *pointer* of ``a``) and sends its whole state,
  that event included, to ``u`` as one ``MergeFragment``. This holds for any
  ``a``: one that is only anonymous, and one that is itself a user whose
  profile holds the fragments of others (a user id reused as an anonymous id):
  the whole person moves under ``u``;
* if ``a``'s record is linked already (or was, see cycles), the pointer does
  not move: the event counts for ``u``'s person (it is sent to ``u``).

A pointer is set once. The pointers form a graph in which every id has at
most one way out, so each connected *person* is either a tree, whose root
(the one id not linked) is its canonical id, or a tree hanging on one cycle
(``x -> y`` and ``y -> x``; ``x -> y -> z -> x``). The cycle is broken at its
smallest id ``m``: ``m``'s pointer is cut and ``m`` is the canonical id. So
the person of an id, and its canonical id, depend only on the pointers, and
every canonical id is a user id (every id on a cycle is the target of a link).

**How data moves.** A record that is linked holds nothing live: every
command that reaches it (events for the id, fragments, erasures) goes on
along its pointer, with the ids it has passed in ``path``. Data thus only
ever moves along pointers and is added up where it meets a record that is
not linked, a root; a root that later links sends what it holds on as one
fragment. A command that comes back to an id already in its path has gone
round a cycle; at the cycle's smallest id it stops: that id cuts its
pointer, clears the frozen copy it kept (that copy is itself travelling
round the cycle and will arrive) and becomes the root. So every event is
counted once, at the root of its person, whatever order the partitions run
in; a command makes at most about two rounds of its person's pointers, and
never more than ``MAX_HOPS`` hops: at that length the id it reached becomes a
root as if it closed a cycle (a chain that long can only be built on purpose;
it splits the person there and still counts each event once).

Commands (see :mod:`dmp_faust.domain.profiles` for why the result does not
depend on arrival order):

* ``FoldEvent(resolve=True)``: keyed by an event's anonymous_id: a link
  request when it carries another user id, else an anonymous event.
* ``FoldEvent(resolve=False)``: keyed by a user_id: fold.
* ``MergeFragment``: keyed by a user_id: merge another record's state into it.
* ``Erase``: keyed by the id a ``DELETE`` named; goes along the pointers to
  the root, which deletes its profile, and sends ``EraseLink`` to each linked
  id, which deletes that id's record and answers ``EraseDone``.
* ``Unlink``: keyed by an id that a root can no longer list (past
  ``profiles.Limits.ids``): its link goes (:func:`_unlink`).
* ``ErasureNote``: keyed by an erasure id: what the erasure status table
  keeps (:func:`note_erasure`).

Replays: each fold is guarded by the watermark of the command's source
record, stored in the record it changes. A linked record that sees again the
linking record re-sends its frozen state (the user's watermark takes the
first copy that arrives and drops the other); earlier records, read again,
change nothing, since their effect is in that state. Commands it forwards
after the link are recorded in its ``forwarded`` marks and re-forwarded when
read again (see :func:`_forward`).

**Erasure** (``docs/SECURITY.md``): an ``Erase`` carries a cutoff
``before_ms`` (an event time, set by the view). The erased ids keep, under a
hash of the id, the cutoff and the erased record's watermarks, and nothing
else. Whatever arrives for such an id later is dropped if it holds an event
at or before the cutoff: an event whose time is ``<= before_ms``, a fragment
whose ``first_seen`` is; a fragment dropped at an erased user also erases the
ids it names (the anonymous ids whose link was still travelling). Event time
is part of the record, so a replay decides the same way; the watermarks stop
replays of what the erased record had folded (events after the cutoff
included) from bringing it back. Events after the cutoff start a new profile.

**Past the id limit.** A root lists at most ``Limits.ids`` ids (its own and
the smallest others), and an erasure sends ``EraseLink`` to those only. So
every fold or merge that leaves an id out of a record's ``ids`` (one it listed,
or one the command brought) sends that id an ``Unlink``: a linked record that
receives it is deleted, its marks kept as an erasure's are (without a
cutoff). That id's data had reached this root along its pointers (that is how
the root came to list it), so it stays counted here; what the id holds is
only its frozen copy and its pointer, both of which go. Its later commands,
and those of ids linked through it, find no record and start a new profile
(a new person) under it. A root (not linked) never goes by an ``Unlink``.
After a drain every linked record is listed by the canonical profile its
data went to, so an erasure of that profile reaches it. The ids a command
went through (its ``path``) are of the person it reaches, listed or not: an
``Erase`` erases them with the root it reaches (also at an id with no record,
where a pointer led to an unlinked id), and so does a command dropped at an
erased id; an ``EraseLink`` that finds a root erases the ids it lists.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.profiles import LIMITS, Limits, Profile, ProfileEvent
from dmp_faust.domain.segments import changes
from dmp_faust.domain.watermarks import Watermarks

MAX_HOPS: Final = 16  # the longest path a command travels along pointers
# erasures a record under way keeps to report done (``Profile.erasure_ids``); more
# DELETEs of the person meanwhile are reported by their own answers (see _erase_command)
MAX_ERASURES_WAITING: Final = 16


class FoldEvent(msgspec.Struct, tag="event"):
    event: ProfileEvent
    resolve: bool
    path: list[str] = msgspec.field(default_factory=list)  # linked ids passed through


class MergeFragment(msgspec.Struct, tag="merge"):
    fragment: Profile
    path: list[str] = msgspec.field(default_factory=list)


class Erase(msgspec.Struct, tag="erase"):
    before_ms: int | None = None  # the cutoff: events at or before it are erased
    erasure_id: str = ""  # where its status is kept (see :func:`note_erasure`)
    path: list[str] = msgspec.field(default_factory=list)


class EraseLink(msgspec.Struct, tag="erase_link"):
    user_id: str  # the record being erased, which waits for the answer
    before_ms: int | None = None
    erasure_id: str = ""  # the erasure to report done (see EraseDone)


class EraseDone(msgspec.Struct, tag="erase_done"):
    profile_id: str  # a linked id that is erased now
    # the erasure it answers: reported done again if it arrives once the record is gone
    # (read again after a crash that lost the report)
    erasure_id: str = ""


class Unlink(msgspec.Struct, tag="unlink"):
    user_id: str  # the root that can no longer list this id (see profiles.Limits)


class ErasureNote(msgspec.Struct, tag="erasure_note"):
    erasure_id: str
    erased: bool  # False: under way; True: the erasure's records are deleted
    ids: list[str] = msgspec.field(default_factory=list)  # hashed ids it covers (hex)


Command = FoldEvent | MergeFragment | Erase | EraseLink | EraseDone | Unlink | ErasureNote
Travelling = FoldEvent | MergeFragment | Erase


def command_time(command: Command) -> int | None:
    """The event time a command carries (what advances its partition's stream time)."""
    if isinstance(command, FoldEvent):
        return command.event.ts
    if isinstance(command, MergeFragment):
        return command.fragment.last_seen
    return None


def erasure_key(namespace: str, profile_id: str) -> bytes:
    """Where an erased id's marks are kept: a hash, so the id itself is not."""
    return hashlib.sha256(f"{namespace}\x1f{profile_id}".encode()).digest()


_CUTOFF: Final = struct.Struct("<q")


def encode_erased(marks: Watermarks, before_ms: int | None) -> bytes:
    """An ``erasures`` value: the erased record's watermarks, then the cutoff if any."""
    tail = b"" if before_ms is None else _CUTOFF.pack(before_ms)
    return marks.to_bytes() + tail


def decode_erased(raw: bytes) -> tuple[Watermarks, int | None]:
    """The inverse of :func:`encode_erased` (values from before cutoffs have none)."""
    marks, pos = Watermarks.read(raw)
    before_ms = _CUTOFF.unpack_from(raw, pos)[0] if len(raw) >= pos + _CUTOFF.size else None
    return marks, before_ms


class ErasureState(msgspec.Struct):
    """What ``GET /erasures/{id}`` shows: ``erasing`` or ``erased``, and the hashed ids."""

    status: str
    ids: list[str] = msgspec.field(default_factory=list)


def note_erasure(state: ErasureState | None, note: ErasureNote) -> ErasureState:
    """Fold a note into an erasure's status: ids add up, ``erased`` is final."""
    erased = note.erased or (state is not None and state.status == "erased")
    ids = sorted(set(state.ids if state else ()) | set(note.ids))
    return ErasureState("erased" if erased else "erasing", ids)


def route_event(event: ProfileEvent) -> tuple[str, FoldEvent]:
    """Where an accepted event enters profile building: its anonymous id if it has one."""
    if event.anonymous_id:
        return event.anonymous_id, FoldEvent(event, resolve=True)
    return event.user_id or "", FoldEvent(event, resolve=False)


@dataclass
class Outcome:
    record: Profile | None  # the key's new record; None: delete it
    write: bool = False  # whether the record changed
    sends: list[tuple[str, Command]] = field(default_factory=list)
    entered: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    profiles_delta: int = 0  # canonical profiles created (+1) or removed (-1)
    erased: Watermarks | None = None  # set when the record was erased: what it had seen
    before_ms: int | None = None  # set when the key's erasure cutoff is to be kept


SegmentsOf = Callable[[Profile], frozenset[str]]


@dataclass(frozen=True)
class Context:
    """What a command is handled with: where it is from, where it is, the time, the rules."""

    source: tuple[int, int]  # (source id, offset) the command was made from
    here: tuple[int, int]  # (source id, offset) of the profiles.in record being handled
    stream_time: int
    horizon_ms: int
    segments_of: SegmentsOf
    erased: Watermarks | None = None  # marks left by an erasure of this key, if any
    before_ms: int | None = None  # the cutoff of an erasure of this key, if any
    namespace: str = ""  # of the hashed ids an erasure reports (see erasure_key)
    # sent by a view (an Erase): no source header. Its source is then its own offset,
    # counted as a stream of its own: the sends of this partition's keys that are still
    # on their way have lower offsets of this partition, and must not look covered
    from_view: bool = False
    limits: Limits = LIMITS  # of what a profile keeps (see profiles.Limits)

    def new_record(self, key: str) -> Profile:
        """A first record for ``key``, which ignores what an earlier erasure had seen."""
        marks = dict(self.erased.offsets) if self.erased is not None else {}
        return Profile(profile_id=key, ids=[key], applied=marks)

    def hashed(self, ids: list[str]) -> list[str]:
        return sorted({erasure_key(self.namespace, i).hex() for i in ids})


def handle(key: str, record: Profile | None, command: Command, ctx: Context) -> Outcome:
    if isinstance(command, ErasureNote):
        return Outcome(record)  # kept by the agent in the erasure status table
    if isinstance(command, EraseDone):
        return _erase_done(key, record, command)
    if isinstance(command, EraseLink):
        return _erase_link(key, record, command, ctx)
    if isinstance(command, Erase):
        return _erase_command(key, record, command, ctx)
    if isinstance(command, Unlink):
        return _unlink(record, ctx)
    if _before_cutoff(command, ctx.before_ms):
        return _dropped(key, record, command, ctx)
    if record is not None and record.merged_into:
        return _at_linked(key, record, command, ctx)
    return _at_root(key, record, command, ctx)


def _at_root(
    key: str, record: Profile | None, command: FoldEvent | MergeFragment, ctx: Context
) -> Outcome:
    if isinstance(command, MergeFragment):
        part = command.fragment
        return _update(
            key,
            record,
            ctx,
            lambda p: pf.merge(p, part, ctx.stream_time, ctx.horizon_ms, ctx.limits),
            part.ids,
        )
    if command.resolve:
        return _resolve(key, record, command.event, ctx)
    return _fold(key, record, command.event, ctx)


def _fold(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    return _update(
        key,
        record,
        ctx,
        lambda p: pf.fold(p, event, ctx.stream_time, ctx.horizon_ms, ctx.limits),
        (event.anonymous_id, event.user_id),
    )


def _before_cutoff(command: FoldEvent | MergeFragment, before_ms: int | None) -> bool:
    """Whether the command holds an event at or before an erasure cutoff of its key."""
    if before_ms is None:
        return False
    if isinstance(command, FoldEvent):
        return command.event.ts <= before_ms
    first = command.fragment.first_seen
    return first is not None and first <= before_ms


def _dropped(
    key: str, record: Profile | None, command: FoldEvent | MergeFragment, ctx: Context
) -> Outcome:
    """Erased data arriving late: dropped. A fragment's own ids are erased too, and so
    is the person of the user a dropped link request names (a link still travelling),
    and the linked ids the command came through (``path``: their pointers lead to this
    erased id; one may be listed nowhere, see :func:`_unlink`). A command this key had
    handled before it was erased (read again) just drops."""
    handled = (record is not None and _handled(record, ctx.source)) or (
        ctx.erased is not None and ctx.erased.covers(*ctx.source)
    )
    if handled:
        return Outcome(record)
    link = EraseLink(key, ctx.before_ms)
    through: list[tuple[str, Command]] = [(i, link) for i in sorted(set(command.path) - {key})]
    if isinstance(command, FoldEvent):
        user_id = command.event.user_id
        if command.resolve and user_id and user_id != key:
            return Outcome(record, sends=[(user_id, Erase(ctx.before_ms))])
        return Outcome(record, sends=through)
    named = set(command.fragment.ids) - {key, *command.path}
    return Outcome(record, sends=through + [(i, link) for i in sorted(named)])


def seen(record: Profile) -> Watermarks:
    """Every source a record has folded or forwarded."""
    marks = Watermarks(dict(record.applied))
    for source, offset in record.forwarded.items():
        marks.advance(source, offset)
    return marks


def _handled(record: Profile, source: tuple[int, int]) -> bool:
    """``seen(record).covers(*source)`` without building the merged marks (every fold
    asks)."""
    return record.watermarks.covers(*source) or Watermarks(record.forwarded).covers(*source)


def _resolve(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    user_id = event.user_id
    if user_id and user_id != key:
        if record is not None and record.linked_at is not None:  # its link was cut: for good
            if record.watermarks.covers(*ctx.source):  # folded before, in the frozen state
                return Outcome(record)
            return _forward(record, user_id, _for_another_user(event), ctx)
        return _link(key, record, event, ctx)
    return _fold(key, record, event, ctx)


def _at_linked(
    key: str, record: Profile, command: FoldEvent | MergeFragment, ctx: Context
) -> Outcome:
    """A command for an id that is linked already: it goes on along the pointer."""
    if record.watermarks.covers(*ctx.source):  # folded before the link, so in the merge
        resolving = isinstance(command, FoldEvent) and command.resolve
        if resolving and ctx.here[1] == record.linked_at:  # the linking record, read again
            state = MergeFragment(record_state(record, ctx.limits))
            sends = [(record.merged_into or "", state), *_unlinked(key, record, ctx)]
            return Outcome(record, sends=sends)
        return Outcome(record)
    if isinstance(command, FoldEvent) and command.resolve:
        user_id = command.event.user_id
        if user_id and user_id not in (key, record.merged_into):  # another user's event
            return _forward(record, user_id, _for_another_user(command.event), ctx)
    return _along(key, record, command, ctx)


def _for_another_user(event: ProfileEvent) -> FoldEvent:
    """An event naming a user other than the one this id is linked to counts for that
    user; the anonymous id is not that user's (it stays out of the user's ``ids``)."""
    return FoldEvent(msgspec.structs.replace(event, anonymous_id=None), resolve=False)


def _along(key: str, record: Profile, command: Travelling, ctx: Context) -> Outcome:
    """Forward ``command`` along ``key``'s pointer, or stop it here if it closed a cycle."""
    path = command.path
    if key in path:
        cycle = path[path.index(key) :]
        if key == min(cycle):
            return _cut(key, record, command, ctx)
    elif len(path) >= MAX_HOPS:
        return _cut(key, record, command, ctx)
    hop = [*path, key]
    sent: Command
    if isinstance(command, FoldEvent):
        sent = FoldEvent(command.event, resolve=False, path=hop)
    elif isinstance(command, MergeFragment):
        sent = MergeFragment(command.fragment, path=hop)
    else:
        sent = Erase(command.before_ms, command.erasure_id, path=hop)
    return _forward(record, record.merged_into or "", sent, ctx)


def _cut(key: str, record: Profile, command: Travelling, ctx: Context) -> Outcome:
    """Break a cycle at its smallest id: cut the pointer, become the person's root.

    The frozen state this record kept was sent round the cycle when it linked
    and arrives here like any fragment, so the root starts empty; it keeps its
    marks, so that its own records read again are still recognised.
    """
    root = Profile(
        profile_id=key,
        ids=[key],
        applied=record.applied,
        forwarded=record.forwarded,
        forwarded_at=record.forwarded_at,
        linked_at=record.linked_at,
    )
    if isinstance(command, Erase):  # the frozen state is this person's: erase it
        frozen = msgspec.structs.replace(record, merged_into=None, segments=[])
        outcome = _erase(key, frozen, command, ctx, canonical=False)
        outcome.write = True
        return outcome
    outcome = _at_root(key, root, command, ctx)
    outcome.write = True
    if outcome.record is not None and pf.has_data(outcome.record) and outcome.record.counts:
        outcome.profiles_delta += 1
    return outcome


def _forward(record: Profile, target: str, command: Command, ctx: Context) -> Outcome:
    """Send a command on, stamped with this record's position.

    A command from a source this record has forwarded already is sent again
    only when it is read again at the position of the record's latest
    forward, with the same stamp (the target drops it if the first copy
    arrived). The agent writes a take's records only after its sends are
    acknowledged, so re-reading finds earlier forwards delivered; the
    simulator's harshest crash, which loses the sends of the last record
    whose state was written, is covered by this one re-send. Any other (an
    earlier forward read again, a new copy that stage 2 sent after its own
    crash, read again or not) is dropped: under a new stamp it would get past
    the target's watermark.
    """
    marks = Watermarks(record.forwarded)
    if marks.covers(*ctx.source) and ctx.here[1] != record.forwarded_at:
        return Outcome(record)
    marks.advance(*ctx.source)
    record.forwarded_at = max(ctx.here[1], record.forwarded_at or -1)
    return Outcome(record, write=True, sends=[(target, command)])


def _link(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    user_id = event.user_id or ""
    existed = record is not None and pf.has_data(record)
    record = record or ctx.new_record(key)
    if record.watermarks.covers(*ctx.source):  # erased since
        return Outcome(record if existed else None)
    listed = _listed(record, (event.anonymous_id, user_id), ctx.limits.ids)
    pf.fold(record, event, ctx.stream_time, ctx.horizon_ms, ctx.limits)
    record.watermarks.advance(*ctx.source)
    exited, record.segments = sorted(record.segments), []
    record.merged_into, record.linked_at = user_id, ctx.here[1]
    return Outcome(
        record,
        write=True,
        sends=[
            (user_id, MergeFragment(record_state(record, ctx.limits))),
            *_unlinks(key, listed, record, ctx, user_id),  # not the user: it leads elsewhere
        ],
        exited=exited,
        profiles_delta=-1 if existed else 0,
    )


def record_state(record: Profile, limits: Limits = LIMITS) -> Profile:
    """A linked record's frozen state, as merged into its user."""
    return pf.frozen_copy(record, record.merged_into or record.profile_id, limits)


def _update(
    key: str,
    record: Profile | None,
    ctx: Context,
    step: Callable[[Profile], object],
    brought: Iterable[str | None] = (),
) -> Outcome:
    """Apply ``step`` (a fold or a merge bringing the ids ``brought``) once."""
    existed = record is not None
    record = record or ctx.new_record(key)
    if _handled(record, ctx.source):  # folded or forwarded already, or erased since
        return Outcome(record, sends=_unlinked(key, record, ctx)) if existed else Outcome(None)
    created = not existed or not pf.has_data(record)  # new, or new since an erasure
    listed = _listed(record, brought, ctx.limits.ids)
    step(record)
    record.watermarks.advance(*ctx.source)
    entered, exited = changes(record.segments, ctx.segments_of(record))
    record.segments = sorted(set(record.segments) - set(exited) | set(entered))
    return Outcome(
        record,
        write=True,
        sends=_unlinks(key, listed, record, ctx),
        entered=entered,
        exited=exited,
        profiles_delta=1 if created else 0,
    )


# --- past the id limit ------------------------------------------------------------------


def _listed(record: Profile, brought: Iterable[str | None], limit: int) -> set[str] | None:
    """The ids a record lists with those a command brings, if the step may leave some
    out (None: it cannot, so nothing is computed for the common case)."""
    ids = [i for i in brought if i]
    if not record.ids_truncated and len(record.ids) + len(ids) <= limit:
        return None
    return {*record.ids, *ids}


def _unlinks(
    key: str, listed: set[str] | None, record: Profile, ctx: Context, target: str = ""
) -> list[tuple[str, Command]]:
    """``Unlink`` for each id the step left out of ``record.ids`` (see the module doc),
    but the key and the ``target`` its link goes to. They are kept in the record with
    the position of the step, to be sent again if it is read again (:func:`_unlinked`)."""
    dropped = [] if listed is None else sorted(listed.difference(record.ids, (key, target)))
    record.unlinked, record.unlinked_at = dropped, ctx.here[1] if dropped else None
    return [(i, Unlink(key)) for i in dropped]


def _unlinked(key: str, record: Profile, ctx: Context) -> list[tuple[str, Command]]:
    """The Unlinks of the record's latest step, if that is the record read again.

    The agent writes a record only once its sends are acknowledged, so this
    matters only to the simulator's harshest crash (see :func:`_forward`); the
    targets drop a second copy (same stamp).
    """
    if not record.unlinked or ctx.here[1] != record.unlinked_at:
        return []
    return [(i, Unlink(key)) for i in record.unlinked]


def _unlink(record: Profile | None, ctx: Context) -> Outcome:
    """A linked id that a root can no longer list goes: its pointer and frozen copy.

    The root listed it, so its data reached that root along its pointers (the
    root may have linked on since, or this id may lead to it through others:
    it is the same person) and stays counted there. What it had seen is kept
    as erased marks, so that its records read again bring nothing back. A root
    (never linked, or a cycle's cut root, or one being erased) stays, and so
    does a record that had seen this Unlink already (read again). Either way the
    Unlink leaves its mark: read again after the root has linked, or after a
    record was created, it must still change nothing.
    """
    if record is None:  # marks kept, so that it is recognised if read again
        if ctx.erased is not None and ctx.erased.covers(*ctx.source):
            return Outcome(None)
        marks = Watermarks(dict(ctx.erased.offsets) if ctx.erased else {})
        marks.advance(*ctx.source)
        return Outcome(None, erased=marks)
    if seen(record).covers(*ctx.source):
        return Outcome(record)
    if not record.merged_into:  # the mark, so that a replay after it links is recognised
        record.watermarks.advance(*ctx.source)
        return Outcome(record, write=True)
    marks = seen(record)
    marks.advance(*ctx.source)
    return Outcome(None, write=True, erased=marks)


# --- erasure ----------------------------------------------------------------------------


def _note(command: Erase, erased: bool, ids: list[str]) -> list[tuple[str, Command]]:
    if not command.erasure_id:
        return []
    return [(command.erasure_id, ErasureNote(command.erasure_id, erased, ids))]


def _erase_command(key: str, record: Profile | None, command: Erase, ctx: Context) -> Outcome:
    started = _note(command, False, ctx.hashed([key])) if ctx.from_view else []
    if record is not None and record.merged_into:
        if record.watermarks.covers(*ctx.source):  # an erasure from before this link
            return Outcome(record, sends=started + _note(command, True, []))
        outcome = _along(key, record, command, ctx)
        outcome.sends[:0] = started
        return outcome
    # handled here before (the record that forwarded it may be gone since), or covered
    kept = _kept_already(ctx.before_ms, command.before_ms) or (
        ctx.erased is not None and ctx.erased.covers(*ctx.source)
    )
    if record is None and command.path and not kept:  # a pointer that leads nowhere
        return _erase(key, ctx.new_record(key), command, ctx, canonical=False)
    if record is None:  # nothing here (yet): keep the cutoff for what is still in flight
        done = started + _note(command, True, ctx.hashed([key]) if started else [])
        if kept:
            return Outcome(None, sends=done)
        marks = Watermarks(dict(ctx.erased.offsets) if ctx.erased else {})
        marks.advance(*ctx.source)  # so that a replay of it is recognised
        return Outcome(None, sends=done, erased=marks, before_ms=command.before_ms)
    if record.erasing:
        # Under way: ask the linked ids again, with this cutoff and erasure id, and report
        # it done with the others; past MAX_ERASURES_WAITING it is not kept: each linked id
        # answers the earlier erasure first, so its own answers arrive once the record is
        # done, and are reported then (_erase_done: "over: say so again").
        sends: list[tuple[str, Command]] = [
            (other, EraseLink(key, command.before_ms, command.erasure_id))
            for other in record.erasing
        ]
        fresh = (
            command.erasure_id
            and command.erasure_id not in record.erasure_ids
            and len(record.erasure_ids) < MAX_ERASURES_WAITING
        )
        if fresh:
            record.erasure_ids.append(command.erasure_id)
        later = command.before_ms  # kept too (the later one stays), for data in flight
        outcome = Outcome(record, write=bool(fresh), sends=started + sends, before_ms=later)
        return _erase_since(key, record, command, ctx, outcome)
    if seen(record).covers(*ctx.source) or _after(record, command.before_ms):
        return Outcome(record, sends=started + _note(command, True, []))  # nothing to erase
    outcome = _erase(key, record, command, ctx, canonical=pf.has_data(record))
    outcome.sends[:0] = started
    return outcome


def _erase_since(
    key: str, record: Profile, command: Erase, ctx: Context, outcome: Outcome
) -> Outcome:
    """A record being erased that holds events which came since its erasure began, some
    at or before this later cutoff: they go too, and the ids they linked join the ids
    to erase (the record waits for them as for the others)."""
    if not record.counts or _after(record, command.before_ms) or seen(record).covers(*ctx.source):
        return outcome
    marks = seen(record)
    marks.advance(*ctx.source)
    new = sorted(set(record.ids) - {key} - set(record.erasing))
    cleared = Profile(profile_id=key, ids=[key], applied=marks.offsets)
    cleared.erasing, cleared.erasure_ids = sorted({*record.erasing, *new}), record.erasure_ids
    link = EraseLink(key, command.before_ms, command.erasure_id)
    outcome.record, outcome.write, outcome.exited = cleared, True, sorted(record.segments)
    outcome.sends += [(other, link) for other in new]
    outcome.profiles_delta = -1  # its data since had made it a profile again
    return outcome


def _kept_already(kept: int | None, before_ms: int | None) -> bool:
    return kept is not None and (before_ms is None or before_ms <= kept)


def _after(record: Profile, before_ms: int | None) -> bool:
    """Whether the record holds data, all of it after the cutoff: none to erase."""
    if before_ms is None or not pf.has_data(record) or record.first_seen is None:
        return False
    return record.first_seen > before_ms


def _person_ids(key: str, record: Profile, path: list[str]) -> list[str]:
    return sorted({key, *record.ids, *record.erasing, *path})


def _erase(key: str, record: Profile, command: Erase, ctx: Context, canonical: bool) -> Outcome:
    """Clear a root's profile; its linked ids are erased before the record goes: those
    it lists, and those the Erase came through (``path``: one it can no longer list, see
    :func:`_unlink`, or the ids that lead to a key with no record, which stands for the
    person's root then).

    Until every linked id has answered ``EraseDone``, the record stays with
    no data but the list of ids still to erase (so a crash cannot lose that
    list), the erasures to report and the marks of everything it had seen.
    """
    marks = seen(record)
    marks.advance(*ctx.source)  # so that a replay of this erasure is recognised
    others = sorted({*record.ids, *command.path} - {key})
    exited = sorted(record.segments)
    delta = -1 if canonical else 0
    noted = _note(command, False, ctx.hashed(_person_ids(key, record, command.path)))
    if not others:
        sends = noted + _note(command, True, [])
        return Outcome(
            None,
            write=True,
            sends=sends,
            exited=exited,
            profiles_delta=delta,
            erased=marks,
            before_ms=command.before_ms,
        )
    cleared = Profile(profile_id=key, ids=[key], applied=marks.offsets, erasing=others)
    cleared.erasure_ids = [command.erasure_id] if command.erasure_id else []
    link = EraseLink(key, command.before_ms, command.erasure_id)
    sends = noted + [(other, link) for other in others]
    return Outcome(
        cleared,
        write=True,
        sends=sends,
        exited=exited,
        profiles_delta=delta,
        before_ms=command.before_ms,
    )


def _erase_link(key: str, record: Profile | None, command: EraseLink, ctx: Context) -> Outcome:
    """Erase a linked id of an erased person (an id in its ``ids``: one whose state was
    merged into the person; an event for another user does not add its anonymous id).

    A root reached so (a dropped fragment's id, or one the Erase came through that
    has become a root since: its link was cut, or it was unlinked and data came after)
    is erased with the ids it lists, as an ``Erase`` would; it answers at once."""
    done: list[tuple[str, Command]] = [(command.user_id, EraseDone(key, command.erasure_id))]
    if record is None:  # gone already (an Unlink, an earlier erasure) or not here yet
        if _kept_already(ctx.before_ms, command.before_ms) or (
            ctx.erased is not None and ctx.erased.covers(*ctx.source)
        ):
            return Outcome(None, sends=done)
        marks = Watermarks(dict(ctx.erased.offsets) if ctx.erased else {})
        marks.advance(*ctx.source)  # the cutoff, for its data still in flight; the mark,
        return Outcome(None, sends=done, erased=marks, before_ms=command.before_ms)  # replays
    if not pf.has_data(record):
        return Outcome(record, sends=done)  # being erased itself
    if seen(record).covers(*ctx.source):
        return Outcome(record, sends=done)  # read again: this record started after it
    if _after(record, command.before_ms):
        return Outcome(record, sends=done)  # holds only events after the cutoff
    if not record.merged_into and len(record.ids) > 1:  # a root with linked ids: all go
        outcome = _erase(key, record, Erase(command.before_ms), ctx, canonical=True)
        outcome.sends[:0] = done
        return outcome
    marks = seen(record)
    marks.advance(*ctx.source)
    delta = 0 if record.merged_into else -1
    return Outcome(
        None,
        write=True,
        sends=done,
        exited=sorted(record.segments),
        profiles_delta=delta,
        erased=marks,
        before_ms=command.before_ms,
    )


def _erase_done(key: str, record: Profile | None, command: EraseDone) -> Outcome:
    if record is None or command.profile_id not in record.erasing:
        eid = command.erasure_id
        if eid and (record is None or not record.erasing):  # over: say so again
            return Outcome(record, sends=[(eid, ErasureNote(eid, True, []))])
        return Outcome(record)
    record.erasing.remove(command.profile_id)
    if record.erasing:  # more to wait for
        return Outcome(record, write=True)
    notes: list[tuple[str, Command]] = [
        (eid, ErasureNote(eid, True, [])) for eid in record.erasure_ids
    ]
    record.erasure_ids = []
    if record.counts:  # events that came since
        return Outcome(record, write=True, sends=notes)
    return Outcome(None, write=True, sends=notes, erased=record.watermarks)
