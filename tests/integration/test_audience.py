"""Identity stitching, profiles, segments, frequency and erasure on the real broker."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from tests.integration.conftest import WorkerFactory
from tests.integration.events import MINUTE, T0, encode, event
from tests.integration.support import Worker, call, consume, metrics, produce, wait_until

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOUR = 60 * MINUTE
PARTITIONS = 8


def partition(key: str) -> int:
    """Kafka's default partitioner, computed here independently of the project."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def ids_on_different_partitions() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    anonymous = f"anon-{tag}"
    user = next(
        f"user-{tag}-{i}"
        for i in range(100)
        if partition(f"user-{tag}-{i}") != partition(anonymous)
    )
    return anonymous, user


@pytest.fixture(scope="module")
def worker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    data = tmp_path_factory.mktemp("audience")
    prefix = f"aud{uuid.uuid4().hex[:6]}"
    running = Worker(kafka, prefix, data / "w", env={"DMP_API_TOKEN": TOKEN}).start()
    yield running
    running.stop()
    assert not running.crashes()


def send(worker: Worker, events: list[dict[str, Any]]) -> None:
    produce(worker.bootstrap, f"{worker.prefix}.events.raw", [(None, encode(e)) for e in events])


def profile(worker: Worker, profile_id: str) -> tuple[int, Any]:
    return call("GET", f"{worker.url}/profiles/{profile_id}", headers=AUTH)


def wait_profile(worker: Worker, profile_id: str, events: int) -> dict[str, Any]:
    """The profile of ``profile_id`` once it counts ``events`` events."""

    def ready() -> dict[str, Any] | None:
        status, body = profile(worker, profile_id)
        return body if status == 200 and sum(body["counts"].values()) == events else None

    return wait_until(ready, 60, f"profile {profile_id} to count {events} events")


def anonymous_events(anonymous: str, campaign: str, start: int) -> list[dict[str, Any]]:
    return [
        event("page_view", start, anonymous, url="https://news.example/sports/a"),
        event("page_view", start + 1_000, anonymous, url="https://news.example/sports/b?x=1"),
        event("page_view", start + 2_000, anonymous, url="https://news.example/News/c"),
        event("impression", start + 3_000, anonymous, campaign),
        event("impression", start + 4_000, anonymous, campaign),
        event("click", start + 5_000, anonymous, campaign),
    ]


def expected_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(e["type"] for e in events))


@pytest.mark.parametrize("link_at", [0, 3, 6], ids=["link-before", "link-between", "link-after"])
def test_stitching_does_not_depend_on_when_the_link_arrives(worker: Worker, link_at: int) -> None:
    anonymous, user = ids_on_different_partitions()
    campaign = f"cmp-{uuid.uuid4().hex[:6]}"
    anon = anonymous_events(anonymous, campaign, T0)
    link = event("identify", T0 + 10_000, anonymous, user_id=user)
    own = [{**event("page_view", T0 + 20_000, "ignored", url="/tech/x"), "user_id": user}]
    del own[0]["anonymous_id"]  # an event that knows only the user

    waves = [anon[:link_at], [link], anon[link_at:], own]
    sent: list[dict[str, Any]] = []
    for wave in filter(None, waves):
        send(worker, wave)
        sent += wave
        wait_profile(worker, user if link in sent else anonymous, len(sent))

    body = wait_profile(worker, user, len(sent))
    assert body["profile_id"] == user
    assert body["counts"] == expected_counts(sent)
    assert sorted(body["ids"]) == sorted([anonymous, user])
    assert body["interests"] == {"sports": 2, "news": 1, "tech": 1}
    assert body["first_seen"] == T0 and body["last_seen"] == T0 + 20_000
    assert "clickers" in body["segments"]
    # Any linked id finds the merged profile.
    assert profile(worker, anonymous) == (200, body)
    frequency = call("GET", f"{worker.url}/frequency/{anonymous}/{campaign}", headers=AUTH)
    assert frequency == (200, {"impressions_24h": 2})


def changes_values(records: list[Any]) -> list[bytes]:
    return [record.value for record in records]


def segment_size(worker: Worker, segment: str) -> int:
    status, body = call("GET", f"{worker.url}/segments/{segment}")
    assert status == 200, body
    return int(body["size"])


def test_segments_enter_exit_sizes_and_erasure_that_survives_restarts(
    make_worker: WorkerFactory, tmp_path: Any
) -> None:
    first = make_worker(DMP_API_TOKEN=TOKEN).start()
    anonymous, user = ids_on_different_partitions()
    campaign = f"cmp-{uuid.uuid4().hex[:6]}"
    clicks = [event("click", T0 + i * 1_000, anonymous, campaign) for i in range(2)]
    send(first, clicks)
    wait_profile(first, anonymous, 2)
    assert wait_until(lambda: segment_size(first, "clickers") == 1, 60, "clickers to hold 1")

    link = event("identify", T0 + 5_000, anonymous, user_id=user)
    send(first, [link])
    merged = wait_profile(first, user, 3)
    assert merged["segments"] == ["clickers"]

    changes = consume(
        first.bootstrap,
        f"{first.prefix}.segments.changes",
        lambda got: len(got) >= 3,
    )
    seen = [
        (c["profile_id"], c["segment"], c["action"])
        for c in map(json.loads, changes_values(changes))
    ]
    assert sorted(seen) == sorted(
        [
            (anonymous, "clickers", "enter"),
            (anonymous, "clickers", "exit"),
            (user, "clickers", "enter"),
        ]
    )
    # one profile's changes share a partition, so they keep their order
    assert [a for p, _, a in seen if p == anonymous] == ["enter", "exit"]
    assert wait_until(
        lambda: segment_size(first, "clickers") == 1, 60, "one clicker after the merge"
    )
    listing = call("GET", f"{first.url}/segments")[1]
    assert {s["segment"]: s["size"] for s in listing} == {
        "clickers": 1,
        "converters": 0,
        "engaged": 0,
    }

    status, body = call("DELETE", f"{first.url}/profiles/{anonymous}", headers=AUTH)
    assert status == 202 and body["profile_id"] == user
    wait_until(lambda: profile(first, user)[0] == 404, 60, "the profile to be erased")
    # Until its own erasure arrives, the linked id answers 503 (it is linked to a profile
    # that is gone), then 404; never the profile.
    assert profile(first, anonymous)[0] in (503, 404)
    wait_until(lambda: profile(first, anonymous)[0] == 404, 60, "the linked id to be erased")
    assert wait_until(lambda: segment_size(first, "clickers") == 0, 60, "clickers to drop to 0")
    assert call("GET", f"{first.url}/frequency/{user}/{campaign}", headers=AUTH)[1] == {
        "impressions_24h": 0
    }

    # kill -9 and restart on the same disk: still erased
    first.kill()
    first.start()
    assert profile(first, user)[0] == 404 and profile(first, anonymous)[0] == 404
    assert segment_size(first, "clickers") == 0
    # a fresh disk rebuilt from the changelogs: still erased (tombstones)
    first.stop()
    fresh = make_worker(prefix=first.prefix, data_dir=tmp_path / "fresh", DMP_API_TOKEN=TOKEN)
    fresh.start()
    assert profile(fresh, user)[0] == 404 and profile(fresh, anonymous)[0] == 404
    assert segment_size(fresh, "clickers") == 0
    assert metrics(fresh.url).get("dmp_profiles") == 0


def hashed(worker: Worker, profile_id: str) -> str:
    """How an erasure reports an id: sha256 of the app id and the id (docs/SECURITY.md)."""
    return hashlib.sha256(f"{worker.prefix}\x1f{profile_id}".encode()).hexdigest()


def erase(worker: Worker, profile_id: str) -> dict[str, Any]:
    status, body = call("DELETE", f"{worker.url}/profiles/{profile_id}", headers=AUTH)
    assert status == 202, body
    assert body["status"] == "erasing" and body["erasure_id"]
    return dict(body)


def erasure(worker: Worker, erasure_id: str) -> tuple[int, Any]:
    return call("GET", f"{worker.url}/erasures/{erasure_id}", headers=AUTH)


def wait_erased(worker: Worker, erasure_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status, body = erasure(worker, erasure_id)
        assert status == 200, body  # found from the 202 on: never a 404 in between
        return body if body["status"] == "erased" else None

    return wait_until(done, 60, f"erasure {erasure_id} to complete")


@pytest.mark.parametrize("order", ["erase-then-link", "link-then-erase"])
def test_erasure_reaches_a_link_still_travelling(make_worker: WorkerFactory, order: str) -> None:
    """A user is erased while the link of an anonymous id to it is still on its way (sent
    after the DELETE, or just before it). Once everything has arrived, neither id has a
    profile, the segment sizes and dmp_profiles drop to zero, and the erasure reports
    ``erased`` with both hashed ids."""
    worker = make_worker(DMP_API_TOKEN=TOKEN).start()
    anonymous, user = ids_on_different_partitions()
    campaign = f"cmp-{uuid.uuid4().hex[:6]}"
    send(worker, [event("click", T0 + i * 1_000, anonymous, campaign) for i in range(2)])
    user_only = {**event("conversion", T0 + 3_000, "-", campaign), "user_id": user}
    del user_only["anonymous_id"]
    send(worker, [user_only])
    wait_profile(worker, anonymous, 2)
    wait_profile(worker, user, 1)
    assert wait_until(lambda: segment_size(worker, "clickers") == 1, 60, "one clicker")
    assert metrics(worker.url).get("dmp_profiles") == 2

    link = event("identify", T0 + 5_000, anonymous, user_id=user)
    if order == "link-then-erase":
        send(worker, [link])
    started = erase(worker, user)
    assert started["profile_id"] == user
    if order == "erase-then-link":
        send(worker, [link])
    done = wait_erased(worker, started["erasure_id"])
    assert hashed(worker, user) in done["ids"]

    def gone() -> bool:
        return profile(worker, anonymous)[0] == 404 and profile(worker, user)[0] == 404

    wait_until(gone, 60, "both ids to be erased")
    assert wait_until(lambda: segment_size(worker, "clickers") == 0, 60, "clickers to drop")
    assert segment_size(worker, "converters") == 0
    assert wait_until(lambda: metrics(worker.url).get("dmp_profiles") == 0, 60, "no profiles")
    freq = call("GET", f"{worker.url}/frequency/{anonymous}/{campaign}", headers=AUTH)
    assert freq == (200, {"impressions_24h": 0})
    # what arrives late from before the cutoff is dropped, for either id
    send(worker, [event("page_view", T0 + 9_000, anonymous), {**user_only, "event_id": "late"}])
    marker = f"mark-{uuid.uuid4().hex[:8]}"
    send(worker, [event("page_view", T0 + 9_000, marker)])
    wait_profile(worker, marker, 1)  # sent after them: the pipeline has moved on
    assert profile(worker, anonymous)[0] == 404 and profile(worker, user)[0] == 404


def test_erasing_an_id_not_known_yet(worker: Worker) -> None:
    """202 with an erasure id for an id with no data; the erasure is ``erased`` at once;
    its data, arriving later from before the cutoff, is dropped."""
    person = f"unknown-{uuid.uuid4().hex[:8]}"
    started = erase(worker, person)
    assert started["profile_id"] == person
    done = wait_erased(worker, started["erasure_id"])
    assert done == {
        "erasure_id": started["erasure_id"],
        "status": "erased",
        "ids": [hashed(worker, person)],
    }
    marker = f"mark-{uuid.uuid4().hex[:8]}"
    send(worker, [event("click", T0 + 1_000, person, "cmp-late"), event("page_view", T0, marker)])
    wait_profile(worker, marker, 1)
    assert profile(worker, person)[0] == 404
    assert erasure(worker, "er-0123456789abcdef01234567")[0] == 404
    assert call("GET", f"{worker.url}/erasures/{started['erasure_id']}")[0] == 401


def test_frequency_counts_the_last_24_hours_of_stream_time(make_worker: WorkerFactory) -> None:
    # its own worker: moving stream time a day ahead would make other tests' events too old
    worker = make_worker(DMP_API_TOKEN=TOKEN).start()
    person = f"freq-{uuid.uuid4().hex[:8]}"
    campaign = f"cmp-{uuid.uuid4().hex[:6]}"
    for n, ts in enumerate([T0, T0 + 2 * HOUR, T0 + 25 * HOUR], start=1):
        send(worker, [event("impression", ts, person, campaign)])
        wait_profile(worker, person, n)
    url = f"{worker.url}/frequency/{person}/{campaign}"
    # T0 is more than 24 h behind the latest impression: only the two others count.
    assert call("GET", url, headers=AUTH) == (200, {"impressions_24h": 2})
    assert call("GET", f"{worker.url}/frequency/{person}/other", headers=AUTH) == (
        200,
        {"impressions_24h": 0},
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/profiles/x"),
        ("DELETE", "/profiles/x"),
        ("GET", "/frequency/x/c"),
        ("GET", "/erasures/x"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "no-scheme"],
)
def test_personal_data_routes_need_the_token(
    worker: Worker, method: str, path: str, headers: dict[str, str]
) -> None:
    status, body = call(method, worker.url + path, headers=headers)
    assert status == 401 and body["error"] == "unauthorized"
    assert TOKEN not in json.dumps(body)
    assert call(method, worker.url + path, headers=AUTH)[0] in (200, 202, 404)


def test_profile_counts_equal_an_independent_count(worker: Worker) -> None:
    person = f"count-{uuid.uuid4().hex[:8]}"
    kinds = ["page_view"] * 7 + ["impression"] * 4 + ["click"] * 2 + ["conversion"]
    events = [
        event(kind, T0 + HOUR + i * 1_000, person, "cmp-x" if kind != "page_view" else None)
        for i, kind in enumerate(kinds)
    ]
    send(worker, events + events[:3])  # the three copies are duplicates
    body = wait_profile(worker, person, len(events))
    assert body["counts"] == expected_counts(events)
    assert sorted(body["segments"]) == ["clickers", "converters", "engaged"]
    assert call("GET", f"{worker.url}/segments")[0] == 200
