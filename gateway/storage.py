"""Object storage through fsspec: a local folder by default, any fsspec URL in production.

>>> storage = Storage("file:///srv/smi/storage")     # or s3://bucket/prefix with s3fs
>>> storage.put("jobs/job_x/source.jpg", data)
>>> storage.get("jobs/job_x/source.jpg") == data
True
"""

from __future__ import annotations

import posixpath
import secrets

import fsspec
from fsspec.implementations.local import LocalFileSystem


class Storage:
    """Keys (``a/b/c.png``) under one root URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
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
        with self.fs.open(self.path(key), "rb") as fh:
            return bytes(fh.read())

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self.path(key)))
