"""Profiles, erasure, segments and frequency capping.

``/profiles``, ``/erasures`` and ``/frequency`` return or erase personal data:
they need the bearer token when ``DMP_API_TOKEN`` is set. A lookup by an id
that was linked continues under the id it is linked to, on the worker that
owns it.

An erasure id is random, drawn until it falls on the partition of the id the
``DELETE`` names (Kafka's partitioner): the Erase command goes to that
partition, which records the erasure's status under the erasure id, so a
``GET /erasures/{id}`` is routed by the id alone, like any key lookup.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from urllib.parse import quote

from faust.web import View

from dmp_faust.app import app, segment_rules, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain import profiles as pf
from dmp_faust.domain.batches import CommandItem, encode_batch
from dmp_faust.domain.counter import GuardedCounter
from dmp_faust.domain.erasure_status import ERASURE_ID_PREFIX, is_erasure_id, read_status
from dmp_faust.domain.identity import MAX_HOPS, Erase
from dmp_faust.domain.segments import definition
from dmp_faust.responses import HttpError, json_response, unavailable
from dmp_faust.settings import DAY_MS
from dmp_faust.topics import profile_commands
from dmp_faust.web import hops, partition_for, require_token, route_to_owner
from tables.erasure_status import erasure_status
from tables.profiles import profiles
from tables.segment_sizes import segment_sizes
from tables.stream_times import stream_times

RULES = {rule.id: rule for rule in segment_rules}
LINK_QUERY = "link"  # GET /profiles/{id}?link=1: where a linked id leads, not the profile
# GET /profiles/{id}?for={linked id}: the profile, once the linked id's state is in it
# (a lookup by a linked id continues so on the worker of the id it leads to)
MERGED_QUERY = "for"
ERASURE_NOTED_WITHIN_S = 5.0  # how long a DELETE waits for its erasure to be recorded


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


async def _canonical(
    request: Any, profile_id: str, record: pf.Profile | None, path: str
) -> tuple[Any, str, pf.Profile | None]:
    """(a routed answer, the canonical id, None), or (None, the canonical id, its local
    record or None). Links are resolved from here: a linked id another worker owns is
    only asked where it leads (``?link=1``), so a chain of links across workers costs
    one hop per link, each from this worker, and the answer then comes from the
    canonical id's owner (``path``, formatted with that id): never a second hop. A
    chain longer than any a settled person has (links still travelling) answers 503."""
    remote = False
    for _ in range(MAX_HOPS):
        if record is None or not record.merged_into:
            break
        profile_id = record.merged_into
        if hops(request) >= 1:
            # Routed here: the worker the client asked goes on under the linked id (a
            # continuation, see dmp_faust.web), unless that id is this worker's too.
            target = path.format(quote(profile_id, safe=""))
            await route_to_owner(request, profiles, profile_id, target)
            record, remote = pf.from_bytes(profiles.get(profile_id)), False
            continue
        record, remote = await _link_of(request, profile_id)
    else:
        raise HttpError(503, "unavailable", "identity links are still settling; retry")
    if not remote or record is None:
        return None, profile_id, record
    target = path.format(quote(profile_id, safe=""))
    routed = await route_to_owner(request, profiles, profile_id, target)
    if routed is None:  # it moved here meanwhile
        return None, profile_id, pf.from_bytes(profiles.get(profile_id))
    return routed, profile_id, None


async def _link_of(request: Any, profile_id: str) -> tuple[pf.Profile | None, bool]:
    """The record of ``profile_id`` (remote: only its id and link), and whether it is
    another worker's."""
    path = f"/profiles/{quote(profile_id, safe='')}?{LINK_QUERY}=1"
    routed = await route_to_owner(request, profiles, profile_id, path)
    if routed is None:
        return pf.from_bytes(profiles.get(profile_id)), False
    if routed.status == 404:
        return None, True
    if routed.status != 200:
        raise HttpError(503, "unavailable", f"the owner of a linked id answered {routed.status}")
    body = json.loads(routed.body)
    return pf.Profile(profile_id=profile_id, merged_into=body.get("linked_to")), True


@app.page("/profiles/{profile_id}")
class Profiles(View):
    async def get(self, request: Any, profile_id: str) -> Any:
        routed, record = await _record(request, profile_id)
        if routed is not None:
            return routed
        assert record is not None
        if record.merged_into and request.query.get(LINK_QUERY) == "1":  # see _canonical
            return json_response({"profile_id": profile_id, "linked_to": record.merged_into})
        asked = request.query.get(MERGED_QUERY) or (profile_id if record.merged_into else None)
        path = "/profiles/{}"
        if asked is not None:
            path += f"?{MERGED_QUERY}={quote(asked, safe='')}"
        linked, _, record = await _canonical(request, profile_id, record, path)
        if linked is not None:
            return linked
        if record is None or not pf.has_data(record):
            # The id exists and is linked; what it was merged into is still on its way.
            raise unavailable(f"the profile {profile_id!r} is linked to has not arrived yet")
        if asked is not None and not pf.has_merged(record, asked):
            # Linked, but its own events are still on their way to the profile: answered
            # now, it would count fewer than the id's own record did before the link.
            raise unavailable(f"the events of {asked!r} are still being merged into its profile")
        return json_response(pf.view(record))

    async def delete(self, request: Any, profile_id: str) -> Any:
        """202 for any id, known or not: its data may still be on its way."""
        require_token(request)
        routed = await route_to_owner(request, profiles, profile_id)
        if routed is not None:
            return routed
        record = pf.from_bytes(profiles.get(profile_id))
        canonical = (record.merged_into if record else None) or profile_id
        partition = partition_for(profile_id)
        erasure_id = _new_erasure_id(partition)
        before_ms = wall_ms() + settings.future_tolerance_ms  # see docs/SECURITY.md
        erase = Erase(before_ms, erasure_id)
        value = encode_batch([CommandItem(profile_id, 0, erase)])
        await (await profile_commands.send(partition=partition, value=value))
        await _noted(erasure_id)
        body = {"profile_id": canonical, "erasure_id": erasure_id, "status": "erasing"}
        return json_response(body, 202)


def _new_erasure_id(partition: int) -> str:
    """A random id that Kafka's partitioner puts on ``partition`` (about 8 draws)."""
    while True:
        erasure_id = f"{ERASURE_ID_PREFIX}{secrets.token_hex(12)}"
        if partition_for(erasure_id) == partition:
            return erasure_id


async def _noted(erasure_id: str) -> None:
    """Wait (a bounded time) until the erasure is recorded here, so that a GET of its
    id right after the 202 finds it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ERASURE_NOTED_WITHIN_S
    while erasure_status.get(erasure_id) is None and loop.time() < deadline:
        await asyncio.sleep(0.02)


@app.page("/erasures/{erasure_id}")
class Erasures(View):
    async def get(self, request: Any, erasure_id: str) -> Any:
        require_token(request)
        routed = await route_to_owner(request, erasure_status, erasure_id)
        if routed is not None:
            return routed
        state = read_status(erasure_status.get(erasure_id)) if is_erasure_id(erasure_id) else None
        if state is None:  # never issued, or expired (the latest ones are kept)
            raise HttpError(404, "not_found", f"no erasure {erasure_id!r}")
        return json_response({"erasure_id": erasure_id, "status": state.status, "ids": state.ids})


@app.page("/frequency/{profile_id}/{campaign_id}")
class Frequency(View):
    async def get(self, request: Any, profile_id: str, campaign_id: str) -> Any:
        require_token(request)
        routed = await route_to_owner(request, profiles, profile_id)
        if routed is not None:
            return routed
        record = pf.from_bytes(profiles.get(profile_id))
        path = "/frequency/{}/" + quote(campaign_id, safe="")
        linked, profile_id, record = await _canonical(request, profile_id, record, path)
        if linked is not None:
            return linked
        stream_time = stream_times.get(f"profiles:{partition_for(profile_id)}")
        now = int(stream_time) if stream_time else 0
        count = pf.impressions_within(record, campaign_id, now, DAY_MS)
        return json_response({"impressions_24h": count})


@app.page("/segments")
class Segments(View):
    async def get(self, request: Any) -> Any:
        return json_response(await all_sizes(request))


async def all_sizes(request: Any) -> list[dict[str, Any]]:
    """Every segment's size, each from its owner (the answer of ``GET /segments``)."""
    sizes = await asyncio.gather(*(_size_from_owner(request, seg) for seg in RULES))
    return [{"segment": s, "size": n} for s, n in zip(RULES, sizes, strict=True)]


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
