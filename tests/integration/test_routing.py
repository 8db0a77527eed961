"""Routing between two workers: only workers route, one hop at most, never a false 404.

Two workers of one cluster, with a token and a cluster secret. A client's
request to the worker that does not own the key is proxied to the owner
whatever routing header the client sends; a request signed by a worker is
never forwarded again; a lookup that follows a link to a third place is
continued by the worker the client asked, so no request crosses more than
one hop and a cycle of links ends in a bounded answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from dmp_faust.domain.batches import CommandItem, encode_batch
from dmp_faust.domain.events import Event
from dmp_faust.domain.identity import route_event
from dmp_faust.domain.profiles import profile_event
from dmp_faust.domain.routing import ROUTE_HEADER, sign
from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, produce, wait_until

pytestmark = pytest.mark.integration

TOKEN = "tok-routing-8Kd"
SECRET = "cluster-secret-for-routing-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Alerts after 5 windows of history, judged 3 minutes of stream time after a window's end
ALERTS = {"DMP_ALERT_WARMUP_WINDOWS": "5", "DMP_ALERT_SETTLE_S": "180"}
ENV = {"DMP_API_TOKEN": TOKEN, "DMP_CLUSTER_SECRET": SECRET, **ALERTS}
PARTITIONS = 8


def partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def active(worker: Worker) -> set[int]:
    status, body = call("GET", worker.url + "/health")
    return set(body.get("active_partitions", [])) if status == 200 else set()


def key_on(worker: Worker, tag: str, taken: Callable[[str], bool] = lambda _: False) -> str:
    """A fresh id whose partition ``worker`` owns."""
    mine = active(worker)
    return next(
        key
        for i in range(1000)
        if partition(key := f"{tag}-{uuid.uuid4().hex[:6]}-{i}") in mine and not taken(key)
    )


def send(worker: Worker, events: list[dict[str, Any]]) -> None:
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(e)) for e in events])


def lookup(worker: Worker, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return call("GET", worker.url + path, headers={**AUTH, **(headers or {})})


@pytest.fixture(scope="module")
def pair(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Worker]]:
    data = tmp_path_factory.mktemp("routing")
    prefix = f"rt{uuid.uuid4().hex[:6]}"
    first = Worker(kafka, prefix, data / "a", env=dict(ENV)).start()
    second = Worker(kafka, prefix, data / "b", env=dict(ENV)).start()
    try:
        wait_until(
            lambda: (
                (a := active(first))
                and (b := active(second))
                and a | b == set(range(PARTITIONS))
                and not a & b
            ),
            90,
            "the two workers to split the partitions",
        )
        yield first, second
    finally:
        second.stop()
        first.stop()
    assert not first.crashes() + second.crashes()


@pytest.fixture(scope="module")
def profile_on_second(pair: tuple[Worker, Worker]) -> tuple[str, Any]:
    """(id, the owner's answer) of a profile that lives on the second worker."""
    first, second = pair
    person = key_on(second, "rt-user")
    send(first, [event("page_view", T0 + i, person, url=f"/sport/{i}") for i in range(3)])

    def folded() -> Any:
        status, body = lookup(second, f"/profiles/{person}")
        return (status, body) if status == 200 and body["counts"] == {"page_view": 3} else None

    return person, wait_until(folded, 60, "the profile, with its three page views")


def _now_ms() -> int:
    return int(time.time() * 1000)


FORGERIES: dict[str, Callable[[str], dict[str, str]]] = {
    "old-header": lambda path: {"X-Dmp-Routed": "1"},  # the header of earlier versions
    "unsigned": lambda path: {ROUTE_HEADER: "1"},
    "bad-signature": lambda path: {ROUTE_HEADER: f"v1 1 {_now_ms()} {'0' * 64}"},
    "other-secret": lambda path: {ROUTE_HEADER: sign(b"guessed", "GET", path, 1, _now_ms())},
    "other-request": lambda path: {
        ROUTE_HEADER: sign(SECRET.encode(), "GET", "/profiles/someone-else", 1, _now_ms())
    },
    "too-old": lambda path: {
        ROUTE_HEADER: sign(SECRET.encode(), "GET", path, 1, _now_ms() - 60_000)
    },
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_routing_header_is_routed_like_any_client_request(
    pair: tuple[Worker, Worker], profile_on_second: tuple[str, Any], forgery: str
) -> None:
    """Today's answer from the owner, not the non-owner's local 404."""
    first, _ = pair
    person, answer = profile_on_second
    path = f"/profiles/{person}"
    assert lookup(first, path, FORGERIES[forgery](path)) == answer


def test_a_routed_request_is_never_routed_again(
    pair: tuple[Worker, Worker], profile_on_second: tuple[str, Any]
) -> None:
    """A worker that gets a routed request for a key it does not own answers 503: the
    owner moved while the request was on its way. Never a local 404, never a second hop."""
    first, _ = pair
    person, _ = profile_on_second
    path = f"/profiles/{person}"
    signed = sign(SECRET.encode(), "GET", path, 1, _now_ms())
    request = urllib.request.Request(first.url + path, headers={**AUTH, ROUTE_HEADER: signed})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == 503 and raised.value.headers["Retry-After"] == "1"
    assert json.loads(raised.value.read())["error"] == "unavailable"


def test_a_linked_id_is_found_from_either_worker(pair: tuple[Worker, Worker]) -> None:
    """The anonymous id on one worker, the user on the other: asked of either, one hop each."""
    first, second = pair
    for anonymous_on, user_on in ((first, second), (second, first)):
        anonymous = key_on(anonymous_on, "rt-anon")
        user = key_on(user_on, "rt-linked")
        send(first, [event("page_view", T0, anonymous, url="/news/a")])
        send(first, [event("identify", T0 + 1, anonymous, user_id=user)])

        def linked(worker: Worker, a: str = anonymous, u: str = user) -> Any:
            status, body = lookup(worker, f"/profiles/{a}")
            return body if status == 200 and body["profile_id"] == u else None

        one = wait_until(lambda: linked(first), 60, "the link, asked of the first worker")
        two = wait_until(lambda: linked(second), 60, "the link, asked of the second worker")
        assert one == two


def test_a_cycle_of_links_across_workers_ends_at_once(pair: tuple[Worker, Worker]) -> None:
    """X linked to Y and Y to X, on two workers: the answer comes at once, never a loop."""
    first, second = pair
    x = key_on(first, "cyc-x")
    y = key_on(second, "cyc-y")
    send(first, [event("identify", T0, x, user_id=y)])
    wait_until(lambda: lookup(first, f"/profiles/{x}")[0] == 200, 60, "the first link")
    send(first, [event("identify", T0 + 1, y, user_id=x)])
    time.sleep(2)  # let the second link land, wherever it leads
    for worker in (first, second):
        for key in (x, y):
            began = time.monotonic()
            status, body = lookup(worker, f"/profiles/{key}")
            took = time.monotonic() - began
            assert status in (200, 503), body
            assert took < 5, f"{key} on {worker.url}: {took:.1f} s"


def test_alerts_are_gathered_from_every_worker_and_routed_by_campaign(
    pair: tuple[Worker, Worker],
) -> None:
    """A campaign on each worker spikes: either worker lists both, and answers for each."""
    first, second = pair
    campaigns = [key_on(first, "rt-cmp"), key_on(second, "rt-cmp")]
    rng = random.Random(11)
    counted = dict.fromkeys(campaigns, 0)
    for start in range(0, 20, 2):  # two minutes at a time, each counted before the next
        chunk = []
        for minute in range(start, start + 2):
            rate = 150 if minute in (10, 11) else 30
            for campaign in campaigns:
                for _ in range(rate):
                    ts = T0 + minute * MINUTE + rng.randrange(MINUTE)
                    chunk.append(event("impression", ts, f"v{rng.randrange(99)}", campaign))
                counted[campaign] += rate
        send(first, sorted(chunk, key=lambda e: e["timestamp"]))
        for campaign in campaigns:
            path = f"/campaigns/{campaign}/stats?from={T0}&to={T0 + 20 * MINUTE}"
            wait_until(
                lambda p=path, c=campaign: (
                    lookup(first, p)[1]["totals"]["impressions"] == counted[c]
                ),
                60,
                f"minutes {start}-{start + 2} of {campaign} to be counted",
            )
    query = f"/alerts?from={T0}&to={T0 + 20 * MINUTE}"

    def both_spiked(worker: Worker) -> list[dict[str, Any]] | None:
        status, body = lookup(worker, query)
        assert status == 200, body
        found = [(a["campaign_id"], a["metric"], a["direction"]) for a in body["alerts"]]
        wanted = {(c, "impressions", "spike") for c in campaigns}
        return body["alerts"] if wanted <= set(found) else None

    gathered = wait_until(lambda: both_spiked(first), 60, "both spikes, asked of the first")
    assert wait_until(lambda: both_spiked(second), 60, "both, asked of the second") == gathered
    assert all(a["opened_window"]["start"] == "2021-03-01T12:10:00Z" for a in gathered)
    for campaign in campaigns:
        own = [a for a in gathered if a["campaign_id"] == campaign]
        for worker in pair:
            assert lookup(worker, f"{query}&campaign_id={campaign}") == (200, {"alerts": own})
    # a client cannot narrow the gathering to partitions (only a signed request can)
    status, body = lookup(first, f"{query}&partitions=0")
    assert status == 200 and body["alerts"] == gathered


def test_health_lists_no_recovering_partition_when_ok(pair: tuple[Worker, Worker]) -> None:
    for worker in pair:
        status, body = call("GET", worker.url + "/health")
        assert status == 200 and body["recovering_partitions"] == []
        assert {"status", "worker", "recovered", "rebalancing", "active_partitions"} <= set(body)


def _command(key: str, n: int) -> CommandItem:
    """What the de-duplication stage sends to the profiles stage for one page view."""
    valid = Event(event_id=f"ev-{key}-{n}", type="page_view", ts=T0 + n, anonymous_id=key)
    target, command = route_event(profile_event(valid))
    return CommandItem(target, 0, command)


def _produce_to(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for value in values:
                await producer.send(topic, value, partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def test_a_partition_taken_over_answers_503_until_its_backlog_is_read(
    make_worker: WorkerFactory,
) -> None:
    """A worker lost for good leaves records of its partitions unread (or read, with
    writes that died with it). The survivor takes the partitions over, restores their
    tables and reads those records again; until it has read as far as the lost worker
    can have, a lookup answers 503 with Retry-After, never 404 for a profile that exists."""
    first = make_worker(**ENV).start()
    second = make_worker(prefix=first.prefix, **ENV).start()
    wait_until(
        lambda: (
            active(first) | active(second) == set(range(PARTITIONS))
            and not active(first) & active(second)
            and active(second)
        ),
        90,
        "the two workers to split the partitions",
    )
    person = key_on(second, "taken")
    fillers = [k for i in range(400_000) if partition(k := f"fill-{i}") == partition(person)]
    second.kill()
    backlog = [
        encode_batch([_command(key, n) for key in fillers[n * 500 : (n + 1) * 500]])
        for n in range(60)
    ]
    topic = f"{first.prefix}.profiles.in"
    _produce_to(
        first.bootstrap, topic, partition(person), [*backlog, encode_batch([_command(person, 0)])]
    )
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = lookup(first, f"/profiles/{person}")[0]
        seen[status] = seen.get(status, 0) + 1
        if status == 200:
            break
        time.sleep(0.02)  # as a client honouring Retry-After would, not flat out
    assert seen.get(200) == 1, f"never found: {seen}"
    assert set(seen) <= {200, 503}, f"a profile that exists answered otherwise: {seen}"


def test_a_worker_restarted_on_an_empty_disk_is_ok_only_once_restored_and_stays_ok(
    make_worker: WorkerFactory, tmp_path: Path
) -> None:
    """Killed, its disk wiped, restarted at the same address while its old membership
    has not lapsed: /health says ok only when every profile is there again, and then
    stays ok (no 200, 503, 200)."""
    env = {**ENV, "DMP_SESSION_TIMEOUT_S": "10"}
    worker = make_worker(**env).start()
    people = [f"wipe-{uuid.uuid4().hex[:6]}-{i}" for i in range(200)]
    send(worker, [event("page_view", T0 + i, p, url="/a/b") for i, p in enumerate(people)])
    wait_until(
        lambda: all(lookup(worker, f"/profiles/{p}")[0] == 200 for p in people),
        90,
        "every profile",
    )
    worker.kill()
    again = make_worker(prefix=worker.prefix, data_dir=tmp_path / "wiped", **env)
    again.port = worker.port
    again.start(timeout=180)
    missing = [p for p in people if lookup(again, f"/profiles/{p}")[0] != 200]
    assert not missing, f"ok, yet {len(missing)} profiles not served, e.g. {missing[:3]}"
    health = []
    until = time.monotonic() + 25  # past the old membership's session timeout
    while time.monotonic() < until:
        health.append(call("GET", again.url + "/health")[0])
        time.sleep(0.1)
    assert set(health) == {200}, f"/health flapped after ok: {health}"
