"""Stream time of each (stage, partition): the highest event time it has seen.

Key ``"{stage}:{partition}"``, value the time in epoch ms as ASCII digits.
"""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

stream_times = app.Table("stream_times", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS)
