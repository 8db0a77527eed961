"""Invalid events for the generator, one builder per reason the collector refuses.

Each builder takes the mix's ``random.Random``, a valid event (built for it
alone, so it may be changed in place) and a time at least an hour in the
future, and returns the raw bytes to send. ``too_old`` has no builder: the
collector cannot see it; the pipeline decides it later.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

import msgspec

from dmp_faust.domain import events as ev
from dmp_faust.domain.timefmt import format_timestamp, parse_timestamp
from dmp_faust.generator.audience import RawEvent, timestamp

MAX_EVENT_BYTES: Final = 64 * 1024
# What the collector can refuse; too_old is decided later, by the pipeline.
COLLECTOR_REASONS: Final = tuple(r for r in ev.REASONS if r != ev.TOO_OLD)


def corrupt(reason: str, rng: random.Random, event: RawEvent, future_ms: int) -> bytes:
    """The raw bytes of ``event`` spoilt so that the collector refuses it for ``reason``."""
    return _BUILDERS[reason](rng, event, future_ms)


def _malformed_json(rng: random.Random, event: RawEvent, _: int) -> bytes:
    raw = msgspec.json.encode(event)
    r = rng.random()
    if r < 0.6:
        return raw[: rng.randrange(1, len(raw) - 1)]  # truncated
    if r < 0.8:
        return raw[:-1] + b",}"  # trailing comma
    return b"\xff\xfe" + raw[2:]  # not UTF-8


def _not_an_object(rng: random.Random, event: RawEvent, _: int) -> bytes:
    return msgspec.json.encode(rng.choice(([event], event["event_id"], None, 42, True)))


def _too_large(rng: random.Random, event: RawEvent, _: int) -> bytes:
    event["properties"] = {"payload": "x" * (MAX_EVENT_BYTES + rng.randrange(1, 8192))}
    return msgspec.json.encode(event)


def _missing_field(rng: random.Random, event: RawEvent, _: int) -> bytes:
    choices = ["event_id", "type", "timestamp", "ids", "empty_id"]
    if "campaign_id" in event:
        choices.append("campaign_id")
    field = rng.choice(choices)
    if field == "ids":
        event.pop("anonymous_id")
        event.pop("user_id", None)
    elif field == "empty_id":
        event["event_id"] = rng.choice(("", None))
    else:
        event.pop(field)
    return msgspec.json.encode(event)


def _bad_type(rng: random.Random, event: RawEvent, _: int) -> bytes:
    field, value = rng.choice(
        (
            ("event_id", rng.randrange(10**9)),
            ("anonymous_id", 12345),
            ("type", 1),
            ("url", 404),
            ("properties", ["a", "b"]),
            ("revenue", "12.50"),
            ("anonymous_id", "a" * 200),
        )
    )
    event[field] = value
    return msgspec.json.encode(event)


def _unknown_type(rng: random.Random, event: RawEvent, _: int) -> bytes:
    event["type"] = rng.choice(("pageview", "PageView", "page-view", "purchase", "view", ""))
    return msgspec.json.encode(event)


def _bad_timestamp(rng: random.Random, event: RawEvent, _: int) -> bytes:
    ts = parse_timestamp(event["timestamp"])
    event["timestamp"] = rng.choice(
        (
            "yesterday",
            format_timestamp(ts).rstrip("Z"),
            ts / 1000,
            str(ts),
            "2024-02-30T10:00:00Z",
            True,
            {"ms": ts},
        )
    )
    return msgspec.json.encode(event)


def _future_timestamp(rng: random.Random, event: RawEvent, future_ms: int) -> bytes:
    event["timestamp"] = timestamp(rng, future_ms)
    return msgspec.json.encode(event)


def _field_too_long(rng: random.Random, event: RawEvent, _: int) -> bytes:
    field = rng.choice(sorted(ev.MAX_TEXT_CHARS))
    over = ev.MAX_TEXT_CHARS[field] + rng.randrange(1, 16_384)  # within the 64 KiB
    event[field] = ("https://site.example/" if field != "user_agent" else "Mozilla/5.0 ").ljust(
        over, "x"
    )
    return msgspec.json.encode(event)


_BUILDERS: Final[dict[str, Callable[[random.Random, RawEvent, int], bytes]]] = {
    ev.MALFORMED_JSON: _malformed_json,
    ev.NOT_AN_OBJECT: _not_an_object,
    ev.TOO_LARGE: _too_large,
    ev.MISSING_FIELD: _missing_field,
    ev.BAD_TYPE: _bad_type,
    ev.UNKNOWN_TYPE: _unknown_type,
    ev.BAD_TIMESTAMP: _bad_timestamp,
    ev.FUTURE_TIMESTAMP: _future_timestamp,
    ev.FIELD_TOO_LONG: _field_too_long,
}
