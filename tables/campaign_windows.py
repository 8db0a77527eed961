"""Campaign statistics per 1-minute event-time window.

Key: :func:`dmp_faust.domain.windows.window_key` (campaign id, window start);
value: :meth:`WindowStats.to_bytes`. Partitioned like ``events.by_campaign``
(by campaign id), so every window of a campaign lives on the worker that
owns the campaign; lookups are routed there by campaign id.
"""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

campaign_windows = app.Table(
    "campaign_windows", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS
)
