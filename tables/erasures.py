"""What erasure leaves behind: no personal data, only the erased record's
source watermarks, under a hash of the id (see :mod:`dmp_faust.domain.identity`).
Key: :func:`dmp_faust.domain.identity.erasure_key`; value: watermarks bytes.
Partitioned like ``profiles.in`` (by the erased id)."""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

erasures = app.Table("erasures", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS)
