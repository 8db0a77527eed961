"""JSON responses and errors for every route, Faust's own included.

``json_errors`` is installed as aiohttp middleware through Faust's
``web_application_options``, so aiohttp's own 404/405/413 are JSON too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

HANDLER = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """Raised by a view to answer ``{"error": code, "detail": detail}``."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def unavailable(detail: str, retry_after_s: int = 1) -> HttpError:
    """503 with ``Retry-After``: the answer exists, but not here or not yet."""
    return HttpError(503, "unavailable", detail, {"Retry-After": str(retry_after_s)})


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": code, "detail": detail}, status, headers)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    503: "unavailable",
}


@web.middleware
async def json_errors(request: web.Request, handler: HANDLER) -> web.StreamResponse:
    """Every error is JSON, including aiohttp's own 404 and 405."""
    try:
        return await handler(request)
    except HttpError as exc:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _CODES.get(exc.status, "error"), exc.reason)
