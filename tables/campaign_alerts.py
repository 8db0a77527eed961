"""Anomaly detectors and incidents of the campaigns, per ``events.by_campaign`` partition.

Keys (:mod:`dmp_faust.domain.alerts`): ``p`` where the partition's judging
stands, ``c:{campaign id}`` a campaign's detectors, ``i:{opened window}:{alert
id}`` an incident (kept 7 days of stream time once resolved). Partitioned
like ``events.by_campaign``: a campaign's alerts live on the worker that
counts it, and lookups by campaign are routed there.
"""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

campaign_alerts = app.Table(
    "campaign_alerts", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS
)
