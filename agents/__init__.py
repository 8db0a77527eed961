"""Faust agents of dmp-faust; the data reads in one direction::

    events.raw ──validate_events──► events.valid (by event_id) ──deduplicate_events──►
        events.clean (by profile id)
        events.by_campaign (by campaign id) ──count_campaign_stats──► campaign_windows

Refused events go to ``events.dlq`` from ``validate_events``.
"""
