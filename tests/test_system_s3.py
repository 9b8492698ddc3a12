"""The whole system on S3: every stored image in a bucket of a local S3-compatible server.

Real processes throughout (the Stripe emulator, a gateway on PostgreSQL, RabbitMQ,
a CPU worker, moto's S3 server): checkout and preview sources, the worker's reads
and writes, previews, downloads (redirected to presigned addresses), retention's
and erasure's deletes and readiness, all on ``s3://``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from system import System, running_system

from conftest import RABBITMQ_URL, postgres_database, purge_queues
from servers import free_port, wait_for
from shared.images import decode_image
from shared.storage import Storage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def system(tmp_path, s3_server, s3_url) -> Iterator[System]:
    purge_queues()
    settings = {
        **s3_server.env,
        "SMI_STORAGE_URL": s3_url,
        "SMI_RETENTION_INTERVAL_S": "1",  # a listing of previews/ every second
    }
    with (
        postgres_database() as url,
        running_system(tmp_path, url, RABBITMQ_URL, **settings) as running,
    ):
        yield running
    purge_queues()


def audit_reasons(system: System, job_id: str) -> list[str]:
    details = system.admin("GET", f"/admin/jobs/{job_id}").json()
    return [entry["reason"] for entry in details["audit"]]


def test_the_whole_system_runs_on_s3(system, s3_server, s3_url):
    storage = Storage(s3_url)
    port = free_port()
    system.start_worker(SMI_WORKER_METRICS_PORT=str(port))

    # Readiness: the gateway's and the worker's storage checks write, read and delete in S3.
    ready = httpx.get(f"{system.gateway}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["checks"]["storage"] == "ok", ready.text
    worker_ready = wait_for(
        lambda: _get(f"http://127.0.0.1:{port}/readyz"), timeout=120, interval=0.5
    )
    assert worker_ready.json()["checks"]["storage"] == "ok", worker_ready.text

    # A preview, made while retention lists previews/ every second: the gateway sees the
    # worker's images appear (s3fs's kept listings once left it pending for good).
    asked = httpx.post(
        f"{system.gateway}/api/previews",
        json={"image_url": f"{system.images}/photo.png"},
        timeout=60,
    )
    assert asked.status_code == 202, asked.text
    preview = f"{system.gateway}/api/previews/{asked.json()['preview_id']}"
    try:
        wait_for(
            lambda: httpx.get(preview, timeout=30).json()["status"] == "ready",
            timeout=120,
            interval=0.3,
        )
    except AssertionError:
        raise AssertionError(f"the preview stayed pending\n{system.logs()}") from None
    after = httpx.get(f"{preview}/after.png", timeout=30)
    assert decode_image(after.content).pixels.shape == (96, 96, 3)

    # A sale: the source stored in S3, read by the worker, the result written back.
    job_id = system.buy("photo.png")
    status = system.wait_for_status(job_id, "completed")
    link = status["download_url"]
    token = link.rsplit("/", 1)[1]
    moved = httpx.get(link, timeout=30)
    assert moved.status_code == 302
    assert moved.headers["location"].startswith(f"{s3_server.endpoint}/{s3_server.bucket}/")
    download = httpx.get(link, follow_redirects=True, timeout=60)
    assert download.status_code == 200
    assert (
        download.headers["content-disposition"]
        == f'attachment; filename="{job_id}-RealESRGAN_x4plus-4x.png"'
    )
    assert decode_image(download.content).pixels.shape == (24 * 4, 32 * 4, 3)
    head = httpx.head(link, timeout=30)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(download.content))
    part = httpx.get(link, headers={"Range": "bytes=0-99"}, follow_redirects=True, timeout=30)
    assert part.status_code == 206 and part.content == download.content[:100]

    job = system.admin("GET", f"/admin/jobs/{job_id}").json()["job"]
    assert job["result_size"] == len(download.content)
    assert job["result_sha256"] == hashlib.sha256(download.content).hexdigest()
    keys = storage.keys("jobs") + storage.keys("sources") + storage.keys("previews")
    result_key = f"jobs/{job_id}/result.png"
    photo = httpx.get(f"{system.images}/photo.png", timeout=30).content
    source_key = f"sources/{hashlib.sha256(photo).hexdigest()}.png"
    assert {result_key, source_key} <= set(keys), keys
    assert f"previews/sources/{hashlib.sha256(photo).hexdigest()}.png" in keys
    assert storage.stat(result_key).sha256 == job["result_sha256"]
    # Every object was written once, in place: never a temporary key, never a copy.
    writes = [r for r in s3_server.requests() if r.method in ("PUT", "POST")]
    assert writes and not [r for r in writes if ".part" in r.path or "copy" in r.path]

    # Retention: an unpaid checkout's source goes once its session has expired.
    unpaid = system.checkout("large.png")
    large = httpx.get(f"{system.images}/large.png", timeout=30).content
    unpaid_source = f"sources/{hashlib.sha256(large).hexdigest()}.png"
    assert storage.exists(unpaid_source)
    system.stripe.v1.checkout.sessions.expire(unpaid["checkout_url"].rsplit("/", 1)[1])
    wait_for(lambda: not storage.exists(unpaid_source), timeout=60, interval=0.3)
    assert "retention: source deleted" in audit_reasons(system, unpaid["job_id"])

    # Erasure: the buyer's result and source leave the bucket; the link then answers 410.
    erased = system.admin("POST", "/admin/erase", json={"email": "buyer@example.com"})
    assert erased.status_code == 200 and job_id in erased.json()["erased"], erased.text
    assert not storage.exists(result_key) and not storage.exists(source_key)
    assert httpx.get(link, timeout=30).status_code == 410

    # Neither the link's token nor a presigned address's signature is in any log line.
    location = moved.headers["location"]
    signature = next(p for p in location.split("?", 1)[1].split("&") if "Signature=" in p)
    for path in system.tmp.glob("gateway-*.log"):
        text = path.read_text(errors="replace")
        assert "/downloads/[token]" in text  # the access log has the path, redacted
        assert token not in text and signature.split("=", 1)[1] not in text


def _get(url: str) -> httpx.Response | None:
    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return answer if answer.status_code == 200 else None
