"""Create the app's topics and table changelogs before a worker starts.

Faust creates missing topics itself, but while it starts: a table can then
be written before the consumer's metadata knows its brand-new changelog,
and Faust crashes the agent with ``PartitionsMismatch`` ("changelog has 0
partitions"). Creating everything first, and waiting until the broker
describes every partition, removes that race. It also refuses to start on
a topic that exists with the wrong partition count (say, one auto-created
by a producer with the broker's default), which would silently break
co-partitioning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from dmp_faust.settings import Settings


class ProvisionError(RuntimeError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def new_topic(self) -> NewTopic:
        config = {"min.insync.replicas": str(min_insync(self.replication_factor)), **self.config}
        return NewTopic(self.name, self.partitions, self.replication_factor, topic_configs=config)


def min_insync(replication_factor: int) -> int:
    """The ``min.insync.replicas`` of a topic: one broker may be away without stopping
    writes (factor 2: 1, factor 3 and more: 2), and an acknowledged write is on two
    brokers whenever the factor allows it."""
    return min(2, max(1, replication_factor - 1))


def app_topic_specs(app: object, partitions: int, replication_factor: int = 1) -> list[TopicSpec]:
    """Every topic the app reads or writes: its own, and one changelog per table."""
    from dmp_faust.topics import ALL_TOPICS

    factor = replication_factor
    specs = [TopicSpec(topic.get_topic_name(), partitions, {}, factor) for topic in ALL_TOPICS]
    for table in app.tables.values():  # type: ignore[attr-defined]
        changelog = table.changelog_topic.get_topic_name()
        specs.append(TopicSpec(changelog, partitions, {"cleanup.policy": "compact"}, factor))
    return specs


def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    timeout: float = 60,
    auth: Mapping[str, Any] | None = None,
) -> None:
    """Blocking: create what is missing and wait for it (own thread, own event loop).

    ``auth`` is the client's security (``Settings.kafka_auth()``; by default
    read from the environment, as the worker's app does). A broker that
    cannot be reached or refuses the credentials raises ``ProvisionError``.
    """
    auth = Settings.from_env().kafka_auth() if auth is None else auth
    with ThreadPoolExecutor(1) as pool, _ConnectErrors() as reasons:
        try:
            pool.submit(asyncio.run, _ensure(bootstrap, specs, timeout, auth)).result()
        except KafkaError as exc:
            raise ProvisionError(
                f"cannot connect to Kafka at {bootstrap} over {auth['security_protocol']}"
                + _identity(auth)
                + f": {'; '.join(dict.fromkeys(reasons)) or exc}. Check DMP_KAFKA_BOOTSTRAP "
                "and the DMP_KAFKA_SECURITY_PROTOCOL, DMP_KAFKA_SASL_* and DMP_KAFKA_SSL_* "
                "settings (docs/SECURITY.md)."
            ) from None


class _ConnectErrors(logging.Handler):
    """Collects why aiokafka could not connect (say, ``SaslAuthenticationFailed``): it
    logs the reason and raises only "Unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []
        self._logger = logging.getLogger("aiokafka")

    def emit(self, record: logging.LogRecord) -> None:
        self.reasons.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self._logger.addHandler(self)
        return self.reasons

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)


def _identity(auth: Mapping[str, Any]) -> str:
    """Who we tried to be, for an error message: never the password."""
    if "sasl_mechanism" not in auth:
        return ""
    return f" (SASL {auth['sasl_mechanism']} as user {auth.get('sasl_plain_username')!r})"


async def _ensure(
    bootstrap: str, specs: list[TopicSpec], timeout: float, auth: Mapping[str, Any]
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **auth)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            answer = None
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                answer = await admin.create_topics([s.new_topic() for s in missing])
            refused = {
                topic: message
                for topic, code, message in getattr(answer, "topic_errors", ())
                if code not in (0, TopicAlreadyExistsError.errno)
            }
            if refused:
                raise ProvisionError(f"Kafka refused to create topics: {refused}")
        await _wait_described(admin, specs, timeout)
    finally:
        await admin.close()


async def _wait_described(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    want = {s.name: s.partitions for s in specs}
    factors = {s.name: s.replication_factor for s in specs}
    while True:
        described = [d for d in await admin.describe_topics(list(want)) if not d.get("error_code")]
        found = {d["topic"]: len(d["partitions"]) for d in described}
        wrong = {n: c for n, c in found.items() if c and c != want[n]}
        if wrong:
            raise ProvisionError(
                "topics exist with the wrong number of partitions (want "
                f"DMP_PARTITIONS={next(iter(want.values()))}): {wrong}"
            )
        short = {
            d["topic"]: least
            for d in described
            if d["partitions"]
            and (least := min(len(p["replicas"]) for p in d["partitions"])) < factors[d["topic"]]
        }
        if short:
            raise ProvisionError(
                "topics exist with fewer replicas than asked (want "
                f"DMP_REPLICATION_FACTOR={max(factors.values())}; raise theirs with "
                f"kafka-reassign-partitions): {short}"
            )
        if all(found.get(n) == c for n, c in want.items()):
            return
        if time.monotonic() > deadline:
            raise ProvisionError(
                f"topics not ready after {timeout} s: {sorted(set(want) - set(found))}"
            )
        await asyncio.sleep(0.2)
