"""The Parquet history: every accepted event, stored once, queryable with SQL.

:mod:`.schema` (layout and columns), :mod:`.files` (where the files live),
:mod:`.sink` (what the worker writes), :mod:`.query` (DuckDB over the files),
:mod:`.compact` (merging small files, erasing rows).
"""
