"""Object storage through fsspec, shared by the gateway and the workers.

>>> storage = Storage("file:///srv/smi/storage")     # or s3://bucket/prefix with s3fs
>>> storage.put("jobs/job_x/source.jpg", data)
>>> storage.get("jobs/job_x/source.jpg") == data
True

Keys are part of the wire contract, made here only: the gateway writes
``source_key_for(job, ext)`` and names ``result_key_for(job)`` in each
``UpscaleRequest``; a worker reads the one and writes the other. Neither
side knows the other's URLs or database.

On S3 (s3fs) an object is written in one request, or one multipart upload
from about 100 MB (S3 has no rename: a temporary copy moved into place would
be written twice), with its sha256 as the object's metadata; a local folder
keeps an atomic temporary file and rename. Folder listings are never cached
(s3fs would keep them for the life of the process, and this process would
then miss what other processes write there later). Reads stream in chunks:
one ranged GET on S3, never its 50 MB read-ahead blocks.

``put(key, data, replace=False)`` never writes over an object that is there
(``FileExistsError``): a worker that comes back late with a job another
worker has delivered keeps its hands off the delivered result. A local
folder links the finished file into place, which fails if one is there; S3
is asked first and the write is conditional (``If-None-Match: *``), so of
two writers at the same moment one wins where the store honours the
condition, as AWS S3 and MinIO do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.asyn import sync
from fsspec.implementations.local import LocalFileSystem

CHUNK_BYTES = 1024 * 1024
# The object's metadata entry (``x-amz-meta-sha256`` on S3) that holds its content's sha256.
SHA256_METADATA = "sha256"


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


@dataclass(frozen=True)
class StoredObject:
    """What storage says of one object.

    ``sha256`` is the digest written with it where the store keeps one (S3's
    metadata), else ``None``; ``etag`` is the store's own validator (S3's ETag);
    ``modified`` is seconds since the epoch.
    """

    size: int
    sha256: str | None = None
    etag: str | None = None
    modified: float | None = None


class Storage:
    """Keys (``a/b/c.png``) under one root URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        options: dict[str, Any] = {}
        if protocol not in ("file", "local"):
            options["use_listings_cache"] = False
        self.fs, self.root = fsspec.core.url_to_fs(url, **options)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.s3 = hasattr(self.fs, "_call_s3")  # s3fs: S3, MinIO, any S3-compatible store
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)
        self._digests: dict[tuple[str, int, float | None], str] = {}
        self._digest_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return posixpath.join(self.root, key)

    def put(self, key: str, data: bytes, *, replace: bool = True) -> StoredObject:
        """Write ``data`` under ``key``; readers never see a partial object. Returns its size
        and sha256 (on S3 also kept as the object's metadata).

        With ``replace=False`` an object already under ``key`` stays as it is and
        ``FileExistsError`` is raised (see the module)."""
        target = self.path(key)
        digest = hashlib.sha256(data).hexdigest()
        if self.local:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            temporary = f"{target}.{secrets.token_hex(4)}.part"
            with open(temporary, "wb") as fh:
                fh.write(data)
            if replace:
                os.replace(temporary, target)
            else:
                try:
                    os.link(temporary, target)  # fails when there is one: never replaces it
                finally:
                    os.unlink(temporary)
        elif self.s3:
            # One PUT, or one multipart upload: S3 shows the object whole once it completes.
            self._refuse_existing(key, replace)
            mode = "overwrite" if replace else "create"  # create: If-None-Match: *
            try:
                self.fs.pipe_file(target, data, mode=mode, Metadata={SHA256_METADATA: digest})
            except OSError as exc:
                if replace or isinstance(exc, FileExistsError):
                    raise
                # A refused condition may come back as another error (a 409 when two
                # writes raced, a store's own wording): what counts is who is there now.
                self._refuse_existing(key, replace, cause=exc)
                raise
        else:
            self._refuse_existing(key, replace)
            self.fs.pipe_file(target, data)
        return StoredObject(len(data), digest)

    def _refuse_existing(self, key: str, replace: bool, cause: BaseException | None = None) -> None:
        """``FileExistsError`` when ``replace`` is off and an object is under ``key``."""
        if not replace and self.exists(key):
            raise FileExistsError(f"{key} is stored already; not replaced") from cause

    def get(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""
        with self.fs.open(self.path(key), "rb") as fh:
            return bytes(fh.read())

    def delete(self, key: str) -> bool:
        """Remove the object; ``False`` when there was none (deleting twice is fine)."""
        path = self.path(key)
        if not self.local:
            # S3 answers a delete of any key with success: ask first.
            try:
                self.fs.info(path)
            except FileNotFoundError:
                return False
        try:
            self.fs.rm(path)
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
            stamp = _modified(info)
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

    def stat(self, key: str) -> StoredObject:
        """The object's size, stored sha256, ETag and time, in one request and without
        reading it; ``FileNotFoundError`` when there is none."""
        path = self.path(key)
        if self.local:
            found = os.stat(path)
            return StoredObject(found.st_size, None, None, found.st_mtime)
        if self.s3:
            bucket, name, _ = self.fs.split_path(path)
            head = sync(self.fs.loop, self.fs._call_s3, "head_object", Bucket=bucket, Key=name)
            metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
            return StoredObject(
                int(head["ContentLength"]),
                metadata.get(SHA256_METADATA),
                head.get("ETag"),
                _modified(head),
            )
        info = self.fs.info(path)
        return StoredObject(int(info["size"]), None, info.get("ETag"), _modified(info))

    def sha256(self, key: str, found: StoredObject | None = None) -> str:
        """The object's sha256: as stored with it, else read through once and remembered
        while its size and time stay the same (``found``: its ``stat`` already asked)."""
        found = found or self.stat(key)
        if found.sha256:
            return found.sha256
        remembered = (key, found.size, found.modified)
        with self._lock:
            lock = self._digest_locks.setdefault(key, threading.Lock())
        with lock:  # several downloads of one object at once read it through once
            if remembered not in self._digests:
                digest = hashlib.sha256()
                for chunk in self.iter_chunks(key):
                    digest.update(chunk)
                with self._lock:
                    if len(self._digests) > 4096:
                        self._digests.clear()
                    self._digests[remembered] = digest.hexdigest()
            return self._digests[remembered]

    def describe(self, key: str) -> StoredObject:
        """``stat`` with the sha256 always there (read through when the store keeps none)."""
        found = self.stat(key)
        if found.sha256:
            return found
        return StoredObject(found.size, self.sha256(key, found), found.etag, found.modified)

    def iter_chunks(
        self, key: str, start: int = 0, end: int | None = None, chunk_bytes: int = CHUNK_BYTES
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; the end of the object when ``None``) in
        chunks of at most ``chunk_bytes``: streaming it holds one chunk in memory."""
        if end is not None and end <= start:
            return
        path = self.path(key)
        if self.s3:
            yield from self._s3_chunks(path, start, end, chunk_bytes)
            return
        with self.fs.open(path, "rb", block_size=chunk_bytes, cache_type="none") as fh:
            if start:
                fh.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = fh.read(chunk_bytes if left is None else min(chunk_bytes, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield bytes(chunk)

    def _s3_chunks(
        self, path: str, start: int, end: int | None, chunk_bytes: int
    ) -> Iterator[bytes]:
        """One ranged GET, its body read a chunk at a time on s3fs's event loop."""
        bucket, name, _ = self.fs.split_path(path)
        wanted = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        kwargs: dict[str, Any] = {"Range": wanted} if start or end is not None else {}
        answer = sync(
            self.fs.loop, self.fs._call_s3, "get_object", Bucket=bucket, Key=name, **kwargs
        )
        body = answer["Body"]
        try:
            while chunk := sync(self.fs.loop, body.read, chunk_bytes):
                yield bytes(chunk)
        finally:
            body.close()

    @property
    def can_presign(self) -> bool:
        """Whether ``presigned_url`` can hand out a direct address (S3 and its kin)."""
        return self.s3

    def presigned_url(
        self, key: str, expires_s: int, filename: str | None = None, media_type: str | None = None
    ) -> str:
        """A GET address of the object at the store itself, valid ``expires_s`` seconds, that
        answers with this ``Content-Disposition`` filename and ``Content-Type``."""
        if not self.can_presign:
            raise NotImplementedError(f"{self.url.split(':', 1)[0]} storage cannot presign")
        params: dict[str, Any] = {}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        if media_type:
            params["ResponseContentType"] = media_type
        return str(self.fs.url(self.path(key), expires=expires_s, **params))


def _modified(info: dict[str, Any]) -> float | None:
    """An object's time of writing as seconds since the epoch, from what a store says."""
    written = info.get("mtime") or info.get("LastModified") or info.get("created")
    if written is None:
        return None
    return float(written.timestamp() if hasattr(written, "timestamp") else written)
