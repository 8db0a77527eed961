"""The status of the latest erasures ``DELETE /profiles/{id}`` started: at most
``MAX_ERASURE_STATUSES`` per partition, the oldest evicted (see
:mod:`dmp_faust.domain.erasure_status`, which also keeps its ``#log`` and ``#seq``
keys here). Key: the erasure id (str, utf-8); value:
:class:`dmp_faust.domain.identity.ErasureState` as msgpack (``erasing`` or
``erased``, and the hashed ids it covers; no id in the clear).
Partitioned like ``profiles.in`` by the erasure id, which the view draws so that it
falls on the partition of the id it erases (see ``dmp_faust/views/audience.py``)."""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

erasure_status = app.Table(
    "erasure_status", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS
)
