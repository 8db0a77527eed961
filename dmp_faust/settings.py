"""Every setting of a worker, read once from the environment.

The names and defaults of the ``DMP_*`` variables are part of the interface
(``docs/API.md``); a setting added here gets a working default and a line in
the README and there.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmp_faust.domain.alerts import AlertSettings
from dmp_faust.domain.routing import derive_secret
from dmp_faust.domain.watermarks import MAX_PARTITIONS

MAX_REPLICATION_FACTOR = 16  # more copies than any cluster this is meant for

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

GUARANTEES = ("at_least_once", "exactly_once")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


# DMP_LOG_LEVEL → the name Faust's worker takes (it knows "warn", not "warning").
LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
}


class SettingsError(ValueError):
    """A ``DMP_*`` variable holds a value the worker cannot run with."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    topic_prefix: str = "dmp"
    partitions: int = 8
    replication_factor: int = 1  # of every topic and changelog the app creates
    web_host: str = "localhost"
    web_port: int = 6066
    data_dir: Path = Path("./var")
    api_token: str | None = field(default=None, repr=False)
    # Signs the routing header between workers; see routing_secret().
    cluster_secret: str | None = field(default=None, repr=False)
    processing_guarantee: str = "at_least_once"
    segments_file: Path | None = None
    log_level: str = "info"
    session_timeout_s: int = 6
    # How every Kafka connection authenticates (worker, provisioning, generator); see
    # docs/SECURITY.md. Secrets stay out of repr, so out of any log of the settings.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: str | None = field(default=None, repr=False)
    # Limits and horizons; not in the contract's table, documented in the README.
    max_event_bytes: int = 64 * 1024
    max_batch_events: int = 500
    max_body_bytes: int = 4 * 1024 * 1024
    future_tolerance_ms: int = 5 * MINUTE_MS
    dedup_horizon_ms: int = DAY_MS
    retention_ms: int = DAY_MS
    window_ms: int = MINUTE_MS
    default_range_ms: int = HOUR_MS
    # Anomaly alerts (DMP_ALERT_*; see the README and docs/ANALYSIS.md)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    alert_settle_ms: int = 2 * MINUTE_MS
    alert_max_campaigns: int = 10_000
    alert_capacity_rho: float = 0.8
    alert_capacity_for_s: int = 60
    # The Parquet history (DMP_HISTORY_*; see the README): None means <data_dir>/history.
    history_uri: str | None = None
    history_flush_s: int = 60
    history_erase_s: int = 3600
    history_enabled: bool = True
    metrics_created: bool = False  # the *_created series on /metrics

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def parsed(
            name: str, default: Any, kind: type, noun: str, minimum: Any, maximum: Any, why: str
        ) -> Any:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not {noun}") from None
            if not minimum <= value <= maximum:
                raise SettingsError(
                    f"{name}={value} must be between {minimum} and {maximum}"
                    + (f": {why}" if why else "")
                )
            return value

        def number(
            name: str, default: int, minimum: int = 1, maximum: int = 2**62, why: str = ""
        ) -> int:
            return int(parsed(name, default, int, "an integer", minimum, maximum, why))

        def real(name: str, default: float, minimum: float, maximum: float) -> float:
            return float(parsed(name, default, float, "a number", minimum, maximum, ""))

        guarantee = text("DMP_PROCESSING_GUARANTEE", cls.processing_guarantee)
        if guarantee not in GUARANTEES:
            raise SettingsError(
                f"DMP_PROCESSING_GUARANTEE={guarantee!r}: expected one of {', '.join(GUARANTEES)}"
            )
        segments = env.get("DMP_SEGMENTS_FILE", "").strip()
        log_level = text("DMP_LOG_LEVEL", cls.log_level).lower()
        log_level = LOG_LEVELS.get(log_level, log_level)
        if log_level not in LOG_LEVELS.values():
            raise SettingsError(
                f"DMP_LOG_LEVEL={log_level!r}: expected one of {', '.join(sorted(LOG_LEVELS))}"
            )
        return cls(
            **_kafka_security(env),
            kafka_bootstrap=text("DMP_KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            topic_prefix=text("DMP_TOPIC_PREFIX", cls.topic_prefix),
            partitions=number(
                "DMP_PARTITIONS",
                cls.partitions,
                1,
                MAX_PARTITIONS,
                "the watermarks in table values name a source partition as one of "
                f"{MAX_PARTITIONS} per input stream; more would mix two sources up",
            ),
            replication_factor=number(
                "DMP_REPLICATION_FACTOR", cls.replication_factor, 1, MAX_REPLICATION_FACTOR
            ),
            web_host=text("DMP_WEB_HOST", cls.web_host),
            web_port=number("DMP_WEB_PORT", cls.web_port, 1, 65535),
            data_dir=Path(text("DMP_DATA_DIR", str(cls.data_dir))),
            api_token=env.get("DMP_API_TOKEN", "").strip() or None,
            cluster_secret=env.get("DMP_CLUSTER_SECRET", "").strip() or None,
            processing_guarantee=guarantee,
            segments_file=Path(segments) if segments else None,
            log_level=log_level,
            session_timeout_s=number("DMP_SESSION_TIMEOUT_S", cls.session_timeout_s, 6),
            max_body_bytes=number("DMP_COLLECT_MAX_BYTES", cls.max_body_bytes, 64 * 1024),
            dedup_horizon_ms=number(
                "DMP_DEDUP_HORIZON_MS",
                cls.dedup_horizon_ms,
                MINUTE_MS,
                why="below a minute of stream time, a copy re-sent by a client or producer "
                "retry seconds later would count as a new event",
            ),
            retention_ms=number("DMP_RETENTION_MS", cls.retention_ms, MINUTE_MS),
            alerts=_alert_settings(number, real),
            alert_settle_ms=1000 * number("DMP_ALERT_SETTLE_S", cls.alert_settle_ms // 1000, 0),
            alert_max_campaigns=number("DMP_ALERT_MAX_CAMPAIGNS", cls.alert_max_campaigns),
            alert_capacity_rho=real("DMP_ALERT_CAPACITY_RHO", cls.alert_capacity_rho, 0.01, 10),
            alert_capacity_for_s=number("DMP_ALERT_CAPACITY_FOR_S", cls.alert_capacity_for_s),
            history_uri=env.get("DMP_HISTORY_URI", "").strip() or None,
            history_flush_s=number("DMP_HISTORY_FLUSH_S", cls.history_flush_s, 1, 24 * 3600),
            history_erase_s=number("DMP_HISTORY_ERASE_S", cls.history_erase_s, 10, 30 * 24 * 3600),
            history_enabled=_switch(env, "DMP_HISTORY_ENABLED", cls.history_enabled),
            metrics_created=_switch(env, "DMP_METRICS_CREATED", cls.metrics_created),
        )

    @property
    def history_root(self) -> str:
        """Where the Parquet history lives: ``DMP_HISTORY_URI``, else ``<data_dir>/history``."""
        return self.history_uri or str(self.data_dir / "history")

    @property
    def app_id(self) -> str:
        """Faust application id: the consumer group and the prefix of changelogs."""
        return self.topic_prefix

    def routing_secret(self) -> bytes:
        """The key of the routing header's HMAC (:mod:`dmp_faust.domain.routing`).

        ``DMP_CLUSTER_SECRET`` when set. Else derived from ``DMP_API_TOKEN``,
        which every worker of a cluster already shares, so a cluster with a
        token is protected without a second secret. Else derived from the app
        id: the same on every worker, so routing works out of the box, but no
        secret (and without a token every route is open anyway).
        """
        if self.cluster_secret is not None:
            return self.cluster_secret.encode()
        if self.api_token is not None:
            return derive_secret("token:" + self.api_token)
        return derive_secret("app:" + self.app_id)

    def topic(self, name: str) -> str:
        """Full name of one of the app's topics, e.g. ``topic("events.raw")``."""
        return f"{self.topic_prefix}.{name}"

    @property
    def isolation_level(self) -> str:
        """What the project's own consumers read: under exactly-once, committed records only."""
        committed = self.processing_guarantee == "exactly_once"
        return "read_committed" if committed else "read_uncommitted"

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{host}" for host in self.kafka_bootstrap.split(","))

    def logging_config(self) -> dict[str, Any]:
        """Faust's ``logging_config``: its own, plus the filter that keeps record bytes
        and SASL secrets out of the debug log (:mod:`dmp_faust.redaction`)."""
        from dmp_faust.redaction import logging_config

        return logging_config()

    def kafka_auth(self) -> dict[str, Any]:
        """Security arguments of every aiokafka client (producer, consumer, admin).

        The one source of the connection's security: the Faust app's
        credentials (:meth:`faust_credentials`) are built from it, and the
        provisioning admin client and the generator pass it as is.
        """
        if self.kafka_security_protocol == "PLAINTEXT":
            return {"security_protocol": "PLAINTEXT"}
        auth: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            auth["ssl_context"] = self.kafka_ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            auth.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        return auth

    def faust_credentials(self) -> CredentialsT | None:
        """``broker_credentials`` of the Faust app (None: PLAINTEXT). Faust hands them to
        its consumer, producer and topic creation as :meth:`kafka_auth`'s arguments."""
        from faust.auth import SASLCredentials, SSLCredentials

        auth = self.kafka_auth()
        if auth["security_protocol"] == "SSL":
            return SSLCredentials(auth["ssl_context"])
        if auth["security_protocol"].startswith("SASL_"):
            return SASLCredentials(
                username=auth["sasl_plain_username"],
                password=auth["sasl_plain_password"],
                ssl_context=auth.get("ssl_context"),
                mechanism=auth["sasl_mechanism"],
            )
        return None

    def kafka_ssl_context(self) -> ssl.SSLContext:
        """TLS context verifying the broker (system CAs unless ``DMP_KAFKA_SSL_CAFILE``)
        and presenting a client certificate when one is configured."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            if self.kafka_ssl_cafile is not None:
                context.load_verify_locations(cafile=str(self.kafka_ssl_cafile))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"DMP_KAFKA_SSL_CAFILE={self.kafka_ssl_cafile}: {exc}") from None
        try:
            if self.kafka_ssl_certfile is not None:
                context.load_cert_chain(
                    str(self.kafka_ssl_certfile),
                    str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                    self.kafka_ssl_key_password,
                )
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"DMP_KAFKA_SSL_CERTFILE={self.kafka_ssl_certfile} / DMP_KAFKA_SSL_KEYFILE="
                f"{self.kafka_ssl_keyfile}: {exc}"
            ) from None
        return context


def _alert_settings(number: Callable[..., int], real: Callable[..., float]) -> AlertSettings:
    """The detector's knobs from ``DMP_ALERT_*`` (see :class:`AlertSettings`)."""
    base = AlertSettings()
    try:
        return AlertSettings(
            alpha=real("DMP_ALERT_ALPHA", base.alpha, 1e-12, 0.5),
            open_after=number("DMP_ALERT_OPEN_AFTER", base.open_after, 1, 1440),
            resolve_after=number("DMP_ALERT_RESOLVE_AFTER", base.resolve_after, 1, 1440),
            shift_after=number("DMP_ALERT_SHIFT_AFTER", base.shift_after, 1, 10080),
            warmup_windows=number("DMP_ALERT_WARMUP_WINDOWS", base.warmup_windows, 1),
            min_expected=real("DMP_ALERT_MIN_EXPECTED", base.min_expected, 0, 1e9),
            half_life_windows=real("DMP_ALERT_HALF_LIFE_WINDOWS", base.half_life_windows, 1, 1e6),
            dispersion_threshold=real(
                "DMP_ALERT_DISPERSION_THRESHOLD", base.dispersion_threshold, 1, 1e6
            ),
            season_after_windows=number(
                "DMP_ALERT_SEASON_AFTER_WINDOWS", base.season_after_windows, 1
            ),
            ctr_min_impressions=number(
                "DMP_ALERT_CTR_MIN_IMPRESSIONS", base.ctr_min_impressions, 1
            ),
        )
    except ValueError as exc:  # a combination: name the variables, not the fields
        message = str(exc)
        for name in sorted(AlertSettings.__dataclass_fields__, key=len, reverse=True):
            message = message.replace(name, f"DMP_ALERT_{name.upper()}")
        raise SettingsError(message.replace("DMP_ALERT_DMP_ALERT_", "DMP_ALERT_")) from None


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise SettingsError(f"{name}={raw!r}: expected 1 or 0 (true/false, on/off)")
    return raw in ("1", "true", "yes", "on")


def _kafka_security(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``kafka_*`` security fields, refusing combinations that cannot be meant.

    Credentials or key files next to a protocol that does not use them are an
    error rather than ignored: the connection would silently go without them.
    """

    def text(name: str) -> str | None:
        return env.get(name, "").strip() or None

    protocol = (text("DMP_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise SettingsError(
            f"DMP_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
            + ", ".join(SECURITY_PROTOCOLS)
        )
    mechanism = (text("DMP_KAFKA_SASL_MECHANISM") or "PLAIN").upper()
    if mechanism not in SASL_MECHANISMS:
        raise SettingsError(
            f"DMP_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of " + ", ".join(SASL_MECHANISMS)
        )
    # The password is taken as given (no strip): spaces may be part of it.
    password = env.get("DMP_KAFKA_SASL_PASSWORD") or None
    found = {
        "kafka_sasl_username": text("DMP_KAFKA_SASL_USERNAME"),
        "kafka_sasl_password": password,
        "kafka_ssl_cafile": text("DMP_KAFKA_SSL_CAFILE"),
        "kafka_ssl_certfile": text("DMP_KAFKA_SSL_CERTFILE"),
        "kafka_ssl_keyfile": text("DMP_KAFKA_SSL_KEYFILE"),
        "kafka_ssl_key_password": env.get("DMP_KAFKA_SSL_KEY_PASSWORD") or None,
    }
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    unused = [
        f"DMP_{name.upper()}"
        for name, value in found.items()
        if value is not None and not (sasl if "sasl" in name else tls)
    ]
    if text("DMP_KAFKA_SASL_MECHANISM") and not sasl:
        unused.insert(0, "DMP_KAFKA_SASL_MECHANISM")
    if unused:
        raise SettingsError(
            f"{', '.join(unused)} set, but DMP_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
            + ("SASL" if any("SASL" in name for name in unused) else "TLS")
            + " (SASL needs SASL_PLAINTEXT or SASL_SSL; TLS files need SSL or SASL_SSL)"
        )
    if sasl and not (found["kafka_sasl_username"] and password):
        raise SettingsError(
            f"DMP_KAFKA_SECURITY_PROTOCOL={protocol} needs DMP_KAFKA_SASL_USERNAME and "
            "DMP_KAFKA_SASL_PASSWORD"
        )
    if (found["kafka_ssl_keyfile"] or found["kafka_ssl_key_password"]) and not found[
        "kafka_ssl_certfile"
    ]:
        raise SettingsError(
            "DMP_KAFKA_SSL_KEYFILE and DMP_KAFKA_SSL_KEY_PASSWORD need DMP_KAFKA_SSL_CERTFILE "
            "(the client certificate they belong to)"
        )
    paths = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    return {
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        **{
            name: Path(value) if name in paths and value else value for name, value in found.items()
        },
    }
