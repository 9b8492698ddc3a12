"""Faults with real processes: gateways, workers and the Stripe emulator on PostgreSQL and
RabbitMQ (a virtual host of this run's own, reached through a proxy the test can cut).

Each scenario ends with ``assert_money_safe``: every paid job delivered or refunded once,
no refund without a payment, no double refund, no lost or doubled email.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from money import assert_money_safe
from proxy import TcpProxy
from system import WEBHOOK_SECRET, System, running_system

from conftest import RABBITMQ_URL, postgres_database, purge_queues
from servers import deliver_at_once, wait_for
from shared.images import decode_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Nine 48x48 windows of large.png, about a second each here: time to kill a worker mid-job.
SLOW_TILES = {"SMI_WORKER_TILE": "32", "SMI_WORKER_OVERLAP": "8"}


@pytest.fixture
def broker() -> Iterator[TcpProxy]:
    """This run's RabbitMQ virtual host behind a proxy: ``broker.cut()`` is an outage."""
    purge_queues()
    with TcpProxy("127.0.0.1", 5672) as proxy:
        yield proxy
    purge_queues()


def proxied(proxy: TcpProxy) -> str:
    return RABBITMQ_URL.replace(":5672/", f":{proxy.port}/")


@pytest.fixture
def system(tmp_path, broker) -> Iterator[System]:
    with (
        postgres_database() as url,
        running_system(
            tmp_path, url, proxied(broker), SMI_REFUND_LEASE_S="2", SMI_EMAIL_LEASE_S="2"
        ) as running,
    ):
        yield running


def details(system: System, job_id: str) -> dict:
    response = system.admin("GET", f"/admin/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_one_event_twenty_times_at_once_to_two_gateways_is_applied_once(tmp_path, broker):
    with (
        postgres_database() as url,
        # No deliveries and no catch-up: the test is the only one delivering.
        running_system(
            tmp_path, url, proxied(broker), gateways=2, webhooks=False, SMI_STRIPE_CATCH_UP_S="3600"
        ) as system,
    ):
        checkout = system.checkout("photo.png")
        assert system.pay(checkout)["outcome"] == "paid"
        session_id = checkout["checkout_url"].rsplit("/", 1)[1]
        (event,) = [
            e.to_dict()
            for e in system.stripe.v1.events.list({"type": "checkout.session.completed"})
            if e.data.object["id"] == session_id
        ]
        payload = json.dumps(event).encode()
        answers = deliver_at_once(system.gateways * 10, payload, WEBHOOK_SECRET)  # 10 each
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        results = [a.json()["result"] for a in answers]
        assert Counter(results) == {"applied": 1, "duplicate": 19}
        system.start_worker()
        assert_money_safe(system)
        upscales = [
            m for m in details(system, checkout["job_id"])["outbox"] if m["kind"] == "upscale"
        ]
        assert len(upscales) == 1


def test_a_broker_outage_of_30_s_during_payments_delays_jobs_and_loses_or_doubles_none(
    system, broker
):
    system.start_worker()
    broker.cut()
    cut = time.monotonic()
    try:
        jobs = [system.buy("photo.png") for _ in range(3)]
        for job_id in jobs:  # paid and recorded while the broker is away
            assert system.status(job_id)["status"] == "pending"
        # Each waiting message says why it waits.
        wait_for(
            lambda: all(
                m["last_error"]
                for j in jobs
                for m in details(system, j)["outbox"]
                if m["kind"] == "upscale"
            ),
            timeout=30,
            interval=0.5,
        )
        time.sleep(max(0.0, 30 - (time.monotonic() - cut)))
    finally:
        broker.restore()
    assert_money_safe(system, timeout=240)
    for job_id in jobs:
        found = details(system, job_id)
        upscales = [m for m in found["outbox"] if m["kind"] == "upscale"]
        assert len(upscales) == 1 and upscales[0]["published_at"], found["outbox"]
        assert [e for e in found["audit"] if e["to"] == "processing"], found["audit"]


def test_a_worker_killed_mid_job_leaves_it_to_another_which_completes_it_once(system):
    first = system.start_worker("worker-1", **SLOW_TILES)
    job_id = system.buy("large.png")
    wait_for(lambda: system.status(job_id)["progress"] > 0, timeout=120, interval=0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert system.status(job_id)["status"] == "processing"

    system.start_worker("worker-2", **SLOW_TILES)
    status = system.wait_for_status(job_id, "completed", timeout=300)
    download = httpx.get(status["download_url"], timeout=30)
    assert decode_image(download.content).pixels.shape == (96 * 4, 96 * 4, 3)
    assert_money_safe(system)
    assert "worker-2" in (system.tmp / "worker-2.log").read_text()


def killed_at(system: System, point: str) -> None:
    """Wait for gateway-1 to die at ``point``, then start it again unarmed."""
    gateway = system.process("gateway-1")
    wait_for(lambda: gateway.poll() is not None, timeout=60, interval=0.1)
    assert gateway.returncode == -signal.SIGKILL, f"gateway-1 ended {gateway.returncode}"
    system.restart_gateway(0)


@pytest.mark.parametrize("point", ["webhook.applied", "webhook.committed", "relay.published"])
def test_a_gateway_killed_while_taking_a_payment_loses_and_doubles_nothing(system, point):
    system.start_worker()
    system.restart_gateway(0, SMI_FAILPOINTS=point)
    job_id = system.buy("photo.png")
    killed_at(system, point)
    system.wait_for_status(job_id, "completed", timeout=180)
    assert_money_safe(system)
    trail = details(system, job_id)["audit"]
    assert [e["to"] for e in trail].count("completed") == 1, trail
    if point == "relay.published":  # sent, killed before marking: sent again, done once
        log = (system.tmp / "worker.log").read_text()
        assert log.count("event started") == 2, log


def test_a_gateway_killed_between_stripe_refunding_and_recording_it_refunds_once(system):
    system.start_worker()
    job_id = system.buy("photo.png")
    system.wait_for_status(job_id, "completed")
    system.restart_gateway(0, SMI_FAILPOINTS="refund.sent")
    response = system.admin("POST", f"/admin/jobs/{job_id}/refund", json={"reason": "test"})
    assert response.status_code in (200, 202), response.text
    killed_at(system, "refund.sent")
    system.wait_for_status(job_id, "refunded", timeout=120)
    assert_money_safe(system)


def test_stripe_failing_slow_and_rate_limited_with_doubled_reordered_webhooks(system):
    faults = {
        "error_rate": 0.2,
        "rate_limit_rate": 0.2,
        "latency_s": 0.2,
        "webhook_copies": 2,
        "reorder_webhooks": True,
    }
    assert httpx.post(f"{system.emulator}/_emulator/faults", json=faults).status_code == 200
    system.start_worker()
    jobs = []
    for _ in range(4):
        for _attempt in range(10):  # a customer clicks again when the shop says try later
            response = httpx.post(
                f"{system.gateway}/api/checkout",
                json={"image_url": f"{system.images}/photo.png"},
                timeout=60,
            )
            if response.status_code == 201:
                break
            assert response.status_code in (502, 503), response.text
        else:
            pytest.fail("no checkout in 10 tries at a 40% failure rate")
        body = response.json()
        system.buyer_keys[body["job_id"]] = body["buyer_key"]  # the buyer's page shows it
        assert system.pay(body)["outcome"] == "paid"
        jobs.append(body["job_id"])
    for job_id in jobs:
        system.wait_for_status(job_id, "completed", timeout=240)
    refund = system.admin("POST", f"/admin/jobs/{jobs[0]}/refund", json={"reason": "test"})
    assert refund.status_code in (200, 202), refund.text
    system.wait_for_status(jobs[0], "refunded", timeout=180)
    off = {name: 0 for name in ("error_rate", "rate_limit_rate", "latency_s")}
    httpx.post(f"{system.emulator}/_emulator/faults", json={**off, "webhook_copies": 1})
    assert_money_safe(system)


def test_webhooks_lost_for_good_are_caught_up_from_stripe(tmp_path, broker):
    with (
        postgres_database() as url,
        running_system(
            tmp_path, url, proxied(broker), webhooks=False, SMI_STRIPE_CATCH_UP_S="1"
        ) as system,
    ):
        system.start_worker()
        jobs = [system.buy("photo.png") for _ in range(3)]
        for job_id in jobs:
            system.wait_for_status(job_id, "completed", timeout=180)
        assert_money_safe(system)
