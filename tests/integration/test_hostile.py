"""100,000 hostile payloads on the raw topic: the worker survives and accounts for each one.

The payloads are generated from a seed, each built knowing what the contract
says must become of it (a refusal reason, duplicate, bot or accepted): the
expectations are never asked of the project's validator. Then every counter
must match exactly and the dead-letter topic must hold one record per refused
payload, with its reason, its original bytes and its source offset.

Stream time is kept deterministic: the first records of every partition are
*anchor* events at the latest event time the test sends, produced before
anything else (and with event ids that reach every partition of the keyed
topics too); every valid event is within 24 h of them, every ``too_old`` one
older. So no outcome depends on the order the worker meets the partitions in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from tests.integration.conftest import WorkerFactory
from tests.integration.events import CHROME, GOOGLEBOT, MINUTE, T0
from tests.integration.support import consume, metrics, wait_until

pytestmark = pytest.mark.integration

SEED = 20_210_301
TOTAL = 100_000
PARTITIONS = 8  # the worker's default DMP_PARTITIONS
ANCHORS = PARTITIONS * PARTITIONS
DAY = 24 * 60 * MINUTE
ANCHOR_MS = T0 + 60 * MINUTE  # the latest event time sent: every partition's stream time
OLDEST_VALID_MS = ANCHOR_MS - DAY  # exactly the retention behind it: still accepted
FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
LIMIT = 64 * 1024
EPOCH = datetime(1970, 1, 1)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
TYPES = ("page_view", "impression", "click", "conversion", "identify")
CAMPAIGN_TYPES = ("impression", "click", "conversion")
TEXT_FIELDS = (
    "event_id",
    "type",
    "anonymous_id",
    "user_id",
    "campaign_id",
    "ad_id",
    "url",
    "referrer",
    "user_agent",
    "ip",
)
WRONG_FOR_TEXT: tuple[Any, ...] = (42, -1, 4.5, True, False, [], ["x"], {}, {"a": 1}, 10**30)
INVALID = (
    "malformed_json",
    "not_an_object",
    "too_large",
    "missing_field",
    "bad_type",
    "unknown_type",
    "bad_timestamp",
    "future_timestamp",
    "too_old",
    "field_too_long",
)
# The contract's caps on free text that reaches a parser, in characters.
TEXT_LIMITS = {"url": 8192, "referrer": 8192, "user_agent": 1024}


@dataclass
class Payload:
    partition: int
    key: bytes | None
    value: bytes | None
    outcome: str  # a refusal reason, or "duplicate", "bot", "accepted"


def rfc3339(ms: int, offset_min: int = 0, fraction: bool = True) -> str:
    """``ms`` as an RFC 3339 date-time written at a UTC offset of ``offset_min``."""
    try:
        local = EPOCH + timedelta(milliseconds=ms + offset_min * MINUTE)
    except OverflowError:  # the local time would be outside years 1..9999: write it in UTC
        local, offset_min = EPOCH + timedelta(milliseconds=ms), 0
    sign = "+" if offset_min >= 0 else "-"
    zone = (
        "Z" if offset_min == 0 else f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    )
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    return text + (f".{local.microsecond // 1000:03d}" if fraction else "") + zone


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class Hostile:
    """Builds the payloads; each builder returns ``(value, expected outcome)``."""

    def __init__(self, rng: random.Random, now_ms: int) -> None:
        self.rng, self.now_ms = rng, now_ms
        self.serial = 0
        self.sent_valid: list[tuple[bytes, str]] = []

    # --- a valid event, and how to write its time ---------------------------------

    def when(self, ms: int) -> int | str:
        rng = self.rng
        if rng.random() < 0.5:
            return ms
        offset = rng.choice([0, 0, 60, -300, 330, 345, -570, 840, -(23 * 60 + 59), 23 * 60 + 59])
        return rfc3339(ms, offset, fraction=ms % 1000 != 0 or rng.random() < 0.5)

    def good(self, ms: int | None = None, agent: str | None = None) -> dict[str, Any]:
        rng = self.rng
        self.serial += 1
        kind = rng.choice(TYPES)
        event_time = rng.randint(OLDEST_VALID_MS + MINUTE, ANCHOR_MS) if ms is None else ms
        body: dict[str, Any] = {
            "event_id": f"h-{SEED}-{self.serial}",
            "type": kind,
            "timestamp": self.when(event_time),
        }
        who = rng.random()
        if who < 0.7:
            body["anonymous_id"] = f"anon-{rng.randrange(3000)}-ü"
        if who >= 0.5:
            body["user_id"] = f"user-{rng.randrange(1000)}"
        if kind in CAMPAIGN_TYPES:
            body["campaign_id"] = f"cmp-{rng.randrange(25)}"
        if rng.random() < 0.6:
            section = rng.choice(["sports", "news", "Économie", "tech", ""])
            body["url"] = f"https://site.example/{section}/{rng.randrange(99)}?utm_source=x"
        if rng.random() < 0.5:
            body["ip"] = rng.choice(
                ["203.0.113.77", "2001:db8:85a3::8a2e:370:7334", "::ffff:198.51.100.9", "junk"]
            )
        agent = agent if agent is not None else rng.choice([CHROME, FIREFOX, None])
        if agent is not None:
            body["user_agent"] = agent
        if kind == "conversion" and rng.random() < 0.8:
            body["revenue"] = rng.choice([0, 12.5, 1e15, rng.random() * 100])
        if rng.random() < 0.3:
            body["properties"] = {
                "n": rng.choice([2**63 - 1, -(2**63), 2**64 - 1, 0.1, None]),
                "nested": json.loads("[" * 50 + "]" * 50),
                "text": "\U0001d522\u00e9\u4e16 \u0000 \u2028",
            }
        if kind == "identify" and rng.random() < 0.5:
            body["traits"] = {"plan": rng.choice(["free", "pro"]), "age": rng.randrange(99)}
        return body

    def anchors(self) -> list[dict[str, Any]]:
        """Events at ANCHOR_MS whose ids fall on each partition of a topic keyed by event_id."""
        found: dict[int, dict[str, Any]] = {}
        while len(found) < PARTITIONS:
            body = self.good(ANCHOR_MS, CHROME)
            found.setdefault((murmur2(body["event_id"].encode()) & 0x7FFFFFFF) % PARTITIONS, body)
        return [found[q] for q in range(PARTITIONS)]

    def _valid(self, body: dict[str, Any], raw: bytes | None = None) -> tuple[bytes, str]:
        raw = raw if raw is not None else dumps(body)
        outcome = "bot" if body.get("user_agent") in (GOOGLEBOT, BINGBOT) else "accepted"
        self.sent_valid.append((raw, outcome))
        return raw, outcome

    # --- builders ---------------------------------------------------------------

    def accepted(self) -> tuple[bytes, str]:
        rng = self.rng
        choice = rng.random()
        if choice < 0.03:
            return self._valid(self.good(OLDEST_VALID_MS))  # the retention boundary, inclusive
        if choice < 0.06:
            body = self.good()
            body["event_id"] = "é" * 120 + f"{self.serial:08d}"  # 128 characters
            return self._valid(body)
        return self._valid(self.good())

    def bot(self) -> tuple[bytes, str]:
        return self._valid(self.good(agent=self.rng.choice([GOOGLEBOT, BINGBOT])))

    def duplicate(self) -> tuple[bytes, str]:
        raw, _ = self.rng.choice(self.sent_valid)
        return raw, "duplicate"

    def exactly_the_limit(self) -> tuple[bytes, str]:
        body = self.good(agent=CHROME)
        body["ad_id"] = ""  # free text that no parser reads: no cap but the event's size
        raw = dumps(body)
        raw = raw.replace(b'"ad_id":""', b'"ad_id":"' + b"r" * (LIMIT - len(raw)) + b'"')
        assert len(raw) == LIMIT
        return self._valid(body, raw)

    def too_large(self) -> tuple[bytes, str]:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5:
            body = self.good()
            body["referrer"] = ""
            raw = dumps(body)
            padding = b"r" * (LIMIT + 1 - len(raw))
            raw = raw.replace(b'"referrer":""', b'"referrer":"' + padding + b'"')
            assert len(raw) == LIMIT + 1
            return raw, "too_large"
        if choice < 0.8:
            return b"[" * 100_000 + b"]" * 100_000, "too_large"
        return bytes(rng.randrange(128, 256) for _ in range(LIMIT + 1)), "too_large"

    def malformed(self) -> tuple[bytes | None, str]:
        rng = self.rng
        raw = dumps(self.good())
        choice = rng.randrange(10)
        if choice == 0:
            return raw[: rng.randrange(len(raw))], "malformed_json"  # a proper prefix
        if choice == 1:
            at = rng.randrange(len(raw) + 1)
            junk = bytes([rng.choice([0xFF, 0xFE, 0xC0, 0xC1, 0x80, 0xBF, 0xF8])])
            return raw[:at] + junk + raw[at:], "malformed_json"  # never valid UTF-8
        if choice == 2:
            literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
            field = rng.choice([b'"timestamp":', b'"revenue":', b'"properties":{"x":'])
            body = self.good()
            body["campaign_id"] = "@"
            raw = dumps(body).replace(
                b'"campaign_id":"@"', field + literal + b"}" * field.count(b"{")
            )
            return raw, "malformed_json"
        if choice == 3:
            depth = rng.choice([1_001, 2_000, 5_000])
            return b"[" * depth + b"]" * depth, "malformed_json"
        if choice == 4:
            body = self.good()
            body["properties"] = {"deep": "@"}
            nested = b"[" * 1_500 + b"]" * 1_500
            return dumps(body).replace(b'"@"', nested), "malformed_json"
        if choice == 5:
            return raw + rng.choice([b"}", b" x", b",", b"{}", b"\x00"]), "malformed_json"
        if choice == 6:
            return rng.choice([b"", b" ", b"\n\t", None]), "malformed_json"
        if choice == 7:
            junk = bytearray(rng.randbytes(rng.randrange(1, 300)))
            junk[rng.randrange(len(junk))] = 0xFF
            return bytes(junk), "malformed_json"
        if choice == 8:
            body = self.good()
            body["anonymous_id"] = "@"
            bad = rng.choice([b"\\ud800", b"\\udfff", b"\\ud800x", b"\\x41", b"\\"])
            return dumps(body).replace(b'"@"', b'"a' + bad + b'"'), "malformed_json"
        return b"{" + raw[1:-1] + b",}", "malformed_json"  # a trailing comma

    def deeply_nested(self) -> tuple[bytes, str]:
        """Ten to thirty thousand levels, far past any recursion limit, within 64 KiB."""
        if self.rng.random() < 0.5:
            return b"[" * 30_000 + b"]" * 30_000, "malformed_json"
        return b'{"a":' * 10_000 + b"0" + b"}" * 10_000, "malformed_json"

    def not_an_object(self) -> tuple[bytes, str]:
        rng = self.rng
        value = rng.choice(
            [
                [self.good()],
                [],
                "event",
                "",
                0,
                -7,
                10**50,
                3.25,
                None,
                True,
                False,
                [[[1, 2], {"a": None}]],
            ]
        )
        return dumps(value), "not_an_object"

    def missing_field(self) -> tuple[bytes, str]:
        rng = self.rng
        body = self.good()
        choice = rng.randrange(5)
        if choice == 0:
            name = rng.choice(["event_id", "type", "timestamp"])
            if rng.random() < 0.5:
                del body[name]
            else:
                body[name] = None
        elif choice == 1:
            body["event_id"] = ""
        elif choice == 2:
            body.pop("user_id", None)
            body["anonymous_id"] = rng.choice(["", None])
        elif choice == 3:
            body["type"] = rng.choice(CAMPAIGN_TYPES)
            body["campaign_id"] = rng.choice(["", None])
        else:
            body = {}
        return dumps(body), "missing_field"

    def bad_type(self) -> tuple[bytes, str]:
        rng = self.rng
        body = self.good()
        choice = rng.randrange(5)
        if choice == 0:
            body[rng.choice(TEXT_FIELDS)] = rng.choice(WRONG_FOR_TEXT)
        elif choice == 1:
            body["revenue"] = rng.choice(["12.5", True, [], {}, -0.01, 1e15 + 1, 10**40])
        elif choice == 2:
            body[rng.choice(["properties", "traits"])] = rng.choice(["x", 1, [], True, [{}]])
        elif choice == 3:
            name = rng.choice(["event_id", "anonymous_id", "user_id", "campaign_id"])
            body[name] = "x" * rng.choice([129, 500, 5000])
        else:  # integers no 64-bit field holds, deep in a free-form object
            huge = rng.choice([2**64, -(2**63) - 1, 10**30, -(10**100)])
            body[rng.choice(["properties", "traits"])] = {"a": [1, {"b": huge}]}
        return dumps(body), "bad_type"

    def field_too_long(self) -> tuple[bytes, str]:
        rng = self.rng
        body = self.good()
        name = rng.choice(sorted(TEXT_LIMITS))
        length = TEXT_LIMITS[name] + rng.choice([1, 2, 100, 20_000])
        body[name] = rng.choice(["/", "é", "x"]) * length
        return dumps(body), "field_too_long"

    def unknown_type(self) -> tuple[bytes, str]:
        body = self.good()
        body["type"] = self.rng.choice(["purchase", "", "PAGE_VIEW", "click ", "pageview", "🖱"])
        return dumps(body), "unknown_type"

    def bad_timestamp(self) -> tuple[bytes, str]:
        body = self.good()
        body["timestamp"] = self.rng.choice(
            [
                1.6146e12,
                1_614_600_000_000.0,
                True,
                [T0],
                {"ms": T0},
                str(T0),
                "2021-03-01T12:00:00",
                "2021-03-01",
                "yesterday",
                "",
                "2021-02-29T00:00:00Z",
                "2021-03-01T24:00:00Z",
                "2021-03-01T12:00:00+24:00",
                "2021-03-01T12:00:00+0100",
                "0000-01-01T00:00:00Z",
                "10000-01-01T00:00:00Z",
                "9999-12-31T23:59:59-00:01",
                "0001-01-01T00:00:00+00:01",
                LAST_MS + 1,
                FIRST_MS - 1,
                2**63,
                10**30,
                -(10**30),
            ]
        )
        return dumps(body), "bad_timestamp"

    def future_timestamp(self) -> tuple[bytes, str]:
        rng = self.rng
        body = self.good()
        ahead = rng.choice([self.now_ms + rng.randint(3_600_000, 400 * DAY), LAST_MS])
        body["timestamp"] = rng.choice([ahead, rfc3339(ahead, rng.randrange(-600, 600))])
        if rng.random() < 0.1:
            body["timestamp"] = "9999-12-31T23:59:59Z"
        return dumps(body), "future_timestamp"

    def too_old(self) -> tuple[bytes, str]:
        rng = self.rng
        body = self.good()
        old = rng.choice(
            [OLDEST_VALID_MS - 1, 0, -1, FIRST_MS, rng.randint(FIRST_MS, OLDEST_VALID_MS - 1)]
        )
        body["timestamp"] = self.when(old)
        return dumps(body), "too_old"


def generate(seed: int, total: int, now_ms: int) -> list[Payload]:
    """``total`` payloads: anchors first (one per partition), then the hostile mix."""
    rng = random.Random(seed)
    hostile = Hostile(rng, now_ms)
    payloads = [
        Payload(p, None, *hostile._valid(anchor))
        for p in range(PARTITIONS)
        for anchor in hostile.anchors()
    ]
    # Rare, large payloads at fixed counts (they cost bytes, not variety).
    large: list[Callable[[], tuple[bytes | None, str]]] = [hostile.exactly_the_limit] * 30
    large += [hostile.too_large] * 60 + [hostile.deeply_nested] * 30
    kinds: list[tuple[Callable[[], tuple[bytes | None, str]], float]] = [
        (hostile.accepted, 0.21),
        (hostile.bot, 0.03),
        (hostile.duplicate, 0.05),
        (hostile.malformed, 0.10),
        (hostile.not_an_object, 0.07),
        (hostile.missing_field, 0.09),
        (hostile.bad_type, 0.12),
        (hostile.unknown_type, 0.06),
        (hostile.field_too_long, 0.03),
        (hostile.bad_timestamp, 0.10),
        (hostile.future_timestamp, 0.07),
        (hostile.too_old, 0.10),
    ]
    builders, weights = zip(*kinds, strict=True)
    picks = rng.choices(builders, weights, k=total - len(payloads) - len(large)) + large
    rng.shuffle(picks)
    for build in picks:
        value, outcome = build()
        key = rng.choice([None, b"k", rng.randbytes(rng.randrange(1, 24))])
        payloads.append(Payload(rng.randrange(PARTITIONS), key, value, outcome))
    return payloads


async def _produce(bootstrap: str, topic: str, payloads: list[Payload]) -> list[tuple[int, int]]:
    """Send in aiokafka batches, one open per partition; return each (partition, offset)."""
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        request_timeout_ms=120_000,
    )
    await producer.start()
    sent: list[tuple[asyncio.Future[Any], int, list[int]]] = []
    try:

        async def flush(partition: int) -> None:
            batch, members = open_batches.pop(partition)
            batch.close()
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append((future, partition, members))

        open_batches: dict[int, tuple[Any, list[int]]] = {}
        for index, payload in enumerate(payloads):
            for attempt in range(2):
                if payload.partition not in open_batches:
                    open_batches[payload.partition] = (producer.create_batch(), [])
                batch, members = open_batches[payload.partition]
                if batch.append(key=payload.key, value=payload.value, timestamp=None) is not None:
                    members.append(index)
                    break
                assert attempt == 0 and members, f"payload {index} does not fit a batch"
                await flush(payload.partition)
            if index == ANCHORS - 1:  # the anchors are on the broker before the rest
                for partition in list(open_batches):
                    await flush(partition)
                await asyncio.gather(*(future for future, _, _ in sent))
        for partition in list(open_batches):
            await flush(partition)
        metas = await asyncio.gather(*(future for future, _, _ in sent))
    finally:
        await producer.stop()
    positions: list[tuple[int, int]] = [(-1, -1)] * len(payloads)
    for meta, (_, partition, members) in zip(metas, sent, strict=True):
        for i, index in enumerate(members):
            positions[index] = (partition, meta.offset + i)
    return positions


def test_generator_is_deterministic_and_covers_every_outcome() -> None:
    now = 1_700_000_000_000
    first, again = generate(SEED, 3_000, now), generate(SEED, 3_000, now)
    assert [(p.partition, p.key, p.value, p.outcome) for p in first] == [
        (p.partition, p.key, p.value, p.outcome) for p in again
    ]
    assert set(Counter(p.outcome for p in first)) == {*INVALID, "duplicate", "bot", "accepted"}
    sizes = Counter(len(p.value or b"") for p in first)
    assert sizes[LIMIT] >= 30 and sizes[LIMIT + 1] >= 1


def test_a_hundred_thousand_hostile_payloads_are_each_accounted_for(
    make_worker: WorkerFactory,
) -> None:
    worker = make_worker().start()
    started = time.monotonic()
    payloads = generate(SEED, TOTAL, int(time.time() * 1000))
    expected = Counter(p.outcome for p in payloads)
    generated = time.monotonic()
    topic = f"{worker.prefix}.events.raw"
    positions = asyncio.run(_produce(worker.bootstrap, topic, payloads))
    produced = time.monotonic()

    def counts() -> dict[str, float]:
        samples = metrics(worker.url)
        return {
            "received": samples.get('dmp_events_received_total{source="kafka"}', 0),
            **{
                reason: samples.get(f'dmp_events_invalid_total{{reason="{reason}"}}', 0)
                for reason in INVALID
            },
            "duplicate": samples.get("dmp_events_duplicate_total", 0),
            "bot": samples.get("dmp_events_bot_total", 0),
            "accepted": samples.get("dmp_events_accepted_total", 0),
        }

    def settled() -> dict[str, float] | None:
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        now = counts()
        done = sum(v for k, v in now.items() if k != "received")
        return now if now["received"] == TOTAL and done == TOTAL else None

    try:
        final = wait_until(settled, 300, "every payload to be accounted for", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nexpected {dict(expected)}\n{worker.tail(20)}") from None
    processed = time.monotonic()
    assert final == {"received": TOTAL, **{k: expected[k] for k in final if k != "received"}}

    refused = {positions[i]: p for i, p in enumerate(payloads) if p.outcome in INVALID}
    letters = consume(
        worker.bootstrap,
        f"{worker.prefix}.events.dlq",
        lambda got: len(got) >= len(refused),
        timeout=120,
    )
    seen: set[tuple[int, int]] = set()
    for record in letters:
        letter = json.loads(record.value)
        source = letter["source"]
        assert source["topic"] == topic
        where = (source["partition"], source["offset"])
        assert where in refused and where not in seen, f"unexpected dead letter {where}"
        seen.add(where)
        payload = refused[where]
        assert letter["reason"] == payload.outcome, (letter["detail"], (payload.value or b"")[:200])
        assert base64.b64decode(letter["raw"]) == (payload.value or b"")
        assert record.key == payload.key and letter["detail"]
    assert seen == set(refused)
    assert worker.process is not None and worker.process.poll() is None
    assert not worker.crashes()
    timing = (
        f"generate {generated - started:.1f} s, produce {produced - generated:.1f} s, "
        f"process {processed - produced:.1f} s, "
        f"read the DLQ {time.monotonic() - processed:.1f} s"
    )
    print(f"hostile: {TOTAL} payloads, {dict(expected)}; {timing}")
