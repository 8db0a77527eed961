"""``GET /campaigns/{id}/stats``: campaign statistics over whole minutes."""

from __future__ import annotations

from typing import Any

from faust.web import View

from dmp_faust.app import app, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.query import BadParameter, resolve_range
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.domain.windows import (
    WindowRow,
    WindowStats,
    is_window_expired,
    summarise,
    window_key,
    window_starts,
)
from dmp_faust.responses import HttpError, json_response
from dmp_faust.state import decode_int
from dmp_faust.web import partition_for, route_to_owner
from tables.campaign_windows import campaign_windows
from tables.stream_times import stream_times


@app.page("/campaigns/{campaign_id}/stats")
class CampaignStats(View):
    async def get(self, request: Any, campaign_id: str) -> Any:
        routed = await route_to_owner(request, campaign_windows, campaign_id)
        if routed is not None:
            return routed
        return json_response(
            local_stats(campaign_id, request.query.get("from"), request.query.get("to"))
        )


def local_stats(campaign_id: str, frm: str | None, to: str | None) -> dict[str, Any]:
    """The answer of ``/campaigns/{id}/stats`` from this worker's table (the campaign's
    partition restored here); ``frm``/``to`` as the query gives them (None: the last
    hour of the partition's stream time)."""
    partition = partition_for(campaign_id)
    stream_time = decode_int(stream_times.get(f"campaign_stats:{partition}"))
    try:
        span = resolve_range(
            frm,
            to,
            stream_time if stream_time is not None else wall_ms(),
            settings.window_ms,
            settings.default_range_ms,
            settings.retention_ms + settings.window_ms,
        )
    except BadParameter as exc:
        raise HttpError(400, "bad_parameter", str(exc)) from None
    starts = window_starts(span.from_ms, span.to_ms, settings.window_ms)
    summary = summarise(
        ((start, _read_window(campaign_id, start, stream_time)) for start in starts),
        settings.window_ms,
        span.from_ms,
        span.to_ms,
    )
    return {
        "campaign_id": campaign_id,
        "from": format_timestamp(span.from_ms),
        "to": format_timestamp(span.to_ms),
        "stream_time": format_timestamp(stream_time) if stream_time is not None else None,
        "totals": _row_json(summary.totals, with_bounds=False),
        "windows": [_row_json(row) for row in summary.windows],
    }


def _read_window(campaign_id: str, start: int, stream_time: int | None) -> WindowStats | None:
    if stream_time is not None and is_window_expired(
        start, settings.window_ms, stream_time, settings.retention_ms
    ):
        return None  # expired, whether or not the sweep has deleted it yet
    raw = campaign_windows.get(window_key(campaign_id, start))
    return WindowStats.from_bytes(raw) if raw else None


def _row_json(row: WindowRow, with_bounds: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "impressions": row.impressions,
        "clicks": row.clicks,
        "conversions": row.conversions,
        "revenue": row.revenue,
        "ctr": row.ctr,
        "unique_users": row.unique_users,
    }
    if with_bounds:
        body = {"start": format_timestamp(row.start), "end": format_timestamp(row.end), **body}
    return body
