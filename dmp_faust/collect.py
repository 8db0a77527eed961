"""``POST /collect``: validate at the edge, produce the valid events to the raw topic.

Accepted events go to ``events.raw`` like any producer's, marked with the
header ``dmp-source: http`` so the pipeline does not count them as received
a second time; the answer is sent once Kafka has acknowledged them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dmp_faust.app import metrics, settings
from dmp_faust.clock import wall_ms
from dmp_faust.domain.collect import BodyTooLarge, Collected, parse_body
from dmp_faust.domain.events import TOO_LARGE
from dmp_faust.responses import HttpError, json_response
from dmp_faust.topics import ORIGIN_HEADER, raw_events

HTTP_HEADERS = [(ORIGIN_HEADER, b"http")]
_READ_TIMEOUT_S = 30.0


async def collect(request: Any) -> web.Response:
    body = await _read_body(request)
    try:
        collected = parse_body(
            body,
            wall_ms(),
            settings.max_event_bytes,
            settings.max_batch_events,
            settings.future_tolerance_ms,
        )
    except BodyTooLarge as exc:
        metrics.received.labels("http").inc()
        metrics.invalid.labels(TOO_LARGE).inc()
        raise HttpError(413, TOO_LARGE, str(exc)) from None
    _count(collected)
    sends = [
        await raw_events.send(key=event.event_id.encode(), value=raw, headers=HTTP_HEADERS)
        for event, raw in collected.accepted
    ]
    await asyncio.gather(*sends)
    accepted = len(collected.accepted)
    return json_response(
        {"accepted": accepted, "errors": collected.errors}, 202 if accepted else 400
    )


def _count(collected: Collected) -> None:
    metrics.received.labels("http").inc(collected.received)
    for error in collected.errors:
        metrics.invalid.labels(error["reason"]).inc()


async def _read_body(request: Any) -> bytes:
    """Read at most ``max_body_bytes``; a longer or stalled body is cut off."""
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, TOO_LARGE, f"a request body is at most {limit} bytes")
    try:
        return await asyncio.wait_for(_read_limited(request.content, limit), _READ_TIMEOUT_S)
    except TimeoutError:
        raise HttpError(408, "timeout", "the request body did not arrive in time") from None


async def _read_limited(content: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise HttpError(413, TOO_LARGE, f"a request body is at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
