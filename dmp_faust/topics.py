"""Every topic of dmp-faust, in one place. Names follow ``DMP_TOPIC_PREFIX``.

Public (contract): ``events.raw``, ``events.clean``, ``events.dlq``.
Internal repartition topics, read and written by dmp-faust only:

* ``events.valid``: validated events keyed by event_id, so that every copy of
  an event meets the same de-duplication table partition, whatever key (or
  none) the producer gave it on the raw topic;
* ``events.by_campaign``: accepted campaign events keyed by campaign_id,
  the partitioning of the campaign statistics;
* ``profiles.in``: identity and profile commands keyed by the id they
  concern (see :mod:`dmp_faust.domain.identity`);
* ``segments.deltas``: +1/-1 per segment entered/exited, keyed by segment.

Public too: ``segments.changes``, the enter/exit records, keyed by profile id;
``alerts``, a record when an incident opens and one when it resolves, keyed
by campaign id (a capacity alert by the worker's URL).

All are declared (created with ``DMP_PARTITIONS`` partitions when missing)
before the pipeline processes its first event.
"""

from __future__ import annotations

from faust import TopicT

from dmp_faust.app import app, settings


def _topic(name: str) -> TopicT:
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        internal=True,
    )


raw_events = _topic("events.raw")
valid_events = _topic("events.valid")
clean_events = _topic("events.clean")
campaign_events = _topic("events.by_campaign")
dead_letters = _topic("events.dlq")
profile_commands = _topic("profiles.in")
segment_changes = _topic("segments.changes")
segment_deltas = _topic("segments.deltas")
alerts = _topic("alerts")

# Header on raw records produced by ``POST /collect``: the value is b"http".
ORIGIN_HEADER = "dmp-source"

ALL_TOPICS = (
    raw_events,
    valid_events,
    clean_events,
    campaign_events,
    dead_letters,
    profile_commands,
    segment_changes,
    segment_deltas,
    alerts,
)


async def declare_all() -> None:
    """Create every topic that does not exist yet."""
    for topic in ALL_TOPICS:
        await topic.maybe_declare()
