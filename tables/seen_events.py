"""De-duplication memory. Key: event_id; value: the stream time (epoch ms,
ASCII digits) at which the event was first seen. Partitioned like
``events.valid`` (by event_id); expired entries are swept by the agent."""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

seen_events = app.Table("seen_events", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS)
