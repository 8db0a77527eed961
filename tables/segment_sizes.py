"""Segment sizes. Key: segment id; value: a
:class:`dmp_faust.domain.counter.GuardedCounter` (size and source watermarks).
Partitioned like ``segments.deltas`` (by segment)."""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

segment_sizes = app.Table("segment_sizes", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS)
