"""What an attack on the gateway's doors found, each kept shut by a test.

Text no database stores: a NUL (or a lone surrogate) in a path, a query or
a JSON string was looked up or written as it came, and PostgreSQL answered
with an error, so the gateway answered 500. Every door now answers 400
``invalid_characters`` before any lookup or write, on SQLite and PostgreSQL.

What anyone could read: ``/metrics`` (the shop's revenue, refunds and
disputes) answered everyone, and ``/readyz`` answered the error of whatever
was down, with its host, port and driver. The real app on a real server,
with the Stripe emulator (``docs/RELIABILITY.md``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from test_gateway_app import API_KEY, SECRET, Stack, start_stack

from devtools.emulator.webhooks import sign_payload
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.store.tables import (
    AuditEntry,
    Job,
    Notification,
    OutboxMessage,
    Payment,
    Refund,
    WebhookEvent,
)
from servers import free_port, serve, wait_for
from shared.broker import Broker
from shared.storage import Storage
from upscaler.models.registry import ModelRegistry
from upscaler.worker.config import WorkerConfig
from upscaler.worker.loop import UpscaleWorker
from upscaler.worker.metrics import serve_health

ADMIN_TOKEN = "admin-token-doors-0123456789"
METRICS_TOKEN = "metrics-token-doors-0123456789"
NUL, SURROGATE = "\u0000", "\ud800"


def raw(value: Any) -> bytes:
    """``value`` as JSON bytes; ``json.dumps`` writes a NUL or a surrogate as its escape."""
    return json.dumps(value).encode()


def paid_job(stack: Stack) -> str:
    body = stack.checkout().json()
    assert stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
    wait_for(lambda: stack.status(body["job_id"])["status"] == "pending")  # the webhook came
    # ... and every other event of the payment (charge, intent), so that none lands while a
    # test compares the records before and after.
    emitted = {event.id for event in stack.stripe.v1.events.list({"limit": 100}).data}

    def all_received() -> bool:
        with stack.sessions()() as session:
            return emitted <= set(session.scalars(select(WebhookEvent.event_id)))

    wait_for(all_received, timeout=30)
    return str(body["job_id"])


def footprint(stack: Stack, storage: Path) -> tuple[int, ...]:
    """How many rows each table a request could write to holds, the events received (with
    their outcomes and deliveries), and the files in storage."""
    with stack.sessions()() as session:
        rows = tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Job, AuditEntry, Payment, Refund, OutboxMessage, Notification)
        )
        events = session.execute(
            select(WebhookEvent.event_id, WebhookEvent.outcome, WebhookEvent.deliveries)
        ).all()
    files = sum(1 for path in storage.rglob("*") if path.is_file())
    return (*rows, hash(frozenset(map(tuple, events))), files)


def knocks(stack: Stack, job_id: str) -> list[tuple[str, str, str, bytes | None, dict]]:
    """(door, method, path, JSON body, headers): each carries a NUL or a lone surrogate
    where the door reads text, and is otherwise what that door takes."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    image = f"{stack.images}/photo.jpg"
    session_id = stack.session_of(job_id)

    def signed(event: dict) -> tuple[bytes, dict]:
        payload = raw(event)
        return payload, {"Stripe-Signature": sign_payload(payload, SECRET)}

    def event(**changes: Any) -> dict:
        """The paid job's checkout.session.completed as Stripe sends it, with changes."""
        obj = stack.stripe.v1.checkout.sessions.retrieve(session_id).to_dict()
        return {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": "checkout.session.completed",
            "livemode": False,
            "data": {"object": {**obj, **changes.pop("object", {})}},
            **changes,
        }

    buyer = stack.as_buyer(job_id)
    return [
        ("customer", "GET", "/api/jobs/%00", None, {}),
        ("customer", "GET", f"/api/jobs/{job_id}%00", None, buyer),
        ("customer", "GET", f"/api/jobs/{job_id}?lang=%00", None, {}),
        ("customer", "POST", "/api/jobs/a%00b/return", raw({"session_id": "cs_x"}), {}),
        ("customer", "POST", f"/api/jobs/{job_id}/return", raw({"session_id": NUL}), buyer),
        ("customer", "POST", f"/api/jobs/{job_id}/return", raw({"session_id": SURROGATE}), {}),
        ("customer", "POST", "/api/checkout", raw({"image_url": image, "language": "e\0n"}), {}),
        ("customer", "POST", "/api/checkout", raw({"image_url": image + NUL}), {}),
        ("customer", "POST", "/api/checkout", raw({"image_url": image, "x\0": 1}), {}),
        ("customer", "POST", "/api/checkout", raw({"image_url": image, "model": SURROGATE}), {}),
        ("lost links", "POST", "/api/links", raw({"email": "buyer\0@example.com"}), {}),
        ("lost links", "POST", "/api/links", raw({"email": f"{SURROGATE}@example.com"}), {}),
        ("previews", "POST", "/api/previews", raw({"image_url": image, "model": NUL}), {}),
        ("previews", "POST", "/api/previews", raw({"image_url": image, "tag": [[SURROGATE]]}), {}),
        ("previews", "GET", "/api/previews/%00", None, {}),
        ("previews", "GET", "/api/previews/a%00b/after.png", None, {}),
        ("downloads", "GET", "/downloads/%00", None, {}),
        ("downloads", "GET", f"/downloads/{job_id}%00.x", None, {}),
        ("admin", "GET", "/admin/jobs?q=%00", None, admin),
        ("admin", "GET", "/admin/jobs?status=%00&q=a", None, admin),
        ("admin", "GET", "/admin/jobs/%00", None, admin),
        ("admin", "POST", f"/admin/jobs/{job_id}%00/retry", None, admin),
        ("admin", "POST", "/admin/jobs/%00/fulfil", None, admin),
        ("admin", "POST", f"/admin/jobs/{job_id}/refund", raw({"reason": f"fraud{NUL}"}), admin),
        ("admin", "POST", "/admin/erase", raw({"email": "buyer\0@example.com"}), admin),
        ("admin", "GET", "/admin/events?job=%00", None, admin),
        ("admin", "GET", "/admin/events?type=%00&outcome=%00", None, admin),
        ("admin", "GET", "/admin/events/evt%00x", None, admin),
        ("admin", "POST", "/admin/events/evt%00x/replay", None, admin),
        ("admin", "GET", "/admin/reports/revenue?since=%00", None, admin),
        ("admin", "GET", "/admin/reports/revenue?%00=1", None, admin),
        # A signed event's own id or type (what it is stored under): never Stripe's. What a
        # buyer typed inside a real event is applied, cleaned (test_attack.py).
        ("webhooks", "POST", "/webhooks/stripe", *signed(event(id=f"evt_{NUL}"))),
        ("webhooks", "POST", "/webhooks/stripe", *signed(event(type=f"checkout.{SURROGATE}"))),
        ("other", "GET", "/static/smi-checkout.js%00", None, {}),
        ("other", "GET", "/no-such-door/%00", None, {}),
    ]


def test_text_no_database_stores_is_a_typed_400_at_every_door_and_changes_nothing(
    database_url, tmp_path
):
    with start_stack(database_url, tmp_path, SMI_ADMIN_TOKEN=ADMIN_TOKEN) as stack:
        job_id = paid_job(stack)
        storage = tmp_path / "storage"
        before, status = footprint(stack, storage), stack.status(job_id, as_buyer=True)
        wrong = []
        for door, method, path, body, headers in knocks(stack, job_id):
            response = httpx.request(
                method,
                f"{stack.gateway}{path}",
                content=body,
                headers={**headers, **({"Content-Type": "application/json"} if body else {})},
                timeout=30,
            )
            try:
                error = response.json()["error"]
                typed = error["type"] == "invalid_characters" and error["message"]
            except (ValueError, KeyError, TypeError):
                typed = False
            if response.status_code != 400 or not typed:
                wrong.append((door, method, path, response.status_code, response.text[:160]))
        assert not wrong, "\n".join(map(str, wrong))
        assert footprint(stack, storage) == before
        assert stack.status(job_id, as_buyer=True) == status
        # Nothing broke on the way: the same doors still serve clean requests.
        assert stack.checkout().status_code == 201
        events = httpx.get(
            f"{stack.gateway}/admin/events",
            params={"job": job_id},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert events.status_code == 200 and events.json()["events"]


def money_in(text: str) -> dict[str, float]:
    """The money series of an exposition, by name."""
    wanted = ("smi_paid_minor_units", "smi_refunded_minor_units", "smi_payments", "smi_disputes")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(wanted)
    }


def test_metrics_answer_only_the_metrics_token(tmp_path):
    database = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    with start_stack(database, tmp_path, SMI_METRICS_TOKEN=METRICS_TOKEN) as stack:
        job_id = paid_job(stack)
        strangers = [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer not-the-metrics-token-at-all"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        ]
        for headers in strangers:
            response = httpx.get(f"{stack.gateway}/metrics", headers=headers, timeout=30)
            assert response.status_code == 401, (headers, response.text)
            assert response.json()["error"]["type"] == "unauthorized"
            assert response.headers["www-authenticate"] == 'Bearer realm="smi-metrics"'
            assert "smi_" not in response.text
        scraped = httpx.get(
            f"{stack.gateway}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=30,
        )
        assert scraped.status_code == 200
        paid = stack.status(job_id)["amount_cents"]
        assert money_in(scraped.text)["smi_paid_minor_units_total"] == paid
        # A gateway with no token set keeps /metrics closed, whatever is sent.
        closed = dataclasses.replace(stack.config, metrics_token=None, background_in_process=False)
        with serve(create_app(closed)) as gateway:
            for headers in ({}, {"Authorization": f"Bearer {METRICS_TOKEN}"}):
                response = httpx.get(f"{gateway}/metrics", headers=headers, timeout=30)
                assert response.status_code == 401 and "smi_" not in response.text


def block(folder: Path) -> None:
    """Storage at ``folder`` fails from now on: a file stands where its folder was."""
    shutil.rmtree(folder)
    folder.write_text("not a folder")


def test_readiness_names_what_is_down_and_never_where(tmp_path, caplog):
    closed = free_port()  # nothing listens there
    blocker = tmp_path / "blocker"
    config = GatewayConfig.from_env(
        {
            "SMI_STRIPE_TEST_SECRET_KEY": API_KEY,
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": SECRET,
            "SMI_STRIPE_API_BASE": f"http://127.0.0.1:{closed}",
            "SMI_DATABASE_URL": f"postgresql://smi:db-pass-9d1@127.0.0.1:{closed}/smi",
            "SMI_BROKER_URL": f"amqp://smi:mq-pass-4e7@127.0.0.1:{closed}//",
            "SMI_STORAGE_URL": f"file://{blocker}",
            "SMI_DATA_DIR": str(tmp_path),
            "SMI_BACKGROUND_IN_PROCESS": "false",
        }
    )
    leaks = [
        "127.0.0.1", str(closed), "postgres", "psycopg", "sqlalchemy", "amqp", "kombu",
        "pass-", "smi:", "blocker", str(tmp_path), "Error", "refused",
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gateway"), serve(create_app(config)) as gateway:
        block(blocker)
        response = httpx.get(f"{gateway}/readyz", timeout=30)
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {"database": "unavailable", "broker": "unavailable", "storage": "unavailable"},
    }
    assert not [leak for leak in leaks if leak in response.text], response.text
    # The why is the operator's, in the log.
    logged = "\n".join(r.getMessage() for r in caplog.records if "not ready" in r.getMessage())
    for name in ("database", "broker", "storage"):
        assert f"the {name} does not answer" in logged, logged
    assert str(closed) in logged, logged


@pytest.mark.timeout(120)
def test_the_worker_s_readiness_names_what_is_down_and_never_where(tmp_path, caplog):
    closed = free_port()
    blocker = tmp_path / "blocker"
    broker_url = f"amqp://smi:mq-pass-4e7@127.0.0.1:{closed}//"
    storage = Storage(f"file://{blocker}")
    block(blocker)
    config = WorkerConfig.from_env(
        {"SMI_BROKER_URL": broker_url, "SMI_STORAGE_URL": storage.url, "SMI_WORKER_DEVICE": "cpu"}
    )
    worker = UpscaleWorker(Broker(broker_url), storage, ModelRegistry.from_env({}), config)
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="upscaler"):
        server = serve_health(port, worker.readiness, host="127.0.0.1")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        finally:
            server.shutdown()
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"] == "unavailable" and checks["storage"] == "unavailable"
    leaks = ["127.0.0.1", str(closed), "amqp", "kombu", "pass-", "blocker", str(tmp_path), "Error"]
    assert not [leak for leak in leaks if leak in response.text], response.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "the broker does not answer" in logged and "the storage does not answer" in logged
