"""``dmp-faust generate``: synthetic behavioural events onto the raw topic.

Two halves. :class:`EventMix` (:mod:`.mix`) is a pure, deterministic core:
handed a ``random.Random`` and each event's time, it returns the raw bytes a
producer would send, with a realistic mix (page views, impressions, clicks at
a CTR of 2-4 %, conversions on 10 % of clicks, identifies), bots, duplicates
and invalid events spread over the reasons the collector detects. It reads no
clock and does no I/O, so the same seed gives the same bytes. It draws its
users, sites and campaigns from :mod:`.audience` and builds its invalid events
with :mod:`.invalid`.

The shell around it (:func:`main`, in :mod:`.command`, with its options in
:mod:`.options`) parses options, waits for the topic, produces with aiokafka
at ``--rate``, shows progress on stderr and stops cleanly on SIGINT/SIGTERM: a
first signal flushes and prints the summary, a second one gives up on the
flush.

This package re-exports what its callers use: ``dmp-faust generate`` calls
:func:`main`, and the unit tests take the core and the command's pure pieces
from here.
"""

from __future__ import annotations

from dmp_faust.generator.command import Progress, due, main, progress_line, timeline
from dmp_faust.generator.invalid import COLLECTOR_REASONS, MAX_EVENT_BYTES
from dmp_faust.generator.mix import EventMix, Generated, MixConfig, generate_events
from dmp_faust.generator.options import DEFAULT_RATE, Options, parse_args

__all__ = [
    "COLLECTOR_REASONS",
    "DEFAULT_RATE",
    "MAX_EVENT_BYTES",
    "EventMix",
    "Generated",
    "MixConfig",
    "Options",
    "Progress",
    "due",
    "generate_events",
    "main",
    "parse_args",
    "progress_line",
    "timeline",
]
