"""``make bench``: how fast dmp-faust is, on this machine, end to end.

One run starts its own Kafka broker (free ports, a temporary directory),
loads N realistic raw events onto a fresh ``{prefix}.events.raw`` and
measures, on that same topic: the ceiling (a bare consumer that only decodes
the JSON), the pipeline (a fresh worker until every stage is drained), the
latency of live events, the worker's peak memory, and its recovery time
after ``kill -9``. :mod:`bench.run` is the entry point; the figures are
explained in the header of ``bench/RESULTS.md``, which each run rewrites.
"""
