"""Where the history's files live: a local directory or any pyarrow filesystem.

A file is written whole or not at all. On a local disk: into a hidden
temporary file beside it, flushed and fsynced, then renamed over the final
name, and the directory fsynced, so a crash leaves either the old file or the
new one. On an object store (``s3://…``) a single PUT is already all or
nothing, so the file is written straight to its name.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

TEMP_SUFFIX: Final = ".tmp"
COMPRESSION: Final = "zstd"
ROW_GROUP_ROWS: Final = 128 * 1024


class Storage:
    """The files under one history root, by paths relative to it (``/``-separated)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri and not uri.startswith("file://"):
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.local: Path | None = None
        else:
            self.local = Path(uri.removeprefix("file://")).resolve()
            self.fs, self.root = pafs.LocalFileSystem(), str(self.local)

    def list(self, under: str) -> list[str]:
        """Every file below ``under`` (relative paths, sorted); none if it does not exist."""
        return sorted(self.listing(under))

    def listing(self, under: str) -> dict[str, int]:
        """Every file below ``under``, with its modification time (epoch ns)."""
        base = f"{self.root}/{under}".rstrip("/")
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        prefix = len(self.root) + 1
        return {
            info.path[prefix:]: info.mtime_ns or 0
            for info in self.fs.get_file_info(selector)
            if info.is_file
        }

    def mtime(self, path: str) -> int | None:
        """A file's modification time (epoch ns), or None when it does not exist."""
        info = self.fs.get_file_info(f"{self.root}/{path}")
        return info.mtime_ns if info.is_file else None

    def read(self, path: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(f"{self.root}/{path}") as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            return None

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(f"{self.root}/{path}", columns=columns, filesystem=self.fs)

    def write(self, path: str, data: bytes) -> None:
        """Put ``data`` at ``path``, whole or not at all."""
        if self.local is None:
            self.fs.create_dir(f"{self.root}/{path.rpartition('/')[0]}", recursive=True)
            with self.fs.open_output_stream(f"{self.root}/{path}") as stream:
                stream.write(data)
            return
        final = self.local / path
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, final)
        _fsync_dir(final.parent)

    def write_table(self, path: str, table: pa.Table) -> int:
        """Write ``table`` as Parquet at ``path`` (see :meth:`write`); its size in bytes."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
        data = buffer.getvalue()
        self.write(path, data)
        return len(data)

    def delete(self, path: str) -> None:
        """Remove a file; one already gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(f"{self.root}/{path}")

    def remove_temporaries(self, under: str, prefix: str = "", unless: str | None = None) -> int:
        """Delete what an interrupted :meth:`write` left below ``under`` (local disks
        only): hidden temporary files whose final name starts with ``prefix`` (and does
        not hold ``unless``)."""
        if self.local is None:
            return 0
        removed = 0
        for path in self.list(under):
            name = path.rpartition("/")[2]
            if unless is not None and unless in name:
                continue
            if name.startswith(f".{prefix}") and name.endswith(TEMP_SUFFIX):
                self.delete(path)
                removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
