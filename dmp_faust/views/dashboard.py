"""``GET /``: the live dashboard, and ``GET /dashboard/summary``, the JSON it shows.

The page (``dmp_faust/dashboard/``) is static: HTML, a script, a stylesheet and
the vendored uPlot, served from a fixed list under ``/static/`` (nothing else
on disk is reachable) with a Content-Security-Policy that lets it load and ask
nothing but this worker. It asks ``/dashboard/summary`` every few seconds.

The summary is gathered the way ``GET /alerts`` is: the worker asked answers
its own part and asks every other member of the cluster for theirs (a routed
request, one hop), so any worker shows the whole picture. A worker's part: its
counters (the accounting identity, dead-letter reasons), capacity, latency and
stage lag, and the campaigns of the partitions it owns, each with the last hour
of its stream time per minute (the same figures as ``/campaigns/{id}/stats``
without a range) and its open alerts. Bounded: a worker reads at most
:data:`SCAN_CAMPAIGNS` campaigns (in id order) and the answer lists the
:data:`SHOWN_CAMPAIGNS` busiest of them; a worker's part is computed at most
once every :data:`FRESH_S`, whoever asks.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from importlib import resources
from typing import Any, Final

from aiohttp import web
from faust.web import View

from agents import lag as stage_lag
from dmp_faust import alerting, capacity
from dmp_faust.app import app, metrics
from dmp_faust.clock import wall_ms
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.readiness import own_url, readiness
from dmp_faust.responses import HttpError, json_response
from dmp_faust.stages import crashes, stage_of, unhealthy
from dmp_faust.topics import valid_events
from dmp_faust.views.audience import all_sizes
from dmp_faust.views.campaigns import local_stats
from dmp_faust.web import active_partitions, ask, hops
from tables.campaign_windows import campaign_windows

SCAN_CAMPAIGNS: Final = 100  # campaigns a worker reads for one summary
SHOWN_CAMPAIGNS: Final = 20
FRESH_S: Final = 1.0
LOCAL_QUERY: Final = "local"

# name under /static/ -> content type; nothing else is served
STATIC: Final[dict[str, str]] = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("dmp_faust").joinpath("dashboard", name).read_bytes()


@app.page("/")
class Dashboard(View):
    async def get(self, request: Any) -> Any:
        return web.Response(
            body=_asset("index.html"),
            content_type="text/html",
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )


@app.page("/static/{name:.+}")
class Static(View):
    async def get(self, request: Any, name: str) -> Any:
        content_type = STATIC.get(name)
        if content_type is None:
            raise HttpError(404, "not_found", "no such file")
        return web.Response(body=_asset(name), content_type=content_type, headers=SECURITY_HEADERS)


@app.page("/dashboard/summary")
class Summary(View):
    async def get(self, request: Any) -> Any:
        if hops(request) >= 1 and LOCAL_QUERY in request.query:
            return json_response(_local_part())
        parts = [_local_part()]
        others = sorted(_members() - {own_url()})
        answers = await asyncio.gather(
            *(ask(request, url, f"/dashboard/summary?{LOCAL_QUERY}=1") for url in others),
            return_exceptions=True,
        )
        for url, answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException) or answer[0] != 200:
                parts.append(_missing(url))
            else:
                parts.append(json.loads(answer[1]))
        segments = await all_sizes(request)
        return json_response(merge(parts, segments))


def _members() -> set[str]:
    """The URL of every worker of the cluster, as the partition assignment names them."""
    return {str(url).rstrip("/") for url in app.assignor.tables_metadata()}


def _missing(url: str) -> dict[str, Any]:
    """The part of a worker that did not answer: listed, unavailable, nothing counted."""
    worker = {
        "url": url,
        "status": "unavailable",
        "active_partitions": [],
        "capacity": None,
        "stage_lag": {},
        "latency_s": None,
        "open_alerts": [],
    }
    return {"worker": worker, "counters": {}, "campaigns": [], "alerts_open": 0}


_cache: dict[str, Any] = {"at": -math.inf, "part": None}


def _local_part() -> dict[str, Any]:
    now = time.monotonic()
    if _cache["part"] is None or now - _cache["at"] >= FRESH_S:
        _cache["part"], _cache["at"] = _compute_part(), now
    return _cache["part"]


def _compute_part() -> dict[str, Any]:
    ready, _ = readiness()
    failing = unhealthy(crashes.report(["validate_events", *map(stage_of, app.agents)]))
    campaigns, known, campaign_alerts = _campaigns() if ready else ([], 0, 0)
    capacity_alerts = [
        alerting.alert_json(incident)
        for incident in alerting.capacity_latest()
        if incident.status == "open"
    ]
    return {
        "worker": {
            "url": own_url(),
            "status": "ok" if ready and not failing else "unavailable",
            "active_partitions": sorted(active_partitions(valid_events)),
            "capacity": capacity.latest().as_dict(),
            "stage_lag": stage_lag.as_json(),
            "latency_s": latency(_samples(metrics.latency)),
            "open_alerts": capacity_alerts,  # the worker's own (capacity) alerts
        },
        "counters": {
            "received_by_source": _by_label(metrics.received, "source"),
            "invalid_by_reason": _by_label(metrics.invalid, "reason"),
            "duplicate": _sum(metrics.duplicate),
            "bot": _sum(metrics.bot),
            "accepted": _sum(metrics.accepted),
        },
        "campaigns": campaigns,
        "campaigns_known": known,
        "alerts_open": campaign_alerts + len(capacity_alerts),
    }


def _campaigns() -> tuple[list[dict[str, Any]], int, int]:
    """The busiest campaigns of the partitions this worker owns (at most
    :data:`SHOWN_CAMPAIGNS` of the first :data:`SCAN_CAMPAIGNS`), how many it has, and
    how many open alerts they have (listed or not)."""
    found: list[dict[str, Any]] = []
    known = opened = 0
    for partition in sorted(active_partitions(campaign_windows.changelog_topic)):
        ids = alerting.campaign_ids(partition)
        known += len(ids)
        open_alerts: dict[str, list[dict[str, Any]]] = {}
        for incident in alerting.incidents(partition):
            if incident.status == "open":
                alert = alerting.alert_json(incident)
                open_alerts.setdefault(alert["campaign_id"], []).append(alert)
                opened += 1
        for campaign_id in ids[: max(0, SCAN_CAMPAIGNS - len(found))]:
            stats = local_stats(campaign_id, None, None)
            found.append(
                {
                    "campaign_id": campaign_id,
                    "stream_time": stats["stream_time"],
                    "from": stats["from"],
                    "to": stats["to"],
                    "totals": stats["totals"],
                    "minutes": [
                        {k: w[k] for k in ("start", "end", "impressions", "clicks", "ctr")}
                        for w in stats["windows"]
                    ],
                    "open_alerts": open_alerts.get(campaign_id, []),
                }
            )
    return _busiest(found), known, opened


def _busiest(campaigns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def busy(c: dict[str, Any]) -> tuple[int, int, str]:
        return (-c["totals"]["impressions"], -c["totals"]["clicks"], c["campaign_id"])

    return sorted(campaigns, key=busy)[:SHOWN_CAMPAIGNS]


def merge(parts: list[dict[str, Any]], segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of the whole cluster from every worker's part (counters summed)."""
    sources: dict[str, int] = {}
    reasons: dict[str, int] = {}
    totals = {"duplicate": 0, "bot": 0, "accepted": 0}
    for part in parts:
        counters = part["counters"]
        for name, value in counters.get("received_by_source", {}).items():
            sources[name] = sources.get(name, 0) + value
        for name, value in counters.get("invalid_by_reason", {}).items():
            reasons[name] = reasons.get(name, 0) + value
        for name in totals:
            totals[name] += counters.get(name, 0)
    campaigns = _busiest([c for part in parts for c in part["campaigns"]])
    workers = sorted((part["worker"] for part in parts), key=lambda w: w["url"])
    return {
        "generated_at": format_timestamp(wall_ms()),
        "workers": workers,
        "accounting": {
            "received": sum(sources.values()),
            "received_by_source": dict(sorted(sources.items())),
            "invalid": sum(reasons.values()),
            "invalid_by_reason": dict(sorted(reasons.items(), key=lambda r: (-r[1], r[0]))),
            **totals,
        },
        "throughput": sum(
            w.get("capacity", {}).get("arrival_rate") or 0.0 for w in workers if "capacity" in w
        ),
        "segments": segments,
        "campaigns": campaigns,
        "campaigns_total": sum(part.get("campaigns_known", 0) for part in parts),
        "alerts_open": sum(part.get("alerts_open", 0) for part in parts),
    }


# --- reading the worker's own metrics ---------------------------------------------------


def _samples(metric: Any) -> list[Any]:
    return [sample for family in metric.collect() for sample in family.samples]


def _sum(counter: Any) -> int:
    return int(sum(s.value for s in _samples(counter) if s.name.endswith("_total")))


def _by_label(counter: Any, label: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for sample in _samples(counter):
        if sample.name.endswith("_total"):
            key = sample.labels.get(label, "")
            found[key] = found.get(key, 0) + int(sample.value)
    return found


def latency(samples: list[Any]) -> dict[str, Any]:
    """Count, mean and the 50th and 99th percentiles (interpolated within a bucket) of
    a histogram's samples, since the worker started."""
    buckets = sorted(
        (float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")
    )
    count = next((s.value for s in samples if s.name.endswith("_count")), 0.0)
    total = next((s.value for s in samples if s.name.endswith("_sum")), 0.0)
    return {
        "count": int(count),
        "mean": total / count if count else None,
        "p50": _quantile(buckets, count, 0.50),
        "p99": _quantile(buckets, count, 0.99),
    }


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    if not count:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # past the last bound: the most that can be said
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower
