"""The signed routing header: only a worker with the cluster secret can mark a request routed."""

from __future__ import annotations

import pytest

from dmp_faust.domain.routing import VALIDITY_MS, derive_secret, sign, verify
from dmp_faust.settings import Settings

SECRET = b"cluster-secret-1"
NOW = 1_700_000_000_000
PATH = "/profiles/anon%2F1?x=1"


def test_a_signed_request_is_routed_with_its_hop_count() -> None:
    value = sign(SECRET, "GET", PATH, 1, NOW)
    assert verify(SECRET, value, "GET", PATH, NOW + 5) == 1
    assert verify(SECRET, value, "get", PATH, NOW) == 1  # methods compare in upper case


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1",  # the old, unsigned X-Dmp-Routed: 1
        "v1 1 1700000000000",
        "v1 1 1700000000000 " + "0" * 64,
        "v2 1 1700000000000 " + "0" * 64,
        "v1 -1 1700000000000 " + "0" * 64,
        "v1 ² 1700000000000 " + "0" * 64,
        "v1 1 1e12 " + "0" * 64,
        "v1  1 1700000000000 " + "0" * 64,
        "v1 1 1700000000000 " + "0" * 400,
    ],
)
def test_a_missing_or_malformed_header_is_a_clients_request(value: str | None) -> None:
    assert verify(SECRET, value, "GET", PATH, NOW) == 0


@pytest.mark.parametrize(
    ("secret", "method", "path", "now"),
    [
        (b"another-secret", "GET", PATH, NOW),  # forged, or another cluster
        (SECRET, "DELETE", PATH, NOW),  # copied onto another method
        (SECRET, "GET", "/profiles/user-2", NOW),  # copied onto another key
        (SECRET, "GET", "/profiles/anon%2F1?x=2", NOW),  # another query
        (SECRET, "GET", PATH, NOW + VALIDITY_MS + 1),  # replayed too late
        (SECRET, "GET", PATH, NOW - VALIDITY_MS - 1),  # from a clock far ahead
    ],
)
def test_a_header_is_good_for_its_own_request_only_and_only_for_a_while(
    secret: bytes, method: str, path: str, now: int
) -> None:
    value = sign(SECRET, "GET", PATH, 1, NOW)
    assert verify(secret, value, method, path, now) == 0


def test_the_hop_count_is_signed() -> None:
    value = sign(SECRET, "GET", PATH, 1, NOW)
    raised = value.replace("v1 1 ", "v1 2 ", 1)
    assert verify(SECRET, raised, "GET", PATH, NOW) == 0
    assert verify(SECRET, sign(SECRET, "GET", PATH, 2, NOW), "GET", PATH, NOW) == 2


def test_a_client_request_cannot_be_signed() -> None:
    with pytest.raises(ValueError):
        sign(SECRET, "GET", PATH, 0, NOW)


def test_the_validity_window_is_inclusive_both_ways() -> None:
    value = sign(SECRET, "GET", PATH, 1, NOW)
    assert verify(SECRET, value, "GET", PATH, NOW + VALIDITY_MS) == 1
    assert verify(SECRET, value, "GET", PATH, NOW - VALIDITY_MS) == 1


def test_the_cluster_secret_defaults_to_one_every_worker_shares() -> None:
    # Two workers of one cluster, started apart, must agree without any setting...
    assert Settings.from_env({}).routing_secret() == Settings.from_env({}).routing_secret()
    # ...the token, when set, makes the default a secret (the token itself is not the key)...
    token = Settings.from_env({"DMP_API_TOKEN": "t0k"}).routing_secret()
    assert token == derive_secret("token:t0k") != b"t0k"
    assert token != Settings.from_env({}).routing_secret()
    assert token != Settings.from_env({"DMP_API_TOKEN": "t0k2"}).routing_secret()
    # ...and DMP_CLUSTER_SECRET wins over both; blank means unset.
    both = {"DMP_API_TOKEN": "t0k", "DMP_CLUSTER_SECRET": " s3 "}
    assert Settings.from_env(both).routing_secret() == b"s3"
    blank = {"DMP_API_TOKEN": "t0k", "DMP_CLUSTER_SECRET": "  "}
    assert Settings.from_env(blank).routing_secret() == token
    # Clusters with other app ids (topic prefixes) do not share the default.
    other = Settings.from_env({"DMP_TOPIC_PREFIX": "other"}).routing_secret()
    assert other != Settings.from_env({}).routing_secret()


def test_the_cluster_secret_stays_out_of_repr() -> None:
    settings = Settings.from_env({"DMP_CLUSTER_SECRET": "very-secret-42"})
    assert "very-secret-42" not in repr(settings)
