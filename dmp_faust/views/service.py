"""``POST /collect`` (logic in :mod:`dmp_faust.collect`) and ``GET /health``."""

from __future__ import annotations

from typing import Any

from faust.web import View

from dmp_faust.app import app
from dmp_faust.collect import collect
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
        recovered = app.tables.recovery.completed.is_set()
        ready = recovered and not app.rebalancing
        stages = crashes.report(["validate_events", *map(stage_of, app.agents)])
        failing = unhealthy(stages)
        body = {
            "status": "ok" if ready and not failing else "unavailable",
            "worker": str(app.conf.canonical_url),
            "recovered": recovered,
            "rebalancing": bool(app.rebalancing),
            "active_partitions": sorted(active_partitions(valid_events)),
            "stages": stages,
        }
        if not ready:
            body.update(error="unavailable", detail="tables are recovering or a rebalance is on")
        elif failing:
            body.update(error="unavailable", detail=failing)
        return json_response(body, 200 if ready and not failing else 503)
