"""The whole loop with real processes: emulator, gateways on PostgreSQL, RabbitMQ, CPU workers.

Pay -> the worker upscales with real weights -> download and emails; a
corrupt source -> exactly one refund; reconciliation against Stripe. The
faults (killed processes, outages, a failing Stripe) are in tests/reliability/.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import delete
from starlette.applications import Starlette
from starlette.routing import Route
from system import BIN, System, running_system
from test_seller import SELLER_SECRET, SellerEndpoint

from conftest import RABBITMQ_URL, postgres_database, purge_queues
from gateway.store.database import create_database_engine, session_factory
from gateway.store.tables import Refund
from servers import serve, wait_for
from shared.broker import Broker
from shared.images import decode_image
from shared.messages import EventKind, JobEvent
from shared.topology import EVENTS_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def system(tmp_path) -> Iterator[System]:
    purge_queues()
    with postgres_database() as url, running_system(tmp_path, url, RABBITMQ_URL) as running:
        yield running
    purge_queues()


def audit(system: System, job_id: str) -> list[dict]:
    response = system.admin("GET", f"/admin/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return list(response.json()["audit"])


def test_a_paid_image_is_upscaled_delivered_and_emailed(system):
    system.start_worker()
    job_id = system.buy("photo.png")
    status = system.wait_for_status(job_id, "completed")
    assert status["progress"] == 1.0 and status["message"].endswith("ready to download.")

    download = httpx.get(status["download_url"], timeout=30)
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert (
        f'filename="{job_id}-RealESRGAN_x4plus-4x.png"' in download.headers["content-disposition"]
    )
    assert decode_image(download.content).pixels.shape == (24 * 4, 32 * 4, 3)

    completed = wait_for(lambda: system.mail.of_kind("completed", job_id), timeout=30)
    confirmation = system.mail.of_kind("payment_confirmation", job_id)
    processing = system.mail.of_kind("processing", job_id)
    assert len(completed) == len(confirmation) == len(processing) == 1
    for message in (*completed, *confirmation, *processing):
        assert message["To"] == "buyer@example.com"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "support@example.com" in text and "support@example.com" in html
    text = completed[0].get_body(("plain",)).get_content()
    emailed_link = next(line for line in text.splitlines() if "/downloads/" in line).strip()
    assert httpx.get(emailed_link, timeout=30).content == download.content

    steps = [(entry["from"], entry["to"]) for entry in audit(system, job_id)]
    assert steps == [
        (None, "awaiting_payment"),
        ("awaiting_payment", "pending"),
        ("pending", "processing"),
        ("processing", "completed"),
    ]


def test_a_corrupt_source_is_refunded_exactly_once(tmp_path):
    purge_queues()
    with (
        postgres_database() as url,
        running_system(tmp_path, url, RABBITMQ_URL, gateways=2) as system,
    ):
        checkout = system.checkout("photo.png")
        job_id = checkout["job_id"]
        source = system.source_file(job_id)
        source.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # the stored source is damaged
        assert system.pay(checkout)["outcome"] == "paid"
        system.start_worker()
        system.wait_for_status(job_id, "refunded")
        failure = system.admin("GET", f"/admin/jobs/{job_id}").json()["job"]["failure_reason"]
        assert "Image" in failure  # the worker's typed image error, not a timeout

        # The worker's failure event arrives twice more, at both gateways at once.
        broker = Broker(RABBITMQ_URL)
        for _ in range(2):
            event = JobEvent(job_id, EventKind.FAILED, f"dup-{uuid.uuid4()}", error=failure)
            broker.publish(EVENTS_QUEUE, event.to_json(), message_id=event.event_id)
        broker.close()
        wait_for(lambda: system.mail.of_kind("refunded", job_id), timeout=30)
        time.sleep(3)  # room for a second refund or email, which must not come

        intent = system.status(job_id, gateway=1)  # the second gateway sees the same job
        assert intent["status"] == "refunded"
        details = system.admin("GET", f"/admin/jobs/{job_id}").json()
        payment_intent = details["job"]["stripe_payment_intent_id"]
        refunds = system.stripe.v1.refunds.list({"payment_intent": payment_intent}).data
        assert len(refunds) == 1
        assert refunds[0].reason == "requested_by_customer"
        assert refunds[0].metadata.to_dict() == {
            "job_id": job_id,
            "refund_key": f"refund-{job_id}-1",
            "failure_reason": failure,
        }
        assert [r["status"] for r in details["refunds"]] == ["succeeded"]
        assert len(system.mail.of_kind("refunded", job_id)) == 1
        assert not system.mail.of_kind("completed", job_id)
        notice = system.mail.of_kind("refunded", job_id)[0].get_body(("plain",)).get_content()
        assert "refunded your" in notice and "support@example.com" in notice
    purge_queues()


def test_reconciliation_finds_what_stripe_has_and_we_do_not(system):
    job_id = system.buy("photo.png")
    system.wait_for_status(job_id, "pending")
    details = system.admin("GET", f"/admin/jobs/{job_id}").json()
    intent = details["job"]["stripe_payment_intent_id"]
    # Someone refunds in the Stripe dashboard, and a session is paid that no job knows.
    direct = system.stripe.v1.refunds.create({"payment_intent": intent})
    stray = system.stripe.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "success_url": "https://shop.example/thanks",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "product_data": {"name": "Something else"},
                        "unit_amount": 700,
                    },
                    "quantity": 1,
                }
            ],
        }
    )
    assert system.pay({"checkout_url": stray.url})["outcome"] == "paid"
    # The Dashboard refund is recorded from its webhook; a database restored from a
    # backup taken before it would not have it.
    system.wait_for_status(job_id, "refunded")
    engine = create_database_engine(system.env["SMI_DATABASE_URL"])
    with session_factory(engine).begin() as session:
        session.execute(delete(Refund).where(Refund.job_id == job_id))
    engine.dispose()

    report = system.admin("GET", "/admin/reconciliation").json()
    found = {(m["kind"], m["stripe_id"]) for m in report["mismatches"]}
    assert ("refund_not_recorded", direct.id) in found
    assert ("paid_session_without_job", stray.id) in found
    assert len(report["mismatches"]) == 2, report
    refund = next(m for m in report["mismatches"] if m["kind"] == "refund_not_recorded")
    assert refund["job_id"] == job_id and refund["amount_cents"] == direct.amount

    cli = subprocess.run(
        [BIN / "smi-admin", "--url", system.gateway, "reconcile"],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1, cli.stderr  # mismatches found: a non-zero exit for cron jobs
    assert direct.id in cli.stdout and stray.id in cli.stdout
    as_json = subprocess.run(
        [BIN / "smi-admin", "--url", system.gateway, "--json", "reconcile"],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(json.loads(as_json.stdout)["mismatches"]) == 2


def test_on_the_embedded_broker_the_watchdog_recovers_a_killed_worker_s_job(tmp_path):
    """The filesystem broker forgets a message its consumer took; the watchdog sends it again."""
    settings = {"SMI_HEARTBEAT_TIMEOUT_S": "4", "SMI_WATCHDOG_INTERVAL_S": "1"}
    database = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    broker = f"filesystem://{tmp_path / 'broker'}"
    with running_system(tmp_path, database, broker, **settings) as system:
        tiles = {"SMI_WORKER_TILE": "32", "SMI_WORKER_OVERLAP": "8"}
        first = system.start_worker("worker-1", **tiles)
        job_id = system.buy("large.png")
        wait_for(lambda: system.status(job_id)["progress"] > 0, timeout=120, interval=0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        system.start_worker("worker-2", **tiles)
        status = system.wait_for_status(job_id, "completed", timeout=300)
        assert httpx.get(status["download_url"], timeout=30).status_code == 200
        trail = audit(system, job_id)
        assert any(e["source"] == "watchdog" and e["to"] == "pending" for e in trail), trail
        wait_for(lambda: system.mail.of_kind("completed", job_id), timeout=30)
        assert len(system.mail.of_kind("completed", job_id)) == 1


def test_money_events_from_stripe_reach_the_job_and_the_seller_once(tmp_path):
    """A Dashboard refund, a dispute won, a refund that fails later: real processes throughout,
    the seller told by email and by signed webhook, each thing once."""
    endpoint = SellerEndpoint()
    hooks = Starlette(routes=[Route("/seller", endpoint.endpoint, methods=["POST"])])
    purge_queues()
    with (
        serve(hooks) as hooks_url,
        postgres_database() as url,
        running_system(
            tmp_path,
            url,
            RABBITMQ_URL,
            SMI_SELLER_EMAIL="seller@shop.test",
            SMI_SELLER_WEBHOOK_URL=f"{hooks_url}/seller",
            SMI_SELLER_WEBHOOK_SECRET=SELLER_SECRET,
        ) as system,
    ):
        system.start_worker()
        refunded = system.buy("photo.png")
        disputed = system.checkout("photo.png")
        assert system.pay(disputed, card="4000000000000259")["outcome"] == "paid"
        failing = system.checkout("photo.png")
        assert system.pay(failing, card="4000000000005126")["outcome"] == "paid"
        disputed_id, failing_id = disputed["job_id"], failing["job_id"]

        link = system.wait_for_status(refunded, "completed")["download_url"]
        intent = system.admin("GET", f"/admin/jobs/{refunded}").json()["job"][
            "stripe_payment_intent_id"
        ]
        system.stripe.v1.refunds.create({"payment_intent": intent})  # in the Dashboard
        system.wait_for_status(refunded, "refunded")
        assert httpx.get(link, timeout=30).status_code == 410

        system.wait_for_status(disputed_id, "disputed")
        (dispute,) = system.admin("GET", f"/admin/jobs/{disputed_id}").json()["disputes"]
        time.sleep(3)  # the worker finishes meanwhile; nothing is delivered
        assert system.status(disputed_id)["status"] == "disputed"
        system.stripe.v1.disputes.update(
            dispute["id"], {"evidence": {"uncategorized_text": "winning_evidence"}}
        )
        won = system.wait_for_status(disputed_id, "completed")
        assert httpx.get(won["download_url"], timeout=30).status_code == 200

        system.wait_for_status(failing_id, "completed")
        assert system.admin("POST", f"/admin/jobs/{failing_id}/refund", json={}).status_code == 202
        system.wait_for_status(failing_id, "refund_failed")

        expected = {
            "sale": 3,
            "refund": 2,
            "refund_failed": 1,
            "dispute_opened": 1,
            "dispute_closed": 1,
        }
        wait_for(
            lambda: {kind: len(endpoint.of_type(kind)) for kind in expected} == expected,
            timeout=60,
        )
        wait_for(
            lambda: {k: len(system.mail.of_kind(f"seller-{k}")) for k in expected} == expected,
            timeout=60,
        )
        time.sleep(3)  # nothing twice
        assert {kind: len(endpoint.of_type(kind)) for kind in expected} == expected
        events = system.admin("GET", "/admin/events", params={"limit": 1000}).json()["events"]
        # A dispute may have come before its payment (503, stored as an error): delivered
        # again, it was applied; nothing is left failed.
        assert [e for e in events if e["outcome"] in ("error", "unknown job")] == []
        report = system.admin("GET", "/admin/reconciliation").json()
        assert report["mismatches"] == [], report
    purge_queues()
