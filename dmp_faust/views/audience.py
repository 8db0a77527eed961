"""Profiles, erasure, segments and frequency capping.

``/profiles`` and ``/frequency`` return or erase personal data: they need the
bearer token when ``DMP_API_TOKEN`` is set. A lookup by an anonymous id that
was linked continues under the user id, on the worker that owns it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from faust.web import View

from dmp_faust.app import app, segment_rules
from dmp_faust.domain import profiles as pf
from dmp_faust.domain.batches import CommandItem, encode_batch
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.identity import Erase
from dmp_faust.domain.segments import definition
from dmp_faust.responses import HttpError, json_response
from dmp_faust.settings import DAY_MS
from dmp_faust.topics import profile_commands
from dmp_faust.web import partition_for, require_token, route_to_owner
from tables.profiles import profiles
from tables.segment_sizes import segment_sizes
from tables.stream_times import stream_times

RULES = {rule.id: rule for rule in segment_rules}


async def _record(request: Any, profile_id: str) -> tuple[Any, pf.Profile | None]:
    """(a routed answer, None), or (None, the local record of ``profile_id``)."""
    require_token(request)
    routed = await route_to_owner(request, profiles, profile_id)
    if routed is not None:
        return routed, None
    record = pf.from_bytes(profiles.get(profile_id))
    if record is None or not pf.has_data(record):
        raise HttpError(404, "not_found", f"no profile for id {profile_id!r}")
    return None, record


async def _follow_link(request: Any, record: pf.Profile, path: str) -> Any:
    """Answer for the user an anonymous record is linked to, wherever it lives."""
    user_id = record.merged_into or ""
    routed = await route_to_owner(request, profiles, user_id, path.format(quote(user_id, safe="")))
    return routed


@app.page("/profiles/{profile_id}")
class Profiles(View):
    async def get(self, request: Any, profile_id: str) -> Any:
        routed, record = await _record(request, profile_id)
        if routed is not None:
            return routed
        assert record is not None
        if record.merged_into:
            linked = await _follow_link(request, record, "/profiles/{}")
            if linked is not None:
                return linked
            record = pf.from_bytes(profiles.get(record.merged_into))
            if record is None:
                raise HttpError(404, "not_found", f"no profile for id {profile_id!r} (yet)")
        return json_response(pf.view(record))

    async def delete(self, request: Any, profile_id: str) -> Any:
        routed, record = await _record(request, profile_id)
        if routed is not None:
            return routed
        assert record is not None
        canonical = record.merged_into or profile_id
        erase = encode_batch([CommandItem(canonical, 0, Erase())])
        sent = await profile_commands.send(partition=partition_for(canonical), value=erase)
        await sent
        return json_response({"profile_id": canonical, "status": "erasing"}, 202)


@app.page("/frequency/{profile_id}/{campaign_id}")
class Frequency(View):
    async def get(self, request: Any, profile_id: str, campaign_id: str) -> Any:
        require_token(request)
        routed = await route_to_owner(request, profiles, profile_id)
        if routed is not None:
            return routed
        record = pf.from_bytes(profiles.get(profile_id))
        if record is not None and record.merged_into:
            path = "/frequency/{}/" + quote(campaign_id, safe="")
            linked = await _follow_link(request, record, path)
            if linked is not None:
                return linked
            profile_id = record.merged_into
            record = pf.from_bytes(profiles.get(profile_id))
        stream_time = stream_times.get(f"profiles:{partition_for(profile_id)}")
        now = int(stream_time) if stream_time else 0
        count = pf.impressions_within(record, campaign_id, now, DAY_MS)
        return json_response({"impressions_24h": count})


@app.page("/segments")
class Segments(View):
    async def get(self, request: Any) -> Any:
        sizes = await asyncio.gather(*(_size_from_owner(request, seg) for seg in RULES))
        return json_response([{"segment": s, "size": n} for s, n in zip(RULES, sizes, strict=True)])


@app.page("/segments/{segment_id}")
class Segment(View):
    async def get(self, request: Any, segment_id: str) -> Any:
        if segment_id not in RULES:
            raise HttpError(404, "not_found", f"no segment {segment_id!r}")
        routed = await route_to_owner(request, segment_sizes, segment_id)
        if routed is not None:
            return routed
        return json_response(
            {
                "segment": segment_id,
                "size": _local_size(segment_id),
                "definition": definition(RULES[segment_id]),
            }
        )


def _local_size(segment_id: str) -> int:
    return GuardedCounter.from_bytes(segment_sizes.get(segment_id)).value


async def _size_from_owner(request: Any, segment_id: str) -> int:
    path = f"/segments/{quote(segment_id, safe='')}"
    routed = await route_to_owner(request, segment_sizes, segment_id, path)
    if routed is None:
        return _local_size(segment_id)
    if routed.status != 200:
        raise HttpError(503, "unavailable", f"the owner of segment {segment_id!r} did not answer")
    return int(json.loads(routed.body)["size"])
