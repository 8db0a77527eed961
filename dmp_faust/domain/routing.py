"""The signed routing header: how a worker tells another that it routed a request.

A key lookup that reaches a worker which does not own the key is proxied to
the owner with a header ``X-Dmp-Route: v1 <hop> <timestamp ms> <signature>``.
The signature is an HMAC-SHA256, under the cluster secret
(``DMP_CLUSTER_SECRET``), of the method, the path with its query string as
sent, the hop count and the timestamp. A worker trusts a request as routed
only if the signature is right and the timestamp is within ``validity_ms``
of its own clock (either way: workers' clocks differ a little); anything
else, a missing header, a forged or altered one or an old one replayed, is
treated as a request from a client, whose hop count is 0.

The hop count is how many workers a request has crossed. A worker never
forwards a request whose hop count is 1 or more (see :mod:`dmp_faust.web`),
so a request crosses at most one hop and can never loop.

Pure: the clock and the secret are parameters.
"""

from __future__ import annotations

import hashlib
import hmac

ROUTE_HEADER = "X-Dmp-Route"
VERSION = "v1"
# Generous for clock skew between workers, short for a replayed header: a copied
# header is only good for the same method and path, and only this long.
VALIDITY_MS = 30_000
# What a derived cluster secret is derived with (see Settings.cluster_secret).
_DERIVATION = b"dmp-faust cluster secret v1"


def derive_secret(material: str) -> bytes:
    """A cluster secret derived from ``material`` (the API token, or the app id)."""
    return hmac.new(material.encode(), _DERIVATION, hashlib.sha256).digest()


def _mac(secret: bytes, method: str, path_qs: str, hop: int, ts_ms: int) -> str:
    message = "\n".join((VERSION, method.upper(), path_qs, str(hop), str(ts_ms)))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path_qs: str, hop: int, now_ms: int) -> str:
    """The header value for a request ``method path_qs`` proxied at ``now_ms``."""
    if hop < 1:
        raise ValueError(f"a routed request has crossed at least one hop, not {hop}")
    return f"{VERSION} {hop} {now_ms} {_mac(secret, method, path_qs, hop, now_ms)}"


def verify(
    secret: bytes,
    value: str | None,
    method: str,
    path_qs: str,
    now_ms: int,
    validity_ms: int = VALIDITY_MS,
) -> int:
    """The hop count of a request whose routing header is ``value``.

    0 (a client's request) unless ``value`` is a header signed with ``secret``
    for this very method and path, within ``validity_ms`` of ``now_ms``.
    """
    if not value or len(value) > 200:
        return 0
    parts = value.split(" ")
    if len(parts) != 4 or parts[0] != VERSION:
        return 0
    _, hop_text, ts_text, given = parts
    hop, ts_ms = _natural(hop_text, 3), _natural(ts_text, 16)
    if hop is None or ts_ms is None or hop < 1 or abs(now_ms - ts_ms) > validity_ms:
        return 0
    expected = _mac(secret, method, path_qs, hop, ts_ms)
    return hop if hmac.compare_digest(given.encode(), expected.encode()) else 0


def _natural(text: str, max_digits: int) -> int | None:
    """``text`` as a number, if it is made of at most ``max_digits`` ASCII digits."""
    ok = 0 < len(text) <= max_digits and text.isascii() and text.isdigit()
    return int(text) if ok else None
