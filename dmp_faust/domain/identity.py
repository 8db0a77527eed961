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

Replays: each fold is guarded by the watermark of the command's source
record, stored in the record it changes. A linked anonymous record that sees
a command it had already folded re-sends its frozen state: the user's
watermark drops it if the first copy arrived, and takes it if it was lost.

Erasure keeps no personal data, but it keeps the erased record's
watermarks (under a hash of the id): after a crash, records that were folded
before the erasure are read again, and those marks are what stops them from
bringing the profile back. Events that arrive after the erasure start a new
profile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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
    pass


Command = FoldEvent | MergeFragment | Erase | EraseLink
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Command)


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(raw: bytes) -> Command:
    command: Command = _decoder.decode(raw)
    return command


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
    erased: Watermarks | None = None  # set when the record was erased: its marks


SegmentsOf = Callable[[Profile], frozenset[str]]


@dataclass(frozen=True)
class Context:
    """What a command is handled with: its source, the stream time, the rules."""

    source: tuple[int, int]  # (source id, offset) of the command's record
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
        return _update(
            key, record, ctx, lambda p: pf.fold(p, command.event, ctx.stream_time, ctx.horizon_ms)
        )
    if isinstance(command, MergeFragment):
        fragment = command.fragment
        return _update(
            key, record, ctx, lambda p: pf.merge(p, fragment, ctx.stream_time, ctx.horizon_ms)
        )
    if isinstance(command, Erase) and record is not None and record.merged_into:
        return Outcome(record, sends=[(record.merged_into, Erase())])
    return _erase(key, record, propagate=isinstance(command, Erase))


def _resolve(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    if record is not None and record.merged_into:
        if record.watermarks.covers(*ctx.source):  # folded before the link: re-send the state
            return Outcome(
                record, sends=[(record.merged_into, MergeFragment(record_state(record)))]
            )
        target = event.user_id or record.merged_into
        return Outcome(record, sends=[(target, FoldEvent(event, resolve=False))])
    if event.user_id and event.user_id != key:
        return _link(key, record, event, ctx)
    return _update(key, record, ctx, lambda p: pf.fold(p, event, ctx.stream_time, ctx.horizon_ms))


def _link(key: str, record: Profile | None, event: ProfileEvent, ctx: Context) -> Outcome:
    user_id = event.user_id or ""
    existed = record is not None
    record = record or ctx.new_record(key)
    if record.watermarks.covers(*ctx.source):  # erased since
        return Outcome(record if existed else None)
    pf.fold(record, event, ctx.stream_time, ctx.horizon_ms)
    record.watermarks.advance(*ctx.source)
    exited, record.segments = sorted(record.segments), []
    record.merged_into = user_id
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
    created = record is None
    record = record or ctx.new_record(key)
    if record.watermarks.covers(*ctx.source):  # folded already, or erased since
        return Outcome(None if created else record)
    step(record)
    record.watermarks.advance(*ctx.source)
    entered, exited = changes(record.segments, ctx.segments_of(record))
    record.segments = sorted(set(record.segments) - set(exited) | set(entered))
    return Outcome(
        record, write=True, entered=entered, exited=exited, profiles_delta=1 if created else 0
    )


def _erase(key: str, record: Profile | None, propagate: bool) -> Outcome:
    if record is None:
        return Outcome(None)
    sends: list[tuple[str, Command]] = []
    if propagate:
        sends = [(other, EraseLink()) for other in record.ids if other != key]
    canonical = not record.merged_into
    return Outcome(
        None,
        write=True,
        sends=sends,
        exited=sorted(record.segments),
        profiles_delta=-1 if canonical else 0,
        erased=record.watermarks,
    )
