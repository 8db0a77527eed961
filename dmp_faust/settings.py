"""Every setting of a worker, read once from the environment.

The names and defaults of the ``DMP_*`` variables are part of the contract
(``CONTRACT.md``); a setting added here gets a working default and a line in
the README.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

GUARANTEES = ("at_least_once", "exactly_once")


class SettingsError(ValueError):
    """A ``DMP_*`` variable holds a value the worker cannot run with."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    topic_prefix: str = "dmp"
    partitions: int = 8
    web_host: str = "localhost"
    web_port: int = 6066
    data_dir: Path = Path("./var")
    api_token: str | None = None
    processing_guarantee: str = "at_least_once"
    segments_file: Path | None = None
    log_level: str = "info"
    session_timeout_s: int = 10
    # Limits and horizons; not in the contract's table, documented in the README.
    max_event_bytes: int = 64 * 1024
    max_batch_events: int = 500
    max_body_bytes: int = 4 * 1024 * 1024
    future_tolerance_ms: int = 5 * MINUTE_MS
    dedup_horizon_ms: int = DAY_MS
    retention_ms: int = DAY_MS
    window_ms: int = MINUTE_MS
    default_range_ms: int = HOUR_MS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def number(name: str, default: int, minimum: int = 1, maximum: int = 2**62) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not an integer") from None
            if not minimum <= value <= maximum:
                raise SettingsError(f"{name}={value} must be between {minimum} and {maximum}")
            return value

        guarantee = text("DMP_PROCESSING_GUARANTEE", cls.processing_guarantee)
        if guarantee not in GUARANTEES:
            raise SettingsError(
                f"DMP_PROCESSING_GUARANTEE={guarantee!r}: expected one of {', '.join(GUARANTEES)}"
            )
        segments = env.get("DMP_SEGMENTS_FILE", "").strip()
        return cls(
            kafka_bootstrap=text("DMP_KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            topic_prefix=text("DMP_TOPIC_PREFIX", cls.topic_prefix),
            partitions=number("DMP_PARTITIONS", cls.partitions),
            web_host=text("DMP_WEB_HOST", cls.web_host),
            web_port=number("DMP_WEB_PORT", cls.web_port, 1, 65535),
            data_dir=Path(text("DMP_DATA_DIR", str(cls.data_dir))),
            api_token=env.get("DMP_API_TOKEN", "").strip() or None,
            processing_guarantee=guarantee,
            segments_file=Path(segments) if segments else None,
            log_level=text("DMP_LOG_LEVEL", cls.log_level),
            session_timeout_s=number("DMP_SESSION_TIMEOUT_S", cls.session_timeout_s, 6),
            max_body_bytes=number("DMP_COLLECT_MAX_BYTES", cls.max_body_bytes, 64 * 1024),
            dedup_horizon_ms=number("DMP_DEDUP_HORIZON_MS", cls.dedup_horizon_ms),
            retention_ms=number("DMP_RETENTION_MS", cls.retention_ms, MINUTE_MS),
        )

    @property
    def app_id(self) -> str:
        """Faust application id: the consumer group and the prefix of changelogs."""
        return self.topic_prefix

    def topic(self, name: str) -> str:
        """Full name of one of the app's topics, e.g. ``topic("events.raw")``."""
        return f"{self.topic_prefix}.{name}"

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{host}" for host in self.kafka_bootstrap.split(","))
