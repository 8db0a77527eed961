"""Profiles and identity links. Key: an id (canonical, or a linked anonymous id);
value: :class:`dmp_faust.domain.profiles.Profile` as msgpack. A record with
``merged_into`` set is an anonymous id's link to its user. Partitioned like
``profiles.in`` (by the id)."""

from __future__ import annotations

from dmp_faust.app import TABLE_OPTIONS, app

profiles = app.Table("profiles", key_type=bytes, value_type=bytes, options=TABLE_OPTIONS)
