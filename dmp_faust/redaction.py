"""What the worker's log must never hold: message contents and Kafka credentials.

At ``DMP_LOG_LEVEL=debug`` Faust and aiokafka log every record they send
(key and value bytes: a raw event sent by ``POST /collect`` holds a whole IP
address) and every request to the broker (the SASL authenticate request
holds the password). :class:`RedactFilter` is attached to exactly the
loggers that do so, through Faust's ``logging_config`` setting (see
:meth:`dmp_faust.settings.Settings.logging_config`), and replaces those
arguments with their size or type before the message is formatted. The
lines stay, so the debug log still tells what was sent where.
"""

from __future__ import annotations

import logging
from typing import Any, Final

#: Loggers whose debug lines carry record bytes or authentication requests.
REDACTED_LOGGERS: Final = (
    "aiokafka.conn",  # "Request to ...: SaslAuthenticateRequest_v1(sasl_auth_bytes=...)"
    "aiokafka.producer.producer",  # "Sending (key=... value=...) to ..."
    "faust.topics",  # "send: topic=... k=... v=..."
    "faust.transport.drivers.aiokafka",  # the same, from the transactional producer
)


def redact(arg: Any) -> Any:
    """A log argument as it may be written: bytes by their size, SASL messages by type."""
    if isinstance(arg, bytes | bytearray | memoryview):
        return f"<{len(arg)} bytes>"
    name = type(arg).__name__
    if name.startswith("Sasl"):
        return f"<{name}: redacted>"
    return arg


class RedactFilter(logging.Filter):
    """Rewrites a record's arguments with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) for arg in record.args)
        return True


def logging_config() -> dict[str, Any]:
    """Faust's ``logging_config``: its own configuration (``merge``) plus the filter."""
    return {
        "version": 1,
        "merge": True,
        "filters": {"redact": {"()": f"{__name__}.RedactFilter"}},
        "loggers": {name: {"filters": ["redact"]} for name in REDACTED_LOGGERS},
    }
