"""Downloads over real HTTP: the gateway in uvicorn, results in a local folder or in S3
(moto's server, a subprocess), streamed or redirected to a presigned address.

HEAD, Range (resume, 206, 416), If-Range, ETag / If-None-Match (304) and
Content-Length as browsers and download managers use them; a result that is
missing or is not what its worker reported is refused (409) and put before
the admin; neither the link's token nor a presigned address reaches a log.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from test_gateway_app import Stack, start_stack

from conftest import paid_job
from gateway.background.job_events import apply_job_event
from gateway.config import ConfigError, GatewayConfig
from gateway.delivery.links import DownloadLinks
from shared.messages import EventKind, JobEvent
from shared.storage import Storage, result_key_for

ADMIN = "admin-token-for-downloads-0123"
RESULT = os.urandom(3 * 1024 * 1024 + 123)  # a few chunks, and not a multiple of one


@dataclass
class Shop:
    stack: Stack
    storage: Storage
    sessions: object

    def completed(self, data: bytes = RESULT, *, reported: bytes | None = None) -> str:
        """A paid job whose worker stored ``data`` and reported ``reported`` (the same by
        default); returns the job id."""
        job_id = paid_job(self.sessions, f"dl{os.urandom(4).hex()}")
        key = result_key_for(job_id)
        stored = self.storage.put(key, data)
        reported = data if reported is None else reported
        event = JobEvent(
            job_id,
            EventKind.COMPLETED,
            f"{job_id}:done",
            result_key=key,
            result_size=len(reported),
            result_sha256=hashlib.sha256(reported).hexdigest(),
        )
        assert stored.size == len(data)
        with self.sessions.begin() as session:
            assert apply_job_event(session, event) == "completed"
        return job_id

    def link(self, job_id: str) -> str:
        config = self.stack.config
        links = DownloadLinks(config.download_secret, config.public_url, config.download_ttl_s)
        return links.url(links.issue(job_id)[0])

    def admin_job(self, job_id: str) -> dict:
        answer = httpx.get(
            f"{self.stack.gateway}/admin/jobs/{job_id}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
def shop_of(tmp_path, request) -> Iterator:
    """``shop_of(storage_url, **settings)``: a gateway on SQLite over that storage."""
    stacks = []

    def make(storage_url: str, **settings: str) -> Shop:
        context = start_stack(
            f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
            tmp_path,
            SMI_STORAGE_URL=storage_url,
            SMI_ADMIN_TOKEN=ADMIN,
            SMI_BACKGROUND_IN_PROCESS="false",
            **settings,
        )
        stack = context.__enter__()
        stacks.append(context)
        return Shop(stack, Storage(storage_url), stack.sessions())

    yield make
    for context in reversed(stacks):
        context.__exit__(None, None, None)


@pytest.fixture(params=["file", "s3-stream"])
def streamed(request, tmp_path, shop_of) -> Shop:
    """A gateway that streams: a local folder, or S3 with SMI_DOWNLOAD_REDIRECT=stream."""
    if request.param == "file":
        return shop_of(f"file://{tmp_path / 'storage'}")
    s3_url = request.getfixturevalue("s3_url")
    return shop_of(s3_url, SMI_DOWNLOAD_REDIRECT="stream")


def test_a_streamed_download_answers_head_range_etag_and_length(streamed):
    job_id = streamed.completed()
    link = streamed.link(job_id)
    etag = f'"{hashlib.sha256(RESULT).hexdigest()}"'

    whole = httpx.get(link, timeout=60)
    assert whole.status_code == 200 and whole.content == RESULT
    assert whole.headers["content-length"] == str(len(RESULT))
    assert whole.headers["etag"] == etag
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "image/png"
    assert f'filename="{job_id}-RealESRGAN_x4plus-4x.png"' in whole.headers["content-disposition"]

    head = httpx.head(link, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(RESULT))
    assert head.headers["etag"] == etag
    assert head.headers["content-disposition"] == whole.headers["content-disposition"]

    part = httpx.get(link, headers={"Range": "bytes=100-1099"}, timeout=30)
    assert part.status_code == 206 and part.content == RESULT[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(RESULT)}"
    assert part.headers["content-length"] == "1000"
    tail = httpx.get(link, headers={"Range": "bytes=-50"}, timeout=30)
    assert tail.status_code == 206 and tail.content == RESULT[-50:]
    past = httpx.get(link, headers={"Range": f"bytes={len(RESULT)}-"}, timeout=30)
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(RESULT)}"
    head_range = httpx.head(link, headers={"Range": "bytes=10-19"}, timeout=30)
    assert head_range.status_code == 206 and head_range.headers["content-length"] == "10"
    several = httpx.get(link, headers={"Range": "bytes=0-9,20-29"}, timeout=60)
    assert several.status_code == 200 and several.content == RESULT  # answered whole

    unchanged = httpx.get(link, headers={"If-None-Match": etag}, timeout=30)
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    other = httpx.head(link, headers={"If-None-Match": '"something-else"'}, timeout=30)
    assert other.status_code == 200


def test_a_broken_transfer_resumes_where_it_stopped(streamed):
    """As a download manager does: the first bytes, the connection lost, then the rest
    asked for with Range and If-Range (the version it has); a changed version starts over."""
    link = streamed.link(streamed.completed())
    got = bytearray()
    with httpx.stream("GET", link, timeout=60) as answer:
        etag = answer.headers["etag"]
        for chunk in answer.iter_bytes():
            got += chunk
            if len(got) >= 1_500_000:
                break  # the connection is lost here
    assert 0 < len(got) < len(RESULT)
    rest = httpx.get(link, headers={"Range": f"bytes={len(got)}-", "If-Range": etag}, timeout=60)
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {len(got)}-{len(RESULT) - 1}/{len(RESULT)}"
    assert bytes(got) + rest.content == RESULT
    stale = httpx.get(link, headers={"Range": "bytes=10-", "If-Range": '"older"'}, timeout=60)
    assert stale.status_code == 200 and stale.content == RESULT


def test_with_s3_a_download_is_a_redirect_to_a_short_lived_address(
    s3_server, s3_url, shop_of, caplog
):
    shop = shop_of(s3_url, SMI_DOWNLOAD_PRESIGNED_TTL_S="120")
    job_id = shop.completed()
    link = shop.link(job_id)
    token = link.rsplit("/", 1)[1]
    name = f"{job_id}-RealESRGAN_x4plus-4x.png"
    with caplog.at_level(logging.DEBUG):
        answer = httpx.get(link, timeout=30)
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.startswith(f"{s3_server.endpoint}/{s3_server.bucket}/")
        assert token not in location
        assert answer.headers["cache-control"] == "private, no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.content == b""

        fetched = httpx.get(link, follow_redirects=True, timeout=60)
        assert fetched.status_code == 200 and fetched.content == RESULT
        assert fetched.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert fetched.headers["content-type"] == "image/png"
        # Resuming through the redirect: the store honours the Range the client sends.
        resumed = httpx.get(
            link, headers={"Range": "bytes=1000-"}, follow_redirects=True, timeout=60
        )
        assert resumed.status_code == 206 and resumed.content == RESULT[1000:]

        # HEAD is answered by the gateway from one HEAD at the store: nothing is read.
        before = len(s3_server.requests(settle_s=0.3))
        head = httpx.head(link, timeout=30)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(RESULT))
        assert head.headers["content-disposition"] == f'attachment; filename="{name}"'
        served = s3_server.requests(settle_s=0.3)[before:]
        assert [r.method for r in served] == ["HEAD"], served
        # The ETag HEAD shows is the one the store's answer carries, so If-Range resumes.
        assert head.headers["etag"] == fetched.headers["etag"]
        same = httpx.get(link, headers={"If-None-Match": head.headers["etag"]}, timeout=30)
        assert same.status_code == 304
    query = urlsplit(location).query
    signature = next(p.split("=", 1)[1] for p in query.split("&") if "Signature=" in p)
    for record in caplog.records:
        if record.name.split(".")[0] in ("httpx", "httpcore"):
            continue  # this test's own client, which asks for the link
        line = f"{record.getMessage()} {record.__dict__}"
        assert token not in line and signature not in line and location not in line


def test_with_s3_stream_head_reads_nothing(s3_server, s3_url, shop_of):
    shop = shop_of(s3_url, SMI_DOWNLOAD_REDIRECT="stream")
    link = shop.link(shop.completed())
    before = len(s3_server.requests(settle_s=0.3))
    head = httpx.head(link, timeout=30)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(RESULT))
    served = s3_server.requests(settle_s=0.3)[before:]
    assert [r.method for r in served] == ["HEAD"], served  # before: a GET of the whole object


@pytest.mark.parametrize("where", ["file", "s3"])
def test_a_missing_or_damaged_result_is_refused_and_shown_to_the_admin(
    where, tmp_path, shop_of, request
):
    url = f"file://{tmp_path / 'storage'}" if where == "file" else request.getfixturevalue("s3_url")
    shop = shop_of(url)
    damaged = shop.completed()  # same size, other bytes: only the sha256 tells
    changed = bytearray(RESULT)
    changed[len(changed) // 2] ^= 0xFF
    shop.storage.put(result_key_for(damaged), bytes(changed))
    cut = shop.completed(RESULT, reported=RESULT + b"the rest the worker wrote")
    missing = shop.completed()
    shop.storage.delete(result_key_for(missing))

    for job_id, why in (
        (damaged, "sha256"),
        (cut, f"has {len(RESULT)} bytes, not the {len(RESULT) + 25} reported"),
        (missing, "the stored result is missing"),
    ):
        link = shop.link(job_id)
        for method in ("GET", "HEAD", "GET"):
            answer = httpx.request(method, link, timeout=30)
            assert answer.status_code == 409, (job_id, answer.status_code, answer.text)
        body = httpx.get(link, timeout=30).json()
        assert body["error"]["type"] == "result_unavailable"
        assert "contact support" in body["error"]["message"]
        details = shop.admin_job(job_id)
        refused = [e for e in details["audit"] if e["reason"].startswith("download refused")]
        assert len(refused) == 1, details["audit"]  # once, however often it is tried
        assert why in refused[0]["reason"] and refused[0]["source"] == "downloads"
        assert details["job"]["status"] == "completed"
        assert details["job"]["result_sha256"] is not None

    good = shop.completed()
    details = shop.admin_job(good)
    assert details["job"]["result_size"] == len(RESULT)
    assert details["job"]["result_sha256"] == hashlib.sha256(RESULT).hexdigest()
    assert httpx.get(shop.link(good), follow_redirects=True, timeout=60).content == RESULT


def test_a_result_reported_without_its_digest_still_downloads(tmp_path, shop_of):
    """A completion event from a worker older than the check: delivered, unchecked."""
    shop = shop_of(f"file://{tmp_path / 'storage'}")
    job_id = paid_job(shop.sessions, "old-worker")
    shop.storage.put(result_key_for(job_id), RESULT)
    event = JobEvent(job_id, EventKind.COMPLETED, "e1", result_key=result_key_for(job_id))
    with shop.sessions.begin() as session:
        assert apply_job_event(session, event) == "completed"
    answer = httpx.get(shop.link(job_id), timeout=60)
    assert answer.status_code == 200 and answer.content == RESULT
    etag = answer.headers["etag"]
    assert httpx.get(shop.link(job_id), headers={"If-None-Match": etag}).status_code == 304


def test_the_download_mode_is_a_setting():
    base = {
        "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_abc",
        "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_x",
    }
    config = GatewayConfig.from_env(base)
    assert (config.download_redirect, config.download_presigned_ttl_s) == ("presigned", 300)
    config = GatewayConfig.from_env(
        {**base, "SMI_DOWNLOAD_REDIRECT": "Stream", "SMI_DOWNLOAD_PRESIGNED_TTL_S": "60"}
    )
    assert (config.download_redirect, config.download_presigned_ttl_s) == ("stream", 60)
    with pytest.raises(ConfigError, match="SMI_DOWNLOAD_REDIRECT must be presigned or stream"):
        GatewayConfig.from_env({**base, "SMI_DOWNLOAD_REDIRECT": "teleport"})
