"""``POST /collect`` (logic in :mod:`dmp_faust.collect`) and ``GET /health``."""

from __future__ import annotations

from typing import Any

from faust.web import View

from agents import lag as stage_lag
from dmp_faust import capacity
from dmp_faust.app import app
from dmp_faust.collect import collect
from dmp_faust.readiness import readiness, recovering_partitions
from dmp_faust.responses import json_response
from dmp_faust.stages import crashes, stage_of, unhealthy
from dmp_faust.topics import valid_events
from dmp_faust.web import active_partitions


@app.page("/collect")
class Collect(View):
    async def post(self, request: Any) -> Any:
        return await collect(request)


@app.page("/health")
class Health(View):
    async def get(self, request: Any) -> Any:
        ready, why = readiness()  # every active partition of every table restored
        recovering = recovering_partitions()
        stages = crashes.report(["validate_events", *map(stage_of, app.agents)])
        failing = unhealthy(stages)
        body = {
            "status": "ok" if ready and not failing else "unavailable",
            "worker": str(app.conf.canonical_url),
            "recovered": app.tables.recovery.completed.is_set() and not recovering,
            "rebalancing": bool(app.rebalancing),
            "active_partitions": sorted(active_partitions(valid_events)),
            "recovering_partitions": recovering,
            "stages": stages,
            "capacity": capacity.latest().as_dict(),
            "stage_lag": stage_lag.as_json(),
        }
        if not ready or failing:
            body.update(error="unavailable", detail=why if not ready else failing)
            return json_response(body, 503, {"Retry-After": "1"})
        return json_response(body)
