"""Settings: the contract's defaults, one field per DMP_* variable, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dmp_faust.settings import Settings, SettingsError


def test_defaults_are_the_contracts_table() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.topic_prefix == "dmp"
    assert settings.partitions == 8
    assert settings.web_port == 6066
    assert settings.data_dir == Path("./var")
    assert settings.api_token is None
    assert settings.processing_guarantee == "at_least_once"
    assert settings.segments_file is None


def test_defaults_of_the_limits_and_horizons() -> None:
    settings = Settings.from_env({})
    assert settings.max_event_bytes == 64 * 1024
    assert settings.max_batch_events == 500
    assert settings.future_tolerance_ms == 5 * 60_000
    assert settings.dedup_horizon_ms == 24 * 3_600_000
    assert settings.retention_ms == 24 * 3_600_000
    assert settings.window_ms == 60_000
    assert settings.default_range_ms == 3_600_000


def test_blank_variables_mean_the_default() -> None:
    blank = {
        name: "  "
        for name in (
            "DMP_KAFKA_BOOTSTRAP",
            "DMP_TOPIC_PREFIX",
            "DMP_PARTITIONS",
            "DMP_WEB_PORT",
            "DMP_DATA_DIR",
            "DMP_PROCESSING_GUARANTEE",
            "DMP_SEGMENTS_FILE",
        )
    }
    assert Settings.from_env(blank) == Settings.from_env({})
    assert Settings.from_env({"DMP_API_TOKEN": ""}).api_token is None


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        pytest.param(
            "DMP_KAFKA_BOOTSTRAP",
            "k1:9093,k2:9093",
            "kafka_bootstrap",
            "k1:9093,k2:9093",
            id="bootstrap",
        ),
        pytest.param("DMP_TOPIC_PREFIX", "test42", "topic_prefix", "test42", id="prefix"),
        pytest.param("DMP_PARTITIONS", "3", "partitions", 3, id="partitions"),
        pytest.param("DMP_PARTITIONS", " 16 ", "partitions", 16, id="partitions-whitespace"),
        pytest.param("DMP_REPLICATION_FACTOR", "3", "replication_factor", 3, id="replication"),
        pytest.param("DMP_METRICS_CREATED", "1", "metrics_created", True, id="metrics-created"),
        pytest.param("DMP_WEB_PORT", "8080", "web_port", 8080, id="web-port"),
        pytest.param("DMP_DATA_DIR", "/srv/dmp", "data_dir", Path("/srv/dmp"), id="data-dir"),
        pytest.param("DMP_API_TOKEN", "s3cret", "api_token", "s3cret", id="api-token"),
        pytest.param(
            "DMP_PROCESSING_GUARANTEE",
            "exactly_once",
            "processing_guarantee",
            "exactly_once",
            id="exactly-once",
        ),
        pytest.param(
            "DMP_PROCESSING_GUARANTEE",
            "at_least_once",
            "processing_guarantee",
            "at_least_once",
            id="at-least-once",
        ),
        pytest.param(
            "DMP_SEGMENTS_FILE",
            "/etc/dmp/segments.yaml",
            "segments_file",
            Path("/etc/dmp/segments.yaml"),
            id="segments-file",
        ),
        pytest.param("DMP_WEB_HOST", "0.0.0.0", "web_host", "0.0.0.0", id="web-host"),
        pytest.param("DMP_LOG_LEVEL", "debug", "log_level", "debug", id="log-level"),
        pytest.param(
            "DMP_COLLECT_MAX_BYTES", "1048576", "max_body_bytes", 1_048_576, id="collect-max-bytes"
        ),
        pytest.param(
            "DMP_DEDUP_HORIZON_MS", "3600000", "dedup_horizon_ms", 3_600_000, id="dedup-horizon"
        ),
        pytest.param("DMP_RETENTION_MS", "7200000", "retention_ms", 7_200_000, id="retention"),
        pytest.param("DMP_SESSION_TIMEOUT_S", "30", "session_timeout_s", 30, id="session-timeout"),
        pytest.param("DMP_ALERT_SETTLE_S", "30", "alert_settle_ms", 30_000, id="alert-settle"),
        pytest.param(
            "DMP_ALERT_MAX_CAMPAIGNS", "50", "alert_max_campaigns", 50, id="alert-max-campaigns"
        ),
        pytest.param("DMP_ALERT_CAPACITY_RHO", "0.9", "alert_capacity_rho", 0.9, id="alert-rho"),
        pytest.param(
            "DMP_ALERT_CAPACITY_FOR_S", "120", "alert_capacity_for_s", 120, id="alert-rho-for"
        ),
        pytest.param(
            "DMP_HISTORY_URI",
            "s3://bucket/history",
            "history_uri",
            "s3://bucket/history",
            id="history-uri",
        ),
        pytest.param("DMP_HISTORY_FLUSH_S", "5", "history_flush_s", 5, id="history-flush"),
        pytest.param("DMP_HISTORY_ERASE_S", "600", "history_erase_s", 600, id="history-erase"),
        pytest.param("DMP_HISTORY_ENABLED", "0", "history_enabled", False, id="history-off"),
    ],
)
def test_each_variable_sets_its_field(variable: str, value: str, field: str, expected: Any) -> None:
    settings = Settings.from_env({variable: value})
    assert getattr(settings, field) == expected
    assert getattr(Settings.from_env({}), field) != expected or variable.endswith("GUARANTEE")
    others = {name: getattr(settings, name) for name in Settings.__dataclass_fields__}
    defaults = {name: getattr(Settings(), name) for name in Settings.__dataclass_fields__}
    del others[field], defaults[field]
    assert others == defaults, "one variable changes one field"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("DMP_PARTITIONS", "eight", id="partitions-word"),
        pytest.param("DMP_PARTITIONS", "8.0", id="partitions-float"),
        pytest.param("DMP_PARTITIONS", "0", id="partitions-zero"),
        pytest.param("DMP_PARTITIONS", "-1", id="partitions-negative"),
        pytest.param("DMP_REPLICATION_FACTOR", "0", id="replication-zero"),
        pytest.param("DMP_REPLICATION_FACTOR", "17", id="replication-over-16"),
        pytest.param("DMP_REPLICATION_FACTOR", "three", id="replication-word"),
        pytest.param("DMP_WEB_PORT", "http", id="port-word"),
        pytest.param("DMP_WEB_PORT", "0", id="port-zero"),
        pytest.param("DMP_WEB_PORT", "65536", id="port-over-65535"),
        pytest.param("DMP_COLLECT_MAX_BYTES", "1k", id="max-bytes-suffix"),
        pytest.param("DMP_COLLECT_MAX_BYTES", "1000", id="max-bytes-below-an-event"),
        pytest.param("DMP_DEDUP_HORIZON_MS", "1d", id="horizon-suffix"),
        pytest.param("DMP_RETENTION_MS", "1000", id="retention-below-a-window"),
        pytest.param("DMP_SESSION_TIMEOUT_S", "5", id="session-timeout-below-6s"),
        pytest.param("DMP_PROCESSING_GUARANTEE", "exactly-once", id="guarantee-dash"),
        pytest.param("DMP_PROCESSING_GUARANTEE", "EXACTLY_ONCE", id="guarantee-upper"),
        pytest.param("DMP_PROCESSING_GUARANTEE", "at_most_once", id="guarantee-unknown"),
        pytest.param("DMP_ALERT_ALPHA", "0.6", id="alert-alpha-past-a-half"),
        pytest.param("DMP_ALERT_ALPHA", "one", id="alert-alpha-word"),
        pytest.param("DMP_ALERT_OPEN_AFTER", "0", id="alert-open-after-zero"),
        pytest.param("DMP_ALERT_SETTLE_S", "-1", id="alert-settle-negative"),
        pytest.param("DMP_ALERT_MIN_EXPECTED", "-0.5", id="alert-min-expected-negative"),
        pytest.param("DMP_ALERT_CAPACITY_RHO", "0", id="alert-rho-zero"),
        pytest.param("DMP_HISTORY_FLUSH_S", "0", id="history-flush-zero"),
        pytest.param("DMP_HISTORY_FLUSH_S", "86401", id="history-flush-past-a-day"),
        pytest.param("DMP_HISTORY_FLUSH_S", "1.5", id="history-flush-float"),
        pytest.param("DMP_HISTORY_FLUSH_S", "1m", id="history-flush-suffix"),
        pytest.param("DMP_HISTORY_ERASE_S", "9", id="history-erase-below-10s"),
        pytest.param("DMP_HISTORY_ERASE_S", "2592001", id="history-erase-past-30-days"),
        pytest.param("DMP_HISTORY_ERASE_S", "hourly", id="history-erase-word"),
        pytest.param("DMP_HISTORY_ENABLED", "maybe", id="history-enabled-word"),
        pytest.param("DMP_HISTORY_ENABLED", "2", id="history-enabled-two"),
    ],
)
def test_bad_values_raise_settings_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: value})
    assert variable in str(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        pytest.param("DMP_PARTITIONS", "1025", "1024", id="partitions-past-the-watermarks"),
        pytest.param("DMP_PARTITIONS", "70000", "source partition", id="partitions-past-16-bits"),
        pytest.param("DMP_DEDUP_HORIZON_MS", "1", "re-sent", id="horizon-1ms"),
        pytest.param("DMP_DEDUP_HORIZON_MS", "59999", "60000", id="horizon-below-a-minute"),
    ],
)
def test_limits_the_encodings_rely_on_are_refused_at_start_saying_why(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: value})
    assert f"{variable}={value}" in str(raised.value)
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        pytest.param("DMP_PARTITIONS", "1024", "partitions", id="partitions-at-the-limit"),
        pytest.param("DMP_DEDUP_HORIZON_MS", "60000", "dedup_horizon_ms", id="horizon-a-minute"),
        pytest.param("DMP_HISTORY_FLUSH_S", "1", "history_flush_s", id="history-flush-1s"),
        pytest.param("DMP_HISTORY_FLUSH_S", "86400", "history_flush_s", id="history-flush-a-day"),
        pytest.param("DMP_HISTORY_ERASE_S", "10", "history_erase_s", id="history-erase-10s"),
        pytest.param(
            "DMP_HISTORY_ERASE_S", "2592000", "history_erase_s", id="history-erase-30-days"
        ),
    ],
)
def test_the_limits_themselves_are_accepted(variable: str, value: str, field: str) -> None:
    assert getattr(Settings.from_env({variable: value}), field) == int(value)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMP_TOPIC_PREFIX", "from-environ")
    monkeypatch.setenv("DMP_PARTITIONS", "2")
    settings = Settings.from_env()
    assert (settings.topic_prefix, settings.partitions) == ("from-environ", 2)


@pytest.mark.parametrize(
    ("bootstrap", "broker_url"),
    [
        pytest.param("localhost:9092", "kafka://localhost:9092", id="one"),
        pytest.param("k1:9092,k2:9093", "kafka://k1:9092;kafka://k2:9093", id="two"),
    ],
)
def test_broker_url(bootstrap: str, broker_url: str) -> None:
    assert Settings.from_env({"DMP_KAFKA_BOOTSTRAP": bootstrap}).broker_url == broker_url


def test_topic_names_and_app_id_follow_the_prefix() -> None:
    settings = Settings.from_env({"DMP_TOPIC_PREFIX": "acme"})
    assert settings.topic("events.raw") == "acme.events.raw"
    assert settings.topic("events.dlq") == "acme.events.dlq"
    assert settings.app_id == "acme"
    assert Settings.from_env({}).topic("segments.changes") == "dmp.segments.changes"


@pytest.mark.parametrize("value", [" ", "\t\n"], ids=["space", "tab-newline"])
def test_blank_api_token_leaves_the_views_open(value: str) -> None:
    """Like every other variable, a blank token means unset: no client could send a
    whitespace-only bearer token (HTTP trims header values), so every view would 401."""
    assert Settings.from_env({"DMP_API_TOKEN": value}).api_token is None


# --- Kafka security (docs/SECURITY.md) ---------------------------------------

SASL = {"DMP_KAFKA_SASL_USERNAME": "dmp", "DMP_KAFKA_SASL_PASSWORD": "s3cret pw"}


def test_kafka_security_defaults_to_plaintext() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_auth() == {"security_protocol": "PLAINTEXT"}
    assert settings.faust_credentials() is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_settings_reach_aiokafka_and_faust_alike(mechanism: str) -> None:
    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    env = {"DMP_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "DMP_KAFKA_SASL_MECHANISM": mechanism}
    settings = Settings.from_env(env | SASL)
    auth = settings.kafka_auth()
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism.upper(),
        "sasl_plain_username": "dmp",
        "sasl_plain_password": "s3cret pw",  # as given: not stripped
    }
    credentials = settings.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials) == {**auth, "ssl_context": None}


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_settings_build_a_verifying_context(protocol: str) -> None:
    import ssl

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    env = {"DMP_KAFKA_SECURITY_PROTOCOL": protocol}
    settings = Settings.from_env(env | (SASL if protocol == "SASL_SSL" else {}))
    auth = settings.kafka_auth()
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert auth["security_protocol"] == protocol
    from_faust = credentials_to_aiokafka_auth(settings.faust_credentials())
    assert {k: v for k, v in from_faust.items() if v is not None and k != "ssl_context"} == {
        k: v for k, v in auth.items() if k != "ssl_context"
    }
    assert isinstance(from_faust["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param(
            {"DMP_KAFKA_SECURITY_PROTOCOL": "TLS"}, "DMP_KAFKA_SECURITY_PROTOCOL", id="tls"
        ),
        pytest.param(
            {"DMP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DMP_KAFKA_SASL_USERNAME": "dmp"},
            "DMP_KAFKA_SASL_PASSWORD",
            id="sasl-without-password",
        ),
        pytest.param(
            {"DMP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DMP_KAFKA_SASL_PASSWORD": "x"},
            "DMP_KAFKA_SASL_USERNAME",
            id="sasl-without-username",
        ),
        pytest.param(
            {
                "DMP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "DMP_KAFKA_SASL_MECHANISM": "GSSAPI",
                **SASL,
            },
            "DMP_KAFKA_SASL_MECHANISM",
            id="mechanism-unsupported",
        ),
        pytest.param(SASL, "DMP_KAFKA_SASL_USERNAME", id="credentials-on-plaintext"),
        pytest.param(
            {"DMP_KAFKA_SASL_MECHANISM": "PLAIN"}, "DMP_KAFKA_SASL_MECHANISM", id="mechanism-only"
        ),
        pytest.param(
            {
                "DMP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "DMP_KAFKA_SSL_CAFILE": "/ca",
                **SASL,
            },
            "DMP_KAFKA_SSL_CAFILE",
            id="tls-file-without-tls",
        ),
        pytest.param(
            {"DMP_KAFKA_SECURITY_PROTOCOL": "SSL", "DMP_KAFKA_SSL_KEYFILE": "/k.pem"},
            "DMP_KAFKA_SSL_CERTFILE",
            id="key-without-certificate",
        ),
    ],
)
def test_bad_kafka_security_combinations_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert named in str(raised.value)


def test_unreadable_tls_files_name_their_variable(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", not_pem):
        env = {"DMP_KAFKA_SECURITY_PROTOCOL": "SSL", "DMP_KAFKA_SSL_CAFILE": str(path)}
        with pytest.raises(SettingsError, match="DMP_KAFKA_SSL_CAFILE"):
            Settings.from_env(env).kafka_auth()
    env = {"DMP_KAFKA_SECURITY_PROTOCOL": "SSL", "DMP_KAFKA_SSL_CERTFILE": str(not_pem)}
    with pytest.raises(SettingsError, match="DMP_KAFKA_SSL_CERTFILE"):
        Settings.from_env(env).kafka_auth()


def test_secrets_stay_out_of_repr() -> None:
    env = {
        "DMP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "DMP_KAFKA_SSL_CERTFILE": "/c.pem",
        "DMP_KAFKA_SSL_KEY_PASSWORD": "key-pw-42",
        "DMP_API_TOKEN": "token-42",
        **SASL,
    }
    settings = Settings.from_env(env)
    assert settings.kafka_sasl_password == "s3cret pw"
    assert settings.kafka_ssl_key_password == "key-pw-42"
    text = repr(settings)
    assert "kafka_sasl_username='dmp'" in text
    assert not [secret for secret in ("s3cret", "key-pw-42", "token-42") if secret in text]


def test_connection_errors_name_the_user_never_the_password() -> None:
    from dmp_faust.provision import _identity

    auth = Settings.from_env({"DMP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", **SASL}).kafka_auth()
    assert _identity(auth) == " (SASL PLAIN as user 'dmp')"
    assert _identity({"security_protocol": "SSL"}) == ""


def test_debug_log_lines_lose_record_bytes_and_sasl_messages() -> None:
    import logging
    import logging.config

    from aiokafka.protocol.admin import SaslAuthenticateRequest_v1

    from dmp_faust.redaction import REDACTED_LOGGERS, RedactFilter

    record = logging.LogRecord(
        "aiokafka.producer.producer", logging.DEBUG, __file__, 1,
        "Sending (key=%s value=%s) to %s", (b"k-1", b'{"ip": "198.51.100.7"}', "tp"), None,
    )  # fmt: skip
    assert RedactFilter().filter(record) is True
    assert record.getMessage() == "Sending (key=<3 bytes> value=<22 bytes>) to tp"
    sasl = SaslAuthenticateRequest_v1(b"\0dmp\0s3cret pw")
    record = logging.LogRecord("aiokafka.conn", logging.DEBUG, __file__, 1, "%s", (sasl,), None)
    RedactFilter().filter(record)
    assert "s3cret" not in record.getMessage() and "redacted" in record.getMessage()
    config = Settings.from_env({}).logging_config()
    assert set(config["loggers"]) == set(REDACTED_LOGGERS) and config["merge"] is True


@pytest.mark.parametrize(
    ("given", "faust_level"),
    [("warning", "warn"), ("WARN", "warn"), ("Debug", "debug"), ("error", "error")],
)
def test_log_level_is_given_to_faust_in_its_own_spelling(given: str, faust_level: str) -> None:
    assert Settings.from_env({"DMP_LOG_LEVEL": given}).log_level == faust_level


def test_an_unknown_log_level_stops_the_worker_with_a_message() -> None:
    with pytest.raises(SettingsError, match="DMP_LOG_LEVEL='loud'"):
        Settings.from_env({"DMP_LOG_LEVEL": "loud"})


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("DMP_ALERT_ALPHA", "0.01", "alpha", 0.01),
        ("DMP_ALERT_OPEN_AFTER", "3", "open_after", 3),
        ("DMP_ALERT_RESOLVE_AFTER", "5", "resolve_after", 5),
        ("DMP_ALERT_SHIFT_AFTER", "30", "shift_after", 30),
        ("DMP_ALERT_WARMUP_WINDOWS", "120", "warmup_windows", 120),
        ("DMP_ALERT_MIN_EXPECTED", "2.5", "min_expected", 2.5),
        ("DMP_ALERT_HALF_LIFE_WINDOWS", "30", "half_life_windows", 30.0),
        ("DMP_ALERT_DISPERSION_THRESHOLD", "1.5", "dispersion_threshold", 1.5),
        ("DMP_ALERT_SEASON_AFTER_WINDOWS", "20160", "season_after_windows", 20160),
        ("DMP_ALERT_CTR_MIN_IMPRESSIONS", "100", "ctr_min_impressions", 100),
    ],
)
def test_each_alert_variable_sets_its_knob(
    variable: str, value: str, field: str, expected: Any
) -> None:
    alerts = Settings.from_env({variable: value}).alerts
    assert getattr(alerts, field) == expected
    assert getattr(Settings().alerts, field) != expected


def test_alert_knobs_that_do_not_go_together_are_refused_by_their_names() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"DMP_ALERT_OPEN_AFTER": "5", "DMP_ALERT_SHIFT_AFTER": "3"})
    assert "DMP_ALERT_SHIFT_AFTER" in str(raised.value)
    assert "DMP_ALERT_OPEN_AFTER" in str(raised.value)


# --- the Parquet history (DMP_HISTORY_*) ---------------------------------------------


def test_history_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.history_uri is None
    assert (settings.history_flush_s, settings.history_erase_s) == (60, 3600)
    assert settings.history_enabled is True
    assert settings.history_root == str(Path("./var") / "history")
    blank = {
        name: " "
        for name in (
            "DMP_HISTORY_URI",
            "DMP_HISTORY_FLUSH_S",
            "DMP_HISTORY_ERASE_S",
            "DMP_HISTORY_ENABLED",
        )
    }
    assert Settings.from_env(blank) == settings


def test_history_root_is_the_uri_else_under_the_data_dir() -> None:
    assert Settings.from_env({"DMP_DATA_DIR": "/srv/dmp"}).history_root == "/srv/dmp/history"
    env = {"DMP_DATA_DIR": "/srv/dmp", "DMP_HISTORY_URI": " s3://bucket/dmp/history "}
    assert Settings.from_env(env).history_root == "s3://bucket/dmp/history"
    local = Settings.from_env({"DMP_HISTORY_URI": "/mnt/history"})
    assert local.history_root == "/mnt/history"


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        *((value, True) for value in ("1", "true", "yes", "on", " ON ", "True")),
        *((value, False) for value in ("0", "false", "no", "off", "OFF", " No ")),
    ],
)
def test_history_enabled_switch(value: str, enabled: bool) -> None:
    assert Settings.from_env({"DMP_HISTORY_ENABLED": value}).history_enabled is enabled
