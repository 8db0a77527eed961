"""Routing of a key lookup to the worker that owns the key.

A key lookup must be answered by the worker that owns the key's partition.
The partition is computed with Kafka's default partitioner (murmur2 of the
key bytes, as the producers of the keyed topics use), and the owner comes
from Faust's partition assignment of the table's changelog.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import ClientError, ClientTimeout, web

from dmp_faust.app import app, settings
from dmp_faust.batching import partition_for
from dmp_faust.responses import HttpError

log = logging.getLogger(__name__)

_PROXY_TIMEOUT = ClientTimeout(total=10)
_FORWARDED_HEADERS = ("Authorization", "Accept")
_ROUTED_HEADER = "X-Dmp-Routed"


def require_token(request: Any) -> None:
    """401 unless ``DMP_API_TOKEN`` is unset or the request bears it (constant-time compare)."""
    expected = settings.api_token
    if expected is None:
        return
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise HttpError(401, "unauthorized", "this route needs Authorization: Bearer <token>")


def active_partitions(topic: Any) -> set[int]:
    """Partitions of ``topic`` (all app topics are co-partitioned) this worker processes."""
    name = topic.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}


def owner_url(table: Any, partition: int) -> str | None:
    """Base URL of the worker that holds ``partition`` of ``table`` as active."""
    topic = table.changelog_topic.get_topic_name()
    for url, topics in app.router.table_metadata(table.name).items():
        if partition in topics.get(topic, ()):
            return str(url).rstrip("/")
    return None


async def route_to_owner(
    request: Any, table: Any, key: str, path_qs: str | None = None
) -> web.Response | None:
    """Proxy to the owner of ``key``; ``None`` when that is this worker.

    The request goes on as it came, or to ``path_qs`` when given (a lookup
    that continues under another key, such as a linked id's profile). A
    request that was already routed once is answered where it arrived.
    """
    url = owner_url(table, partition_for(key))
    if url is None:
        raise HttpError(503, "unavailable", "the partition has no owner yet (rebalancing)")
    if url == str(app.conf.canonical_url).rstrip("/"):
        return None
    if path_qs is None and request.headers.get(_ROUTED_HEADER):
        return None
    headers = {
        name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers
    }
    headers[_ROUTED_HEADER] = "1"
    target = url + (path_qs or request.path_qs)
    try:
        async with app.http_client.request(
            request.method, target, headers=headers, timeout=_PROXY_TIMEOUT
        ) as response:
            body = await response.read()
            return web.Response(
                body=body, status=response.status, content_type=response.content_type
            )
    except (ClientError, TimeoutError) as exc:
        raise HttpError(503, "unavailable", f"owner {url} did not answer: {exc}") from exc


# --- the route table, in the log ------------------------------------------------------


async def _log_routes(web_app: web.Application) -> None:
    """Every route this worker serves, once the router is final (tests read it)."""
    routes = sorted(
        f"{route.method} {route.resource.canonical}"
        for route in web_app.router.routes()
        if route.resource is not None
    )
    log.info("serving HTTP routes: %s", ", ".join(routes))


app.web.web_app.on_startup.append(_log_routes)  # type: ignore[attr-defined]
