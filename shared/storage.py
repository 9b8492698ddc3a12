"""Object storage through fsspec, shared by the gateway and the workers.

>>> storage = Storage("file:///srv/smi/storage")     # or s3://bucket/prefix with s3fs
>>> storage.put("jobs/job_x/source.jpg", data)
>>> storage.get("jobs/job_x/source.jpg") == data
True

Keys are part of the wire contract, made here only: the gateway writes
``source_key_for(job, ext)`` and names ``result_key_for(job)`` in each
``UpscaleRequest``; a worker reads the one and writes the other. Neither
side knows the other's URLs or database.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHUNK_BYTES = 1024 * 1024


def source_key_for(digest: str, extension: str) -> str:
    """Where a sold image is kept (``jpg``, ``png`` or ``webp``): once by its content's
    sha256, for every job that bought it."""
    return f"sources/{digest}.{extension}"


def result_key_for(job_id: str) -> str:
    """Where a job's upscaled result goes."""
    return f"jobs/{job_id}/result.png"


def preview_prefix_for(preview_id: str) -> str:
    """Where a preview's ``meta.json``, ``before.png`` and ``after.png`` are kept."""
    return f"previews/{preview_id}"


def preview_source_key_for(digest: str, extension: str) -> str:
    """A previewed image, stored once by its content's sha256 (shared by all its previews)."""
    return f"previews/sources/{digest}.{extension}"


def default_storage_url(data_dir: Path) -> str:
    """The embedded default: a local folder under the data directory."""
    return f"file://{(data_dir / 'storage').resolve()}"


class Storage:
    """Keys (``a/b/c.png``) under one root URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return posixpath.join(self.root, key)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``; readers never see a partial object."""
        target = self.path(key)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        temporary = f"{target}.{secrets.token_hex(4)}.part"
        with self.fs.open(temporary, "wb") as fh:
            fh.write(data)
        self.fs.mv(temporary, target)

    def get(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""
        with self.fs.open(self.path(key), "rb") as fh:
            return bytes(fh.read())

    def delete(self, key: str) -> bool:
        """Remove the object; ``False`` when there was none (deleting twice is fine)."""
        try:
            self.fs.rm(self.path(key))
        except FileNotFoundError:
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder), sorted; none when there is no such folder."""
        try:
            found = self.fs.find(self.path(prefix))
        except FileNotFoundError:
            return []
        return sorted(posixpath.relpath(path, self.root) for path in found)

    def older_than(self, prefix: str, age_s: float) -> list[str]:
        """Keys under ``prefix`` last written more than ``age_s`` seconds ago."""
        root = self.path(prefix)
        try:
            found = self.fs.find(root, detail=True)
        except FileNotFoundError:
            return []
        cutoff = time.time() - age_s
        keys = []
        for path, info in found.items():
            written = info.get("mtime") or info.get("LastModified") or info.get("created")
            stamp = written.timestamp() if hasattr(written, "timestamp") else float(written or 0)
            if stamp and stamp < cutoff:
                keys.append(posixpath.relpath(path, self.root))
        return sorted(keys)

    def check(self) -> None:
        """Write, read back and delete a small object; raises ``OSError`` when storage fails."""
        key = f"health/{secrets.token_hex(8)}"
        try:
            self.put(key, b"ok")
            if self.get(key) != b"ok":
                raise OSError("storage returned other bytes than were written")
        finally:
            with contextlib.suppress(Exception):
                self.delete(key)

    def free_bytes(self) -> int | None:
        """Free space where a local folder's objects go; ``None`` for an object store (its
        room is the provider's)."""
        if not isinstance(self.fs, LocalFileSystem):
            return None
        return shutil.disk_usage(self.root).free

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self.path(key)))

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def iter_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The object in chunks, for streaming it without holding it in memory."""
        with self.fs.open(self.path(key), "rb") as fh:
            while chunk := fh.read(chunk_bytes):
                yield bytes(chunk)
