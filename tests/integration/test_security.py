"""What a worker serves over HTTP, and Kafka security end to end.

HTTP: every route the running worker registers (it logs its route table when
its web server starts) is either one this project means to serve, with the
protection listed in :data:`MEANT`, or answers 404. A route a dependency
adds (Faust's ``/table/`` and ``/router/`` pages were such routes) fails here.

Kafka: the module starts its own broker (the project's ``kafka_local``) with a
PLAINTEXT listener, which only the broker itself uses, and three more:
SASL_PLAINTEXT and SASL_SSL (mechanism PLAIN) and SSL, with a certificate
for 127.0.0.1 signed by a throw-away CA made with ``openssl``. A client is
only ever given one of the secured listeners, and the broker answers its
metadata with that listener's address, so every connection the client
opens (bootstrap, partition leaders, group coordinator) goes through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dmp_faust import kafka_local
from dmp_faust.provision import ProvisionError, TopicSpec, ensure_topics
from dmp_faust.settings import Settings
from tests.integration.conftest import WorkerFactory
from tests.integration.events import T0, encode, event
from tests.integration.support import PROJECT, Worker, call, free_port, metrics, wait_until

pytestmark = pytest.mark.integration

USER, PASSWORD = "dmp-worker", "pw-7Hq2-sasl-secret"
WRONG_PASSWORD = "pw-wrong-9Zx"
TLS_LISTENERS = ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class SecureBroker:
    ports: dict[str, int]
    ca_file: Path

    def env(self, listener: str, password: str = PASSWORD) -> dict[str, str]:
        """The ``DMP_KAFKA_*`` variables of a client of ``listener`` only."""
        env = {
            "DMP_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports[listener]}",
            "DMP_KAFKA_SECURITY_PROTOCOL": listener,
        }
        if listener.startswith("SASL_"):
            env |= {"DMP_KAFKA_SASL_USERNAME": USER, "DMP_KAFKA_SASL_PASSWORD": password}
        if listener in TLS_LISTENERS:
            env["DMP_KAFKA_SSL_CAFILE"] = str(self.ca_file)
        if listener == "SSL":  # the SSL listener also wants a client certificate (mTLS)
            env["DMP_KAFKA_SSL_CERTFILE"] = str(self.ca_file.with_name("client.pem"))
            env["DMP_KAFKA_SSL_KEYFILE"] = str(self.ca_file.with_name("client.key"))
        return env


def _tls_files(folder: Path) -> tuple[Path, Path]:
    """A throw-away CA, and the broker's PEM key store (key + certificate for 127.0.0.1)."""
    folder.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ("-newkey", "rsa:2048", "-nodes", "-days", "2")
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test CA")
    openssl("req", *key[:3], "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=broker")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "broker.pem",
    )  # fmt: skip
    store = folder / "keystore.pem"
    store.write_text((folder / "broker.key").read_text() + (folder / "broker.pem").read_text())
    openssl("req", *key[:3], "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=dmp")
    openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "client.pem",
    )  # fmt: skip
    return folder / "ca.pem", store


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the TLS listener's certificate")
    root = tmp_path_factory.mktemp("secure-kafka")
    ca_file, key_store = _tls_files(root / "tls")
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{USER}" password="{PASSWORD}" user_{USER}="{PASSWORD}";'
    )
    listeners = {name: free_port() for name in ("SASL_PLAINTEXT", "SSL", "SASL_SSL")}
    properties = {
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(key_store),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.ssl.ssl.truststore.type": "PEM",
        "listener.name.ssl.ssl.truststore.location": str(ca_file),
    }
    data_dir = root / "kafka"
    kafka_local.start(
        free_port(),
        data_dir,
        controller_port=free_port(),
        listeners=listeners,
        properties=properties,
    )
    try:
        yield SecureBroker(listeners, ca_file)
    finally:
        kafka_local.stop(data_dir)


# --- clients with the settings' security ---------------------------------------


def _round_trip(env: dict[str, str], topic: str, values: list[bytes]) -> list[bytes]:
    """Produce ``values`` to ``topic`` and read them back, both with ``env``'s security."""
    settings = Settings.from_env(env)

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_auth()
        )
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        return [record.value for record in await _read(settings, topic, len(values))]

    return asyncio.run(run())


async def _read(settings: Settings, topic: str, count: int, timeout: float = 60) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **settings.kafka_auth(),
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count:
            assert time.monotonic() < deadline, f"{len(records)} of {count} records read"
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def _produce(env: dict[str, str], topic: str, values: list[bytes]) -> None:
    settings = Settings.from_env(env)

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_auth()
        )
        await producer.start()
        try:
            for value in values:
                await producer.send(topic, value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


# --- the routes a worker serves ---------------------------------------------------

API_TOKEN = "tok-routes-5Ux"
OPEN, NEEDS_TOKEN = "open", "token"
# Every route a worker is meant to serve, and who may call it. /erasures is listed
# for when it exists: only the routes a worker actually registers are probed.
MEANT = {
    ("POST", "/collect"): OPEN,
    ("GET", "/health"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("GET", "/campaigns/{campaign_id}/stats"): OPEN,
    ("GET", "/segments"): OPEN,
    ("GET", "/alerts"): OPEN,
    ("GET", "/history/campaigns/{campaign_id}"): OPEN,
    ("GET", "/segments/{segment_id}"): OPEN,
    ("GET", "/profiles/{profile_id}"): NEEDS_TOKEN,
    ("DELETE", "/profiles/{profile_id}"): NEEDS_TOKEN,
    ("GET", "/frequency/{profile_id}/{campaign_id}"): NEEDS_TOKEN,
    ("GET", "/erasures/{erasure_id}"): NEEDS_TOKEN,
    # the dashboard: aggregates only, no personal data
    ("GET", "/"): OPEN,
    ("GET", "/static/{name}"): OPEN,
    ("GET", "/dashboard/summary"): OPEN,
}
SAMPLES = {
    "profile_id": "user-sec-1",
    "campaign_id": "cmp-sec",
    "segment_id": "engaged",
    "name": "dashboard.js",
}
# Faust's own pages (faust-streaming 0.15): all must be gone (/ is the dashboard now).
FAUST_PAGES = [
    "/table/",
    "/table/profiles/",
    "/table/profiles/user-sec-1/",
    "/table/profiles/anon-sec-1/",
    "/router/",
    "/router/topics",
    "/router/profiles/",
    "/router/profiles/user-sec-1/",
    "/stats/",
    "/assignment/",
    "/graph/",
    "/performance/",
]


def served_routes(worker: Worker) -> set[tuple[str, str]]:
    """(method, route) of every route the worker's web server registered, from its log."""
    text = worker.log_path.read_text(errors="replace")
    found = re.findall(r"serving HTTP routes: (.*)$", text, re.MULTILINE)
    assert found, "the worker did not log its routes"
    pairs = (route.split(" ", 1) for route in found[-1].strip().split(", "))
    return {(method, path) for method, path in pairs}


def _status(worker: Worker, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return call(method, worker.url + path, headers=headers)[0]


def _protection(method: str, route: str) -> str | None:
    """How (method, route) is meant to be protected; None: not meant to be served.
    HEAD, which Faust adds to every view, is as protected as the view's GET."""
    meant = MEANT.get((method, route))
    if meant is None and method == "HEAD":
        meant = MEANT.get(("GET", route))
    return meant


def test_every_route_a_worker_serves_is_meant_and_guarded(make_worker: WorkerFactory) -> None:
    worker = make_worker(DMP_API_TOKEN=API_TOKEN).start()
    link = event("identify", T0, "anon-sec-1", user_id="user-sec-1")
    headers = {"Content-Type": "application/json"}
    assert call("POST", worker.url + "/collect", encode(link), headers)[0] == 202
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    wait_until(
        lambda: call("GET", worker.url + "/profiles/anon-sec-1", headers=auth)[0] == 200,
        60,
        "the profile, so that a route leaking it has something to leak",
    )
    routes = served_routes(worker)
    assert ("GET", "/health") in routes and ("GET", "/profiles/{profile_id}") in routes
    unmeant = []
    # DELETE last: it erases the profile the other routes could leak.
    for method, route in sorted(routes, key=lambda r: (r[0] == "DELETE", r)):
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLES.get(m.group(1), "probe"), route)
        protection = _protection(method, route)
        if protection is None:
            # Not meant: it must not answer anything. HEAD of a view without GET: 405.
            allowed = {404, 405} if method == "HEAD" else {404}
            statuses = {_status(worker, method, path, token) for token in (None, API_TOKEN)}
            if not statuses <= allowed:
                unmeant.append(f"{method} {route} answers {sorted(statuses)}")
        elif protection == NEEDS_TOKEN:
            for token in (None, "wrong-token", API_TOKEN.upper()):
                assert _status(worker, method, path, token) == 401, (method, route, token)
            assert _status(worker, method, path, API_TOKEN) != 401, (method, route)
        else:
            status = _status(worker, method, path, None)
            assert status != 401 and status < 500, (method, route, status)
    assert not unmeant, "routes served that are not meant to be: " + "; ".join(unmeant)
    for path in FAUST_PAGES:
        for token in (None, API_TOKEN):
            status, body = call("GET", worker.url + path, headers=auth if token else {})
            assert status == 404, (path, token, body)
            assert "anon-sec-1" not in json.dumps(body)


# --- Kafka security --------------------------------------------------------------


def test_worker_runs_end_to_end_over_sasl_only(secure_kafka: SecureBroker, tmp_path: Path) -> None:
    """Provisioning, Faust's consumer, producer and changelogs, /collect: all over SASL."""
    env = {**secure_kafka.env("SASL_PLAINTEXT"), "DMP_LOG_LEVEL": "debug"}
    prefix = f"sec{uuid.uuid4().hex[:6]}"
    worker = Worker(env["DMP_KAFKA_BOOTSTRAP"], prefix, tmp_path / "worker", env=env)
    try:
        worker.start()
        kafka_events = [event("impression", T0 + i, f"anon-{i}", "cmp-sasl") for i in range(5)]
        _produce(env, f"{prefix}.events.raw", [encode(body) for body in kafka_events])
        http_event = event("click", T0 + 10, "anon-1", "cmp-sasl")
        status, body = call(
            "POST",
            worker.url + "/collect",
            encode(http_event),
            {"Content-Type": "application/json"},
        )
        assert (status, body) == (202, {"accepted": 1, "errors": []})

        def totals() -> Any:
            status, body = call("GET", f"{worker.url}/campaigns/cmp-sasl/stats?from={T0}")
            assert status == 200, body
            counts = body["totals"]["impressions"], body["totals"]["clicks"]
            return body["totals"] if counts == (5, 1) else None

        done = wait_until(totals, 90, "the events to reach the campaign statistics")
        assert done["unique_users"] == 5
        assert metrics(worker.url)["dmp_events_accepted_total"] == 6

        def profile() -> Any:
            status, body = call("GET", worker.url + "/profiles/anon-1")
            return body if status == 200 and body["counts"].get("click") else None

        assert wait_until(profile, 60, "the profile")["counts"] == {"impression": 1, "click": 1}
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert PASSWORD not in log
    assert not worker.crashes()


def test_wrong_password_stops_the_worker_with_a_clear_error(
    secure_kafka: SecureBroker, tmp_path: Path
) -> None:
    env = {**secure_kafka.env("SASL_PLAINTEXT", WRONG_PASSWORD), "DMP_TOPIC_PREFIX": "wrongpw"}
    env |= {"DMP_DATA_DIR": str(tmp_path), "DMP_WEB_PORT": str(free_port())}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dmp_faust.cli", "worker"],
        cwd=PROJECT,
        env={**_inherited(), **env},
        capture_output=True,
        text=True,
        timeout=90,
    )
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dmp-faust worker: cannot connect to Kafka"), done.stderr
    assert "SASL PLAIN as user 'dmp-worker'" in last
    assert "Authentication failed" in last
    assert WRONG_PASSWORD not in done.stderr + done.stdout
    assert took < 60, f"took {took:.0f} s"


@pytest.mark.parametrize("listener", TLS_LISTENERS)
def test_tls_listeners_provision_produce_and_consume(
    secure_kafka: SecureBroker, listener: str
) -> None:
    """What the worker's provisioning and the generator do, over TLS (and SASL on TLS)."""
    env = secure_kafka.env(listener)
    topic = f"tls-{listener.lower()}-{uuid.uuid4().hex[:6]}"
    settings = Settings.from_env(env)
    ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 2)], 30, settings.kafka_auth())
    values = [f"v{i}".encode() for i in range(4)]
    assert sorted(_round_trip(env, topic, values)) == values


def test_tls_refuses_a_broker_its_ca_does_not_vouch_for(secure_kafka: SecureBroker) -> None:
    env = secure_kafka.env("SASL_SSL")
    del env["DMP_KAFKA_SSL_CAFILE"]  # the system CAs do not know the test CA
    settings = Settings.from_env(env)
    with pytest.raises(ProvisionError, match="CERTIFICATE_VERIFY_FAILED"):
        ensure_topics(settings.kafka_bootstrap, [TopicSpec("never", 1)], 10, settings.kafka_auth())


def test_mtls_listener_refuses_a_client_without_certificate(secure_kafka: SecureBroker) -> None:
    env = secure_kafka.env("SSL")
    del env["DMP_KAFKA_SSL_CERTFILE"], env["DMP_KAFKA_SSL_KEYFILE"]
    settings = Settings.from_env(env)
    with pytest.raises(ProvisionError, match="cannot connect to Kafka"):
        ensure_topics(settings.kafka_bootstrap, [TopicSpec("never", 1)], 10, settings.kafka_auth())


def _inherited() -> dict[str, str]:
    """This process's environment without any DMP_* variable: the test sets its own."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DMP_")}


def test_provisioning_refuses_topics_with_fewer_replicas_than_asked(kafka: str) -> None:
    """A topic that exists with a lower replication factor than DMP_REPLICATION_FACTOR
    stops the worker at start, and so does a factor the cluster cannot give."""
    topic = f"replicas-{uuid.uuid4().hex[:6]}"
    auth = Settings().kafka_auth()
    ensure_topics(kafka, [TopicSpec(topic, 2)], 30, auth)
    with pytest.raises(ProvisionError, match=r"fewer replicas than asked.*REPLICATION_FACTOR=2"):
        ensure_topics(kafka, [TopicSpec(topic, 2, {}, 2)], 30, auth)
    with pytest.raises(ProvisionError, match=r"refused to create topics.*replication factor"):
        ensure_topics(kafka, [TopicSpec(f"{topic}-new", 2, {}, 2)], 30, auth)
