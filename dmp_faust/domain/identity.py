"""Identity stitching as a fold: one command in, a record and messages out.

The profile agent reads ``profiles.in``, keyed by an id. For each command it
calls :func:`handle` with the record stored under that key, and gets back
the new record, the commands to send on (keyed by other ids), and the
segment changes. Everything that must cross partitions travels as one of
these keyed commands; nothing is shared in memory.

Commands (see :mod:`dmp_faust.domain.profiles` for why the result does not
depend on arrival order):

* ``FoldEvent(resolve=True)``: keyed by an event's anonymous_id. The record
  of that id decides: linked -> forward to the user; carrying a user_id and
  not linked -> link now and send the anonymous state to the user as one
  ``MergeFragment``; else fold into the anonymous profile.
* ``FoldEvent(resolve=False)``: keyed by a user_id: fold.
* ``MergeFragment``: keyed by a user_id: merge an anonymous profile into it.
* ``Erase``: keyed by a canonical id: delete the profile, and send
  ``EraseLink`` to each linked id, which deletes that id's record.
* ``Unlink``: keyed by an anonymous id that its user can no longer list
  (past ``profiles.Limits.ids``): delete that link (its data is in the user).

Replays: each fold is guarded by the watermark of the command's source
record, stored in the record it changes. A linked anonymous record that sees
again the linking record re-sends its frozen state (the user's watermark
takes the first copy that arrives and drops the other); earlier records,
read again, change nothing, since their effect is in that state. Commands it
forwards after the link are recorded in its ``forwarded`` marks and
re-forwarded when read again (see :func:`_forward`).

Erasure keeps no personal data, but it keeps the erased record's
watermarks (under a hash of the id): after a crash, records that were folded
before the erasure are read again, and those marks are what stops them from
bringing the profile back. Events that arrive after the erasure start a new
profile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from dmp_faust.domain import profiles as pf
from dmp_faust.domain.profiles import Profile, ProfileEvent
from dmp_faust.domain.segments import changes
from dmp_faust.domain.watermarks import Watermarks


class FoldEvent(msgspec.Struct, tag="event"):
    event: ProfileEvent
    resolve: bool


class MergeFragment(msgspec.Struct, tag="merge"):
    fragment: Profile


class Erase(msgspec.Struct, tag="erase"):
    pass


class EraseLink(msgspec.Struct, tag="erase_link"):
    user_id: str  # the user being erased: a link to another user is left alone


class EraseDone(msgspec.Struct, tag="erase_done"):
    profile_id: str  # a linked id that is erased now


class Unlink(msgspec.Struct, tag="unlink"):
    user_id: str  # a user that can no longer list this id (see profiles.Limits)


Command = FoldEvent | MergeFragment | Erase | EraseLink | EraseDone | Unlink


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

    def new_record(self, key: str) -> Profile:
        """A first record for ``key``, which ignores what an earlier erasure had seen."""
        marks = dict(self.erased.offsets) if self.erased is not None else {}
        return Profile(profile_id=key, ids=[key], applied=marks)


def handle(key: str, record: Profile | None, command: Command, ctx: Context) -> Outcome:
    if isinstance(command, FoldEvent) and command.resolve:
        return _resolve(key, record, command.event, ctx)
    if isinstance(command, FoldEvent):
        event = command.event
        listed = _ids_with(record, (event.anonymous_id, event.user_id))
        outcome = _update(
            key, record, ctx, lambda p: pf.fold(p, event, ctx.stream_time, ctx.horizon_ms)
        )
        return _unlink_unlisted(key, listed, outcome)
    if isinstance(command, MergeFragment):
        part = command.fragment
        listed = _ids_with(record, part.ids)
        outcome = _update(
            key, record, ctx, lambda p: pf.merge(p, part, ctx.stream_time, ctx.horizon_ms)
        )
        return _unlink_unlisted(key, listed, outcome)
    if isinstance(command, Unlink):
        return _unlink(record, command.user_id, ctx)
    if isinstance(command, EraseDone):
        return _erase_done(key, record, command.profile_id)
    if record is not None and record.merged_into and isinstance(command, Erase):
        if record.watermarks.covers(*ctx.source):  # an erasure from before this link
            return Outcome(record)
        return _forward(record, record.merged_into, Erase(), ctx)
    if isinstance(command, EraseLink):
        return _erase_link(key, record, command.user_id, ctx)
    if record is None:
        return Outcome(None)
    if record.erasing:  # the erasure read again: ask the linked ids again
        return Outcome(record, sends=[(other, EraseLink(key)) for other in record.erasing])
    if seen(record).covers(*ctx.source):
        return Outcome(record)  # a replay of an erasure that is complete
    return _erase(key, record, ctx)


def _ids_with(record: Profile | None, brought: Iterable[str | None]) -> set[str]:
    """The ids a record lists, with those a command brings."""
    return {i for i in (*(record.ids if record is not None else ()), *brought) if i}


def _unlink_unlisted(key: str, listed: set[str], outcome: Outcome) -> Outcome:
    """Ids that a profile can no longer list (``profiles.Limits``) are sent ``Unlink``.

    An erasure of the profile sends ``EraseLink`` to the ids it lists only, so
    a link it cannot list must go: see :func:`_unlink`.
    """
    if not outcome.write or outcome.record is None or not outcome.record.ids_truncated:
        return outcome
    dropped = sorted(listed - set(outcome.record.ids) - {key})
    outcome.sends += [(i, Unlink(key)) for i in dropped]
    return outcome


def _unlink(record: Profile | None, user_id: str, ctx: Context) -> Outcome:
    """A link that its user can no longer list goes, with the frozen state it kept.

    Its data is in the user's profile (the merge came first: the user listed the
    id). What it had seen is kept as erased marks, so that its records read
    again bring nothing back; its later events start a new profile. A record
    not linked to that user (linked elsewhere, or a new anonymous profile) stays.
    """
    if record is None or record.merged_into != user_id or seen(record).covers(*ctx.source):
        return Outcome(record)
    marks = seen(record)
    marks.advance(*ctx.source)
    return Outcome(None, write=True, erased=marks)


def seen(record: Profile) -> Watermarks:
    """Every source a record has folded or forwarded."""
    marks = Watermarks(dict(record.applied))
    for source, offset in record.forwarded.items():
        marks.advance(source, offset)
    return marks


def _resolve(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    if record is not None and record.merged_into:
        return _linked(record, event, ctx)
    if event.user_id and event.user_id != key:
        return _link(key, record, event, ctx)
    return _update(key, record, ctx, lambda p: pf.fold(p, event, ctx.stream_time, ctx.horizon_ms))


def _linked(record: Profile, event: ProfileEvent, ctx: Context) -> Outcome:
    """A command for an anonymous id that is linked already."""
    if record.watermarks.covers(*ctx.source):  # folded before the link, so in the merge
        if ctx.here[1] == record.linked_at:  # the linking record, read again: re-send
            return Outcome(
                record, sends=[(record.merged_into or "", MergeFragment(record_state(record)))]
            )
        return Outcome(record)
    return _forward(record, event.user_id or record.merged_into or "", FoldEvent(event, False), ctx)


def _forward(record: Profile, target: str, command: Command, ctx: Context) -> Outcome:
    """Send a command on to the user, stamped with this record's position.

    The same record read again after a crash is forwarded again with the
    same stamp (the user drops it if the first copy arrived). A new copy of a
    command forwarded already (stage 2 re-sending after its own crash) comes
    at a later position and is dropped here: a later stamp would get past
    the user's watermark.
    """
    marks = Watermarks(record.forwarded)
    if marks.covers(*ctx.source) and ctx.here[1] > (record.forwarded_at or -1):
        return Outcome(record)
    marks.advance(*ctx.source)
    record.forwarded_at = max(ctx.here[1], record.forwarded_at or -1)
    return Outcome(record, write=True, sends=[(target, command)])


def _link(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    user_id = event.user_id or ""
    existed = record is not None
    record = record or ctx.new_record(key)
    if record.watermarks.covers(*ctx.source):  # erased since
        return Outcome(record if existed else None)
    pf.fold(record, event, ctx.stream_time, ctx.horizon_ms)
    record.watermarks.advance(*ctx.source)
    exited, record.segments = sorted(record.segments), []
    record.merged_into, record.linked_at = user_id, ctx.here[1]
    return Outcome(
        record,
        write=True,
        sends=[(user_id, MergeFragment(record_state(record)))],
        exited=exited,
        profiles_delta=-1 if existed else 0,
    )


def record_state(record: Profile) -> Profile:
    """A linked anonymous record's frozen state, as merged into its user."""
    return pf.frozen_copy(record, record.merged_into or record.profile_id)


def _update(
    key: str, record: Profile | None, ctx: Context, step: Callable[[Profile], object]
) -> Outcome:
    existed = record is not None
    record = record or ctx.new_record(key)
    if record.watermarks.covers(*ctx.source):  # folded already, or erased since
        return Outcome(record if existed else None)
    created = not existed or not pf.has_data(record)  # new, or new since an erasure
    step(record)
    record.watermarks.advance(*ctx.source)
    entered, exited = changes(record.segments, ctx.segments_of(record))
    record.segments = sorted(set(record.segments) - set(exited) | set(entered))
    return Outcome(
        record, write=True, entered=entered, exited=exited, profiles_delta=1 if created else 0
    )


def _erase(key: str, record: Profile, ctx: Context) -> Outcome:
    """Clear a canonical profile; its linked ids are erased before the record goes.

    Until every linked id has answered ``EraseDone``, the record stays with
    no data but the list of ids still to erase (so a crash cannot lose that
    list) and the marks of everything it had seen.
    """
    marks = seen(record)
    marks.advance(*ctx.source)  # so that a replay of this erasure is recognised
    others = sorted(i for i in record.ids if i != key)
    exited = sorted(record.segments)
    if not others:
        return Outcome(None, write=True, exited=exited, profiles_delta=-1, erased=marks)
    cleared = Profile(profile_id=key, ids=[key], applied=marks.offsets, erasing=others)
    sends: list[tuple[str, Command]] = [(other, EraseLink(key)) for other in others]
    return Outcome(cleared, write=True, sends=sends, exited=exited, profiles_delta=-1)


def _erase_link(key: str, record: Profile | None, user_id: str, ctx: Context) -> Outcome:
    done: list[tuple[str, Command]] = [(user_id, EraseDone(key))]
    if record is None or record.merged_into not in (None, user_id):
        return Outcome(record, sends=done)  # gone already, or linked to someone else
    if seen(record).covers(*ctx.source):
        return Outcome(record, sends=done)  # read again: this record started after it
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
    )


def _erase_done(key: str, record: Profile | None, linked_id: str) -> Outcome:
    if record is None or linked_id not in record.erasing:
        return Outcome(record)
    record.erasing.remove(linked_id)
    if record.erasing or record.counts:  # more to wait for, or events that came since
        return Outcome(record, write=True)
    return Outcome(None, write=True, erased=record.watermarks)
