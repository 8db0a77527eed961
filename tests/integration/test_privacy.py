"""Whole IP addresses and the API token: where they may be, and everywhere they must not.

One worker with ``DMP_API_TOKEN`` set and the most verbose log level gets
events carrying whole IPv4 and IPv6 addresses over Kafka and over
``POST /collect``, valid and invalid ones, and every route is called with
and without the token. Then: no response (status line, headers, body) and
no line of the worker's log holds a whole address or the token; the clean
topic holds only the truncated addresses (IPv4 /24, IPv6 /48); the
dead-letter topic does hold the raw bytes, whole addresses included, as the
contract says (docs/SECURITY.md: restrict who reads it).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import uuid

import pytest

from tests.integration.conftest import WorkerFactory
from tests.integration.events import T0, encode, event
from tests.integration.support import Worker, consume, produce, wait_until

pytestmark = pytest.mark.integration

TOKEN = f"tok-{uuid.uuid4().hex}"
KAFKA_IPS = [
    "198.51.100.213",
    "2001:db8:85a3:8d3:1319:8a2e:370:7348",
    "::ffff:192.0.2.148",  # IPv4-mapped: the IPv4 address inside is whole too
    "2001:DB8:ABCD:12::1",
]
HTTP_IPS = ["203.0.113.199", "2001:db8:1234:5678:9abc:def0:1234:5678"]
DLQ_IPS = ["192.0.2.77", "192.0.2.78", "203.0.113.200"]


def whole_forms(ip: str) -> set[str]:
    """Every spelling of ``ip`` that would give the whole address away."""
    address = ipaddress.ip_address(ip)
    forms = {ip, ip.lower(), address.compressed, address.exploded}
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.add(str(address.ipv4_mapped))
    return forms


FORBIDDEN = sorted({form for ip in KAFKA_IPS + HTTP_IPS + DLQ_IPS for form in whole_forms(ip)})


def truncated(ip: str) -> str:
    """The contract's truncation, computed here independently of the project."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def exchange(
    worker: Worker, method: str, path: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, str]:
    """(status, the whole response as text: status line, headers and body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = f"{response.status} {response.reason}\n{response.msg}\n"
        return response.status, text + response.read().decode(errors="replace")
    finally:
        conn.close()


def leaks(text: str) -> list[str]:
    return [secret for secret in [TOKEN, *FORBIDDEN] if secret in text]


def test_no_whole_ip_or_token_leaves_the_worker_but_by_the_dlq(
    kafka: str, make_worker: WorkerFactory
) -> None:
    worker = make_worker(DMP_API_TOKEN=TOKEN, DMP_LOG_LEVEL="debug").start()
    raw, clean, dlq = (f"{worker.prefix}.events.{name}" for name in ("raw", "clean", "dlq"))
    kafka_events = [
        event("impression", T0 + i, f"anon-p{i}", "cmp-priv", ip=ip)
        for i, ip in enumerate(KAFKA_IPS)
    ]
    refused = [
        encode({"event_id": "no-ts", "type": "click", "anonymous_id": "a", "ip": DLQ_IPS[0]}),
        b'{"event_id": "broken", "ip": "' + DLQ_IPS[1].encode() + b'", ',
    ]
    produce(
        kafka, raw, [(None, encode(body)) for body in kafka_events] + [(None, r) for r in refused]
    )
    http_events = [
        event("click", T0 + 10 + i, f"anon-h{i}", "cmp-priv", ip=ip)
        for i, ip in enumerate(HTTP_IPS)
    ]
    http_refused = {"event_id": "h-bad", "type": "click", "anonymous_id": "b", "ip": DLQ_IPS[2]}
    batch = json.dumps({"batch": [*http_events, http_refused]}).encode()
    responses = [exchange(worker, "POST", "/collect", batch)]
    assert responses[0][0] == 202, responses[0][1]
    assert '"accepted":2' in responses[0][1]

    clean_records = consume(kafka, clean, lambda got: len(got) >= 6)
    dlq_records = consume(kafka, dlq, lambda got: len(got) >= 2)

    def profiles_built() -> bool:
        ids = [f"anon-p{i}" for i in range(len(KAFKA_IPS))] + ["anon-h0"]
        return all(exchange(worker, "GET", f"/profiles/{i}", token=TOKEN)[0] == 200 for i in ids)

    wait_until(profiles_built, 60, "the profiles")

    personal = ["/profiles/anon-p1", "/frequency/anon-p1/cmp-priv", "/profiles/anon-h0"]
    for path in personal:
        for token in (None, "wrong-" + TOKEN[:8], TOKEN.upper()):
            status, text = exchange(worker, "GET", path, token=token)
            assert status == 401, (path, token, text)
            responses.append((status, text))
        responses.append(exchange(worker, "GET", path, token=TOKEN))
        assert responses[-1][0] == 200, responses[-1][1]
    status, text = exchange(worker, "DELETE", "/profiles/anon-p2")
    assert status == 401, text
    responses += [(status, text), exchange(worker, "DELETE", "/profiles/anon-p2", token=TOKEN)]
    assert responses[-1][0] == 202, responses[-1][1]
    for path in ("/campaigns/cmp-priv/stats", "/segments", "/segments/clickers", "/health"):
        responses.append(exchange(worker, "GET", path))
        assert responses[-1][0] == 200, (path, responses[-1][1])
    responses.append(exchange(worker, "GET", "/metrics"))
    assert "dmp_events_accepted_total 6.0" in responses[-1][1]

    assert [leaks(text) for _, text in responses] == [[]] * len(responses)

    ips = {json.loads(r.value)["event_id"]: json.loads(r.value).get("ip") for r in clean_records}
    assert ips == {body["event_id"]: truncated(body["ip"]) for body in kafka_events + http_events}
    assert not [r.value for r in clean_records if leaks(r.value.decode())]

    dead = [base64.b64decode(json.loads(r.value)["raw"]) for r in dlq_records]
    assert {DLQ_IPS[0].encode() in raw or DLQ_IPS[1].encode() in raw for raw in dead} == {True}

    worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "[DEBUG]" in log, "the log level was not the most verbose"
    assert leaks(log) == []
