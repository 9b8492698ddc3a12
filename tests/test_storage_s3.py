"""Storage on S3 for real: s3fs against a local S3-compatible server (moto's, a subprocess).

What a local folder never showed: listings kept for the life of a process,
deletes that always succeed, writes made twice through a temporary copy,
50 MB read-ahead blocks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc

import httpx
import pytest

from shared.storage import Storage


def written_by_another_process(url: str, key: str, data: bytes) -> None:
    """``data`` stored under ``key`` by a process of its own (a worker, another gateway)."""
    code = "import sys; from shared.storage import Storage; "
    code += "Storage(sys.argv[1]).put(sys.argv[2], sys.stdin.buffer.read())"
    subprocess.run(
        [sys.executable, "-c", code, url, key], input=data, check=True, env=dict(os.environ)
    )


def since(s3_server, before: int) -> list:
    """The requests the server logged after the first ``before``."""
    return s3_server.requests(settle_s=0.3)[before:]


def test_objects_written_elsewhere_after_a_listing_are_seen(s3_url):
    """A retention pass lists previews/; a worker then writes a pending preview's image: this
    process must see it (s3fs kept the listing and answered "no such object" for good)."""
    storage = Storage(s3_url)
    storage.put("previews/p1/meta.json", b"{}")
    assert storage.older_than("previews", 3600) == []  # the retention pass: a listing
    assert not storage.exists("previews/p1/after.png")
    written_by_another_process(s3_url, "previews/p1/after.png", b"after")
    assert storage.exists("previews/p1/after.png")
    assert storage.size("previews/p1/after.png") == 5
    assert storage.keys("previews/p1") == ["previews/p1/after.png", "previews/p1/meta.json"]


def test_deleting_what_is_not_there_says_so(s3_url):
    storage = Storage(s3_url)
    assert storage.delete("jobs/none/result.png") is False
    storage.put("jobs/one/result.png", b"result")
    assert storage.delete("jobs/one/result.png") is True
    assert not storage.exists("jobs/one/result.png")
    assert storage.delete("jobs/one/result.png") is False


def test_an_object_is_written_once_with_its_sha256(s3_server, s3_url):
    """One PUT of the object itself: no temporary key, no copy, no delete (S3 has no
    rename: a temporary copy moved into place wrote every result twice)."""
    storage = Storage(s3_url)
    data = os.urandom(300_000)
    before = len(s3_server.requests(settle_s=0.3))
    stored = storage.put("jobs/j1/result.png", data)
    key = f"/{s3_server.bucket}/{s3_url.split('/', 3)[3]}/jobs/j1/result.png"
    writes = [r for r in since(s3_server, before) if r.method in ("PUT", "POST", "DELETE")]
    assert [(r.method, r.path) for r in writes] == [("PUT", key)]
    digest = hashlib.sha256(data).hexdigest()
    assert stored.size == len(data) and stored.sha256 == digest
    found = storage.stat("jobs/j1/result.png")  # one HEAD: the size and the stored digest
    assert (found.size, found.sha256) == (len(data), digest) and found.etag
    assert storage.get("jobs/j1/result.png") == data


def test_a_write_that_must_not_replace_leaves_what_is_there(s3_server, s3_url):
    """``replace=False``: the object there stays, the writer is told; where nothing is, one
    conditional PUT (If-None-Match: *) writes it."""
    storage = Storage(s3_url)
    stored = storage.put("jobs/j1/result.png", b"first", replace=False)
    assert stored.sha256 == hashlib.sha256(b"first").hexdigest()
    before = len(s3_server.requests(settle_s=0.3))
    with pytest.raises(FileExistsError):
        storage.put("jobs/j1/result.png", b"late", replace=False)
    assert storage.get("jobs/j1/result.png") == b"first"
    assert storage.stat("jobs/j1/result.png").sha256 == stored.sha256
    assert not [r for r in since(s3_server, before) if r.method in ("PUT", "POST")]


def test_a_conditional_write_that_loses_a_race_raises_and_changes_nothing(s3_url, monkeypatch):
    """Another writer got there between the look and the write: S3 refuses the conditional
    PUT, and this writer hears ``FileExistsError`` like the one that looked too late."""
    storage = Storage(s3_url)
    looks = iter([False])  # the first look finds nothing; the object is there after that
    monkeypatch.setattr(storage, "exists", lambda key: next(looks, True))
    written_by_another_process(s3_url, "jobs/j2/result.png", b"first")
    with pytest.raises(FileExistsError):
        storage.put("jobs/j2/result.png", b"late", replace=False)
    monkeypatch.undo()
    assert storage.get("jobs/j2/result.png") == b"first"


def test_an_object_without_a_stored_digest_is_read_through_once(s3_server, s3_url):
    storage = Storage(s3_url)
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    storage.fs.pipe_file(f"{bucket}/{prefix}/jobs/old/result.png", b"written before digests")
    assert storage.stat("jobs/old/result.png").sha256 is None
    expected = hashlib.sha256(b"written before digests").hexdigest()
    assert storage.describe("jobs/old/result.png").sha256 == expected
    before = len(s3_server.requests(settle_s=0.3))
    assert storage.sha256("jobs/old/result.png") == expected  # remembered: a HEAD, no GET
    assert [r.method for r in since(s3_server, before)] == ["HEAD"]


def test_reading_streams_one_ranged_request_in_small_chunks(s3_server, s3_url):
    storage = Storage(s3_url)
    data = os.urandom(24 * 1024 * 1024)
    storage.put("jobs/big/result.png", data)
    before = len(s3_server.requests(settle_s=0.3))
    part = b"".join(storage.iter_chunks("jobs/big/result.png", 1000, 5000, chunk_bytes=1024))
    assert part == data[1000:5000]
    assert [r.method for r in since(s3_server, before)] == ["GET"]

    tracemalloc.start()
    try:
        digest, count = hashlib.sha256(), 0
        for chunk in storage.iter_chunks("jobs/big/result.png"):
            assert len(chunk) <= 1024 * 1024
            digest.update(chunk)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest() and count >= 24
    assert peak < 8 * 1024 * 1024, f"streaming 24 MiB held {peak / 2**20:.1f} MiB at once"


def test_a_presigned_address_downloads_with_the_given_name(s3_url):
    storage = Storage(s3_url)
    assert storage.can_presign
    storage.put("jobs/j2/result.png", b"\x89PNG the result")
    url = storage.presigned_url("jobs/j2/result.png", 60, "j2-x4-4x.png", "image/png")
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.content == b"\x89PNG the result"
    assert answer.headers["content-disposition"] == 'attachment; filename="j2-x4-4x.png"'
    assert answer.headers["content-type"] == "image/png"
    with pytest.raises(NotImplementedError):
        Storage("memory://nowhere").presigned_url("x", 60)
