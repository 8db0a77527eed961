"""Number of canonical profiles per partition (key: the partition number as
text; value: a :class:`~dmp_faust.domain.counter.GuardedCounter`, guarded by
the ``profiles.in`` offsets it counted), for the ``dmp_profiles`` gauge
without a scan."""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

profile_counts = app.Table(
    "profile_counts", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS
)
