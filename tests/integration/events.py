"""Event builders for the integration tests, on a 2021 timeline."""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

T0 = 1_614_600_000_000  # 2021-03-01T12:00:00Z
MINUTE = 60_000
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def event(
    kind: str, ts: int, user: str, campaign: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"ev-{uuid.uuid4().hex}",
        "type": kind,
        "timestamp": ts,
        "anonymous_id": user,
        "user_agent": CHROME,
        "ip": "203.0.113.77",
    }
    if campaign is not None:
        body["campaign_id"] = campaign
    body.update(extra)
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def expected_windows(events: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per-window counts computed from the events alone (independently of the project)."""
    windows: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"counts": Counter(), "revenue": 0.0, "users": set()}
    )
    for body in events:
        if body["type"] not in ("impression", "click", "conversion"):
            continue
        ts = body["timestamp"] if isinstance(body["timestamp"], int) else None
        assert ts is not None, "the expectation helper takes epoch-ms timestamps"
        window = windows[ts - ts % MINUTE]
        window["counts"][body["type"]] += 1
        window["users"].add(body.get("user_id") or body["anonymous_id"])
        if body["type"] == "conversion":
            window["revenue"] += body.get("revenue", 0.0)
    return dict(windows)
