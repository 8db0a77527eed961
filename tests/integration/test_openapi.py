"""The HTTP interface against its OpenAPI document (``dmp_faust/openapi.yaml``), on a live worker.

Schemathesis generates requests for every route from the document, valid ones
and invalid ones: no answer may be a 5xx, and every answer must be one the
document lists, with its content type and body schema. The personal-data
routes are called with and without the bearer token. Then, by hand, what a
generator does not reach: bodies over each size limit, and bodies that never
finish arriving.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.events import T0, event
from tests.integration.support import PROJECT, Worker, call

pytestmark = pytest.mark.integration

SCHEMA_PATH = PROJECT / "dmp_faust" / "openapi.yaml"
TOKEN = f"token-{uuid.uuid4().hex}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY_TIMEOUT_S = 30  # dmp_faust.collect._READ_TIMEOUT_S: no setting lowers it (yet)
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def api_worker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker of its own, with DMP_API_TOKEN set, so the 401s can be checked."""
    root = tmp_path_factory.mktemp("openapi")
    prefix = f"api{uuid.uuid4().hex[:8]}"
    worker = Worker(kafka, prefix, root / prefix, env={"DMP_API_TOKEN": TOKEN}).start()
    yield worker
    worker.stop()
    assert not worker.crashes()


# --- slow bodies: started first, checked last, so their 30 s overlap the other tests ----


class StalledBody:
    """A POST /collect whose body stops arriving (or trickles forever) after its headers."""

    def __init__(self, port: int, head: bytes, first: bytes, trickle: bytes | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(head + first)
        self.started = time.monotonic()
        self.stop = threading.Event()
        if trickle is not None:
            threading.Thread(target=self._trickle, args=(trickle,), daemon=True).start()

    def _trickle(self, piece: bytes) -> None:
        while not self.stop.wait(0.5):
            try:
                self.sock.sendall(piece)
            except OSError:
                return

    def answer(self, deadline: float) -> tuple[bytes, float]:
        """The status line the server sent, and when (seconds after the headers)."""
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            data = b""
        elapsed = time.monotonic() - self.started
        self.stop.set()
        self.sock.close()
        return data.split(b"\r\n", 1)[0], elapsed


def _head(port: int, framing: str) -> bytes:
    return (
        f"POST /collect HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def stalled(api_worker: Worker) -> dict[str, StalledBody]:
    port = api_worker.port
    chunked = _head(port, "Transfer-Encoding: chunked")
    return {
        "content-length, stops": StalledBody(
            port, _head(port, "Content-Length: 1000"), b'{"batch": [', None
        ),
        "chunked, stops": StalledBody(port, chunked, b"5\r\n[1, 2\r\n", None),
        "chunked, trickles": StalledBody(port, chunked, b"1\r\n[\r\n", b"2\r\n0,\r\n"),
        "content-length, trickles": StalledBody(
            port, _head(port, f"Content-Length: {MiB}"), b"[", b" "
        ),
    }


def test_slow_bodies_are_started(stalled: dict[str, StalledBody]) -> None:
    """Opens the stalled requests (checked at the end of the module); none is answered yet."""
    for name, body in stalled.items():
        body.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            assert not body.sock.recv(1), name


# --- the document ---------------------------------------------------------------------


def test_document_names_every_contract_route_and_ships_with_the_package() -> None:
    document = yaml.safe_load(SCHEMA_PATH.read_text())
    assert document["openapi"].startswith("3.")
    routes = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    routes -= {(m, p) for m, p in routes if m == "PARAMETERS"}
    assert routes == {
        ("POST", "/collect"),
        ("GET", "/campaigns/{campaign_id}/stats"),
        ("GET", "/history/campaigns/{campaign_id}"),
        ("GET", "/alerts"),
        ("GET", "/profiles/{profile_id}"),
        ("DELETE", "/profiles/{profile_id}"),
        ("GET", "/erasures/{erasure_id}"),
        ("GET", "/segments"),
        ("GET", "/segments/{segment_id}"),
        ("GET", "/frequency/{profile_id}/{campaign_id}"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/static/{name}"),
        ("GET", "/dashboard/summary"),
    }
    secured = {
        (m.upper(), p)
        for p, ops in document["paths"].items()
        for m, op in ops.items()
        if isinstance(op, dict) and op.get("security")
    }
    assert secured == {
        ("GET", "/profiles/{profile_id}"),
        ("DELETE", "/profiles/{profile_id}"),
        ("GET", "/erasures/{erasure_id}"),
        ("GET", "/frequency/{profile_id}/{campaign_id}"),
    }
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert "openapi.yaml" in pyproject["tool"]["setuptools"]["package-data"]["dmp_faust"]


# --- generated requests -------------------------------------------------------------

# Loaded eagerly: the worker's URL is given at call time. (``schemathesis.pytest.from_fixture``
# would take it from a fixture, but its lazy path fails on pytest 9: no ``Function._nodeid``.)
schema = schemathesis.openapi.from_path(SCHEMA_PATH)
schema.config.update(request_timeout=40)
# The token is added (or not) by the test itself, not generated from the security scheme.
schema.config.generation.update(with_security_parameters=False)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_in_the_document_and_none_is_a_5xx(case: Any, api_worker: Worker) -> None:
    # Some generated cases send another method on purpose (to see a 405): no token check then.
    same_method = case.method.upper() == case.operation.method.upper()
    if same_method and case.operation.definition.raw.get("security"):
        anonymous = case.call(base_url=api_worker.url)
        assert anonymous.status_code == 401, anonymous.text
        assert json.loads(anonymous.text)["error"] == "unauthorized"
    case.call_and_validate(base_url=api_worker.url, headers=AUTH, checks=CHECKS)


# --- edges a generator does not reach ---------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "?from=9999-12-31T23:30:00Z&to=9999-12-31T23:59:59Z",
        "?from=253402300799999",
        "?to=-62135596800000",
        "?from=0001-01-01T00:00:00Z",
        "?from=-62135596800000&to=-62135596740000",
        "?from=9999-12-31T23:58:00Z&to=9999-12-31T23:59:00Z",
    ],
)
def test_stats_at_the_edges_of_time_are_answered_not_a_500(api_worker: Worker, query: str) -> None:
    status, body = call("GET", f"{api_worker.url}/campaigns/c/stats{query}")
    assert status in (200, 400), body
    if status == 400:
        assert body["error"] == "bad_parameter" and body["detail"]
    else:
        assert len(body["windows"]) >= 1


@pytest.mark.parametrize(
    "path",
    [
        "/profiles/%ED%A0%80",
        "/profiles/%FF%FE",
        "/profiles/%00",
        "/frequency/%ED%A0%80/%FF",
        "/campaigns/%C0%AF/stats",
        "/segments/%ED%B2%80",
        "/profiles/" + quote("é" * 1200, safe=""),
    ],
)
def test_odd_ids_in_paths_are_answered_not_a_500(api_worker: Worker, path: str) -> None:
    for method in ("GET", "DELETE") if path.startswith("/profiles") else ("GET",):
        status, body = call(method, api_worker.url + path, headers=AUTH)
        assert status < 500, (method, status, body)
        assert isinstance(body, dict) and ("error" in body or status in (200, 202)), (method, body)
        if status == 202:  # an erasure of an id with no data: it is recorded, and ends
            assert body["status"] == "erasing", body


def test_a_request_line_over_8_kib_is_a_4xx(api_worker: Worker) -> None:
    """aiohttp refuses it before any handler (so its answer is plain text, not JSON)."""
    status, _ = call("GET", api_worker.url + "/profiles/" + "x" * 9000, headers=AUTH)
    assert 400 <= status < 500


def _post_raw(port: int, head: bytes, body: bytes) -> bytes:
    """Send a request however early the server answers; return its status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for start in range(0, len(body), 256 * 1024):
                sock.sendall(body[start : start + 256 * 1024])
        except OSError:
            pass  # the server may answer and close before the body is all sent
        response = b""
        while b"\r\n" not in response:
            piece = sock.recv(4096)
            if not piece:
                break
            response += piece
    return response.split(b"\r\n", 1)[0]


def _batch(n: int, pad: int = 0) -> bytes:
    events = [
        {**event("page_view", T0, f"lim-{i}"), "properties": {"pad": "p" * pad}} for i in range(n)
    ]
    return json.dumps({"batch": events}).encode()


def test_bodies_over_each_limit_get_413_and_those_at_it_do_not(api_worker: Worker) -> None:
    port, url = api_worker.port, api_worker.url + "/collect"
    over_4mib = b" " * (4 * MiB + 1 - 2) + b"{}"
    declared = _head(port, f"Content-Length: {len(over_4mib)}")
    assert b" 413 " in _post_raw(port, declared, over_4mib)
    chunked_body = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (over_4mib[i : i + 65536] for i in range(0, len(over_4mib), 65536))
    )
    chunked = _head(port, "Transfer-Encoding: chunked")
    assert b" 413 " in _post_raw(port, chunked, chunked_body + b"0\r\n\r\n")

    big = {**event("page_view", T0, "big"), "properties": {"pad": ""}}
    size = len(json.dumps(big).encode())
    big["properties"]["pad"] = "x" * (64 * 1024 - size)
    assert len(json.dumps(big).encode()) == 64 * 1024
    status, answer = call("POST", url, json.dumps(big).encode())
    assert status == 202 and answer["accepted"] == 1
    big["properties"]["pad"] += "x"
    status, answer = call("POST", url, json.dumps(big).encode())
    assert status == 413 and answer["error"] == "too_large"

    status, answer = call("POST", url, _batch(501))
    assert status == 413 and answer["error"] == "too_large"
    at_limit = _batch(500, pad=8_000)  # 500 events in just under 4 MiB
    assert len(at_limit) < 4 * MiB
    status, answer = call("POST", url, at_limit)
    assert status == 202 and answer == {"accepted": 500, "errors": []}


def test_slow_bodies_are_cut_off(api_worker: Worker, stalled: dict[str, StalledBody]) -> None:
    deadline = min(body.started for body in stalled.values()) + BODY_TIMEOUT_S + 20
    for name, body in stalled.items():
        status_line, elapsed = body.answer(deadline)
        assert status_line.startswith(b"HTTP/1.1 408"), (name, status_line, elapsed)
        assert BODY_TIMEOUT_S - 1 <= elapsed <= BODY_TIMEOUT_S + 20, (name, elapsed)
    assert api_worker.process is not None and api_worker.process.poll() is None
    assert call("GET", api_worker.url + "/health")[0] == 200
