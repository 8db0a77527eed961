"""``GET /alerts``: the incidents of the campaigns, and of the workers' capacity.

With ``campaign_id`` the request is routed to the worker that owns the
campaign. Without, the worker asked gathers every partition's incidents
from their owners (one routed request per worker, naming its partitions)
and adds each worker's capacity incidents. Time ranges are in stream time,
per partition: by default the last 24 hours of it. Newest first, at most
``limit`` (default 1,000).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from faust.web import View

from dmp_faust import alerting
from dmp_faust.app import app, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain import alerts as al
from dmp_faust.domain.query import BadParameter, TimeRange, resolve_range
from dmp_faust.readiness import ensure_local, own_url
from dmp_faust.responses import HttpError, json_response, unavailable
from dmp_faust.settings import DAY_MS
from dmp_faust.state import decode_int
from dmp_faust.web import ask, hops, owner_url, partition_for, route_to_owner
from tables.campaign_windows import campaign_windows
from tables.stream_times import stream_times

STATUSES = ("open", "resolved", "all")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
PARTITIONS_QUERY = "partitions"  # a gathering worker's routed request names them


@dataclass(frozen=True)
class Query:
    campaign_id: str | None
    status: str
    from_text: str | None
    to_text: str | None
    limit: int

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Query:
        status = query.get("status", "all")
        if status not in STATUSES:
            raise HttpError(400, "bad_parameter", f"status: one of {', '.join(STATUSES)}")
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            raise HttpError(400, "bad_parameter", "limit: an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise HttpError(400, "bad_parameter", f"limit: between 1 and {MAX_LIMIT}")
        campaign_id = query.get("campaign_id") or None
        return cls(campaign_id, status, query.get("from"), query.get("to"), limit)

    def span(self, now: int) -> TimeRange:
        try:
            return resolve_range(
                self.from_text, self.to_text, now, al.WINDOW_MS, DAY_MS, al.KEEP_MS + DAY_MS
            )
        except BadParameter as exc:
            raise HttpError(400, "bad_parameter", str(exc)) from None

    def wants(self, incident: al.Incident, span: TimeRange) -> bool:
        return (
            (self.status == "all" or incident.status == self.status)
            and (self.campaign_id is None or incident.campaign_id == self.campaign_id)
            and al.overlaps(incident, span.from_ms, span.to_ms)
        )


@app.page("/alerts")
class Alerts(View):
    async def get(self, request: Any) -> Any:
        query = Query.parse(request.query)
        if query.campaign_id is not None:
            routed = await route_to_owner(request, campaign_windows, query.campaign_id)
            if routed is not None:
                return routed
            return _answer(_local([partition_for(query.campaign_id)], query), query)
        if hops(request) >= 1 and PARTITIONS_QUERY in request.query:
            partitions = _partitions(request.query[PARTITIONS_QUERY])
            return _answer([*_local(partitions, query), *_capacity(query)], query)
        return _answer(await _gather(request, query), query)


def _answer(found: Iterable[dict[str, Any]], query: Query) -> Any:
    ordered = sorted(found, key=lambda a: (a["opened_window"]["start"], a["alert_id"]))
    return json_response({"alerts": ordered[::-1][: query.limit]})


def _partitions(text: str) -> list[int]:
    try:
        partitions = sorted({int(p) for p in text.split(",")})
    except ValueError:
        raise HttpError(400, "bad_parameter", "partitions: integers, comma-separated") from None
    if any(not 0 <= p < settings.partitions for p in partitions):
        raise HttpError(400, "bad_parameter", f"partitions: 0 to {settings.partitions - 1}")
    return partitions


def _local(partitions: Iterable[int], query: Query) -> list[dict[str, Any]]:
    """The wanted incidents of ``partitions``, each restored here (else 503)."""
    found = []
    for partition in partitions:
        ensure_local(campaign_windows, partition)
        now = decode_int(stream_times.get(f"campaign_stats:{partition}"))
        span = query.span(now if now is not None else wall_ms())
        found += [
            alerting.alert_json(incident)
            for incident in alerting.incidents(partition)
            if query.wants(incident, span)
        ]
    return found


def _capacity(query: Query) -> list[dict[str, Any]]:
    span = query.span(wall_ms())
    return [
        alerting.alert_json(incident)
        for incident in alerting.capacity_latest()
        if query.wants(incident, span)
    ]


async def _gather(request: Any, query: Query) -> list[dict[str, Any]]:
    """Every partition's incidents from its owner, and every owner's capacity incidents."""
    owners: dict[str, list[int]] = {own_url(): []}
    for partition in range(settings.partitions):
        url = owner_url(campaign_windows, partition)
        if url is None:
            raise unavailable(f"partition {partition} of campaign_windows has no owner")
        owners.setdefault(url, []).append(partition)
    found = [*_local(owners.pop(own_url()), query), *_capacity(query)]
    params = {k: v for k, v in request.query.items() if k != PARTITIONS_QUERY}
    asked = await asyncio.gather(
        *(
            ask(request, url, "/alerts?" + urlencode({**params, PARTITIONS_QUERY: _csv(parts)}))
            for url, parts in owners.items()
        )
    )
    for (url, _), (status, body) in zip(owners.items(), asked, strict=True):
        if status != 200:
            raise unavailable(f"worker {url} answered {status} for its alerts")
        found += json.loads(body)["alerts"]
    return found


def _csv(partitions: list[int]) -> str:
    return ",".join(str(p) for p in partitions)
