"""``GET /history/campaigns/{id}``: campaign statistics from the Parquet history.

Any range the history holds, by hour or by day, in the body of
``/campaigns/{id}/stats``. ``from`` is widened down and ``to`` up to whole
buckets. By default: the last 24 hours by hour, the last 30 days by day,
ending with the bucket that holds the wall clock's now. Unique users are exact
(distinct profile ids of the campaign's events in the bucket). The worker asked
answers from the history it can read (``DMP_HISTORY_URI``, shared by a
cluster's workers); DuckDB runs in a thread, one query at a time per worker.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from faust.web import View

from dmp_faust.app import app, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.query import BadParameter, parse_time_param
from dmp_faust.history.files import Storage
from dmp_faust.history.query import GRANULARITIES, MAX_BUCKETS, campaign_history, open_history
from dmp_faust.history.sink import Erased
from dmp_faust.responses import HttpError, json_response

DEFAULT_BUCKETS: Final = {"hour": 24, "day": 30}
_one_at_a_time = asyncio.Semaphore(1)


@app.page("/history/campaigns/{campaign_id}")
class CampaignHistory(View):
    async def get(self, request: Any, campaign_id: str) -> Any:
        granularity = request.query.get("granularity", "hour")
        size = GRANULARITIES.get(granularity)
        if size is None:
            raise HttpError(400, "bad_parameter", "granularity: expected hour or day")
        try:
            from_ms, to_ms = _range(request.query.get("from"), request.query.get("to"), size)
        except BadParameter as exc:
            raise HttpError(400, "bad_parameter", str(exc)) from None
        if (to_ms - from_ms) // size > MAX_BUCKETS:
            raise HttpError(400, "bad_parameter", f"at most {MAX_BUCKETS} {granularity}s")
        async with _one_at_a_time:
            body = await asyncio.to_thread(_query, campaign_id, from_ms, to_ms, granularity)
        return json_response(body)


def _range(from_text: str | None, to_text: str | None, size: int) -> tuple[int, int]:
    """Whole buckets covering ``from``..``to`` (see the module for the defaults)."""
    default = DEFAULT_BUCKETS["hour" if size == GRANULARITIES["hour"] else "day"] * size
    from_ms = parse_time_param("from", from_text) if from_text else None
    if from_ms is not None:
        from_ms -= from_ms % size
    if to_text:
        to_ms = parse_time_param("to", to_text)
    elif from_ms is not None:
        to_ms = from_ms + default
    else:
        to_ms = wall_ms() + 1
    if from_ms is None:
        from_ms = to_ms - default
    if to_ms <= from_ms:
        raise BadParameter(f"to must be after from ({to_ms} <= {from_ms})")
    from_ms -= from_ms % size
    to_ms += -to_ms % size  # up to a whole bucket
    return from_ms, to_ms


def _query(campaign_id: str, from_ms: int, to_ms: int, granularity: str) -> dict[str, Any]:
    storage = Storage(settings.history_root)
    conn = open_history(storage, Erased.load(storage, settings.app_id))
    try:
        return campaign_history(conn, campaign_id, from_ms, to_ms, granularity)
    finally:
        conn.close()
