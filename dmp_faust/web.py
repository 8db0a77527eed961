"""Routing of a key lookup to the worker that owns the key, and when to answer it.

A key lookup must be answered by the worker that owns the key's partition,
once that partition is restored there. The partition is computed with
Kafka's default partitioner (murmur2 of the key bytes, as the producers of
the keyed topics use), and the owner comes from Faust's partition assignment
of the table's changelog: the URLs the members of this app's consumer group
announced, so a lookup (and the bearer token with it) only ever goes to a
member of this cluster.

Rules, in this order:

- owner unknown (a rebalance is on): 503 with ``Retry-After``;
- owner is this worker: answered here, but only if the partition is active
  here, restored and caught up (:func:`dmp_faust.readiness.ensure_local`);
  else 503, never a 404 from a table still filling;
- owner is another worker, and the request came from a client: proxied to
  the owner with a signed routing header (:mod:`dmp_faust.domain.routing`),
  hop count 1;
- owner is another worker, and the request was routed here (valid header):
  never forwarded again. Its own key moved meanwhile: 503. A continuation
  under another key (an anonymous id linked to a user owned elsewhere): a
  ``307`` with ``X-Dmp-Continue`` for the worker that proxied it, which
  routes the continuation itself, at most :data:`MAX_CONTINUATIONS` times.

So every proxied request crosses exactly one hop, and no request can loop.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import ClientError, ClientTimeout, web
from yarl import URL

from dmp_faust.app import app, settings
from dmp_faust.batching import partition_for
from dmp_faust.clock import wall_ms
from dmp_faust.domain.routing import ROUTE_HEADER, sign, verify
from dmp_faust.readiness import ensure_local, own_url
from dmp_faust.responses import HttpError, unavailable

log = logging.getLogger(__name__)

_PROXY_TIMEOUT = ClientTimeout(total=10)
_FORWARDED_HEADERS = ("Authorization", "Accept")
CONTINUE_HEADER = "X-Dmp-Continue"
# Links a lookup follows (an anonymous id to its user): one in a consistent table;
# the second allows for a link that changed while the lookup was under way.
MAX_CONTINUATIONS = 2
_SECRET = settings.routing_secret()
_WARN_EVERY_S = 60.0
_last_warning = [0.0]


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


def hops(request: Any) -> int:
    """How many workers ``request`` crossed: 0 unless it bears a valid routing header."""
    value = request.headers.get(ROUTE_HEADER)
    hop = verify(_SECRET, value, request.method, request.raw_path, wall_ms())
    if value and not hop and time.monotonic() - _last_warning[0] > _WARN_EVERY_S:
        _last_warning[0] = time.monotonic()
        log.warning(
            "a request bore a routing header that is not valid here; answered as a client's. "
            "Is DMP_CLUSTER_SECRET (or DMP_API_TOKEN) the same on every worker, and are the "
            "workers' clocks within 30 s? (at most one such warning a minute; no path: it "
            "holds ids)"
        )
    return hop


async def route_to_owner(
    request: Any, table: Any, key: str, path_qs: str | None = None
) -> web.Response | None:
    """The owner's answer for ``key``; ``None`` when this worker is to answer.

    The request goes on as it came, or to ``path_qs`` when given: a lookup
    that continues under another key, such as a linked id's profile.
    """
    partition = partition_for(key)
    url = owner_url(table, partition)
    if url is None:
        raise unavailable(f"partition {partition} of {table.name} has no owner (rebalancing)")
    if url == own_url():
        ensure_local(table, partition)
        return None
    if hops(request) >= 1:
        if path_qs is not None:
            value = f"{quote(key, safe='')} {path_qs}"
            raise HttpError(307, "continue", f"continue at {path_qs}", {CONTINUE_HEADER: value})
        raise unavailable(f"partition {partition} of {table.name} moved to {url}")
    return await _proxy(request, table, url, path_qs or request.raw_path)


async def _proxy(request: Any, table: Any, url: str, path_qs: str) -> web.Response:
    """The answer of ``url`` to ``path_qs``, following continuations from its workers."""
    for _ in range(MAX_CONTINUATIONS + 1):
        status, body, content_type, headers = await _forward(request, url, path_qs)
        follow = headers.get(CONTINUE_HEADER)
        if status != 307 or follow is None:
            kept = {name: headers[name] for name in ("Retry-After",) if name in headers}
            return web.Response(body=body, status=status, content_type=content_type, headers=kept)
        quoted_key, _, path_qs = follow.partition(" ")
        if not path_qs.startswith("/"):
            raise unavailable(f"owner {url} answered a continuation that is no path")
        partition = partition_for(unquote(quoted_key))
        # The owner comes from this worker's own view of the assignment, never from
        # the answer: the token goes only to members of the cluster.
        owner = owner_url(table, partition)
        if owner is None:
            raise unavailable(f"partition {partition} of {table.name} has no owner (rebalancing)")
        url = owner  # possibly this worker: it then answers the continuation, as routed
    raise unavailable(f"the lookup followed more than {MAX_CONTINUATIONS} links")


async def ask(request: Any, url: str, path_qs: str) -> tuple[int, bytes]:
    """The answer of ``url``, a member of the cluster, to ``path_qs`` (routed: one hop)."""
    status, body, _, _ = await _forward(request, url, path_qs)
    return status, body


async def _forward(request: Any, url: str, path_qs: str) -> tuple[int, bytes, str, Any]:
    headers = {
        name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers
    }
    headers[ROUTE_HEADER] = sign(_SECRET, request.method, path_qs, 1, wall_ms())
    target = URL(url + path_qs, encoded=True)  # exactly the path that was signed
    try:
        async with app.http_client.request(
            request.method,
            target,
            headers=headers,
            timeout=_PROXY_TIMEOUT,
            allow_redirects=False,  # a redirect could take the token anywhere
        ) as response:
            body = await response.read()
            return response.status, body, response.content_type, response.headers
    except (ClientError, TimeoutError) as exc:
        raise unavailable(f"owner {url} did not answer: {exc}") from exc


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
