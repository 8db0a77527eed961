"""De-duplication by event_id over a horizon of stream time.

The table remembers, for each event_id, the stream time at which it was
first seen. A later copy is a duplicate while that first sighting is within
the horizon; once it has fallen out, the entry is expired (swept away) and a
copy would count as new.
"""

from __future__ import annotations


def is_duplicate(first_seen: int | None, stream_time: int, horizon_ms: int) -> bool:
    return first_seen is not None and not is_forgotten(first_seen, stream_time, horizon_ms)


def is_forgotten(first_seen: int, stream_time: int, horizon_ms: int) -> bool:
    return first_seen < stream_time - horizon_ms
