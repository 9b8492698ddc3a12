"""The gateway's Stripe handlers and buyer endpoints in-process: the Starlette app through
httpx's ASGI transport (no server, no socket, no thread of ours), fed the events a Stripe
account emits. The account is the emulator's, in this process too: its objects carry the
fields of Stripe's published fixtures (checked here, and in tests/test_emulator.py), and
the gateway asks it what a webhook leaves out (a charge's refunds) through the stripe SDK.

The real-process tests (test_system.py, reliability/) keep what needs processes: kills,
outages, the broker, the workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from devtools.emulator.app import EmulatorSettings, create_emulator_app
from devtools.emulator.state import EmulatorState
from devtools.emulator.webhooks import sign_payload
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.lifecycle import NewJob, create_job
from gateway.store.tables import Job, OutboxMessage, Payment, Refund, WebhookEvent
from servers import free_port, serve

SECRET = "whsec_in_process"
ADMIN = "admin-token-in-process-0123"
FIELDS = json.loads((Path(__file__).parent / "data" / "stripe_fixture_fields.json").read_text())
SHAPES = {
    "cs": "checkout.session",
    "pi": "payment_intent",
    "ch": "charge",
    "re": "refund",
    "dp": "dispute",
}


class Gateway:
    """The app with its lifespan entered, on an event loop of its own; sync calls."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.app = create_app(config)
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self.lifespan.__aenter__())
        transport = httpx.ASGITransport(app=self.app, client=("203.0.113.9", 40000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
        self.sessions = session_factory(create_database_engine(config.database_url))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, path, **kwargs))

    def deliver(self, event: dict[str, Any], secret: str = SECRET) -> httpx.Response:
        """A webhook delivery of ``event``, signed as Stripe signs it."""
        payload = json.dumps(event).encode()
        headers = {"Stripe-Signature": sign_payload(payload, secret)}
        headers["Content-Type"] = "application/json"
        return self.request("POST", "/webhooks/stripe", content=payload, headers=headers)

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            return session.get_one(Job, job_id)

    def rows(self, table: type, job_id: str) -> list[Any]:
        with self.sessions() as session:
            return list(session.scalars(select(table).where(table.job_id == job_id)))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.lifespan.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[str, EmulatorState]]:
    """The Stripe emulator's API on loopback, and its account state to drive directly."""
    port = free_port()
    app = create_emulator_app(EmulatorSettings(public_url=f"http://127.0.0.1:{port}"))
    with serve(app, port=port) as url:
        yield url, app.state.emulator


@pytest.fixture
def stripe(account) -> Stripe:
    return Stripe(account[1])


@pytest.fixture
def gateway(tmp_path, database_url, account) -> Iterator[Gateway]:
    config = GatewayConfig.from_env(
        {
            "SMI_DATA_DIR": str(tmp_path),
            "SMI_DATABASE_URL": database_url,
            "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_in_process",
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": SECRET,
            "SMI_STRIPE_API_BASE": account[0],
            "SMI_BACKGROUND_IN_PROCESS": "false",
            "SMI_ADMIN_TOKEN": ADMIN,
        }
    )
    migrate(create_database_engine(database_url))  # as smi-gateway migrate does before a deploy
    app = Gateway(config)
    try:
        yield app
    finally:
        app.close()


class Stripe:
    """A test-mode Stripe account in this process; what it emits is collected."""

    def __init__(self, state: EmulatorState) -> None:
        self.events: list[dict[str, Any]] = []
        self.state = state
        state._emit = self.events.append  # every event it emits comes here, none is sent

    def checkout(self, gateway: Gateway, amount: int = 192) -> tuple[str, str]:
        """A job awaiting payment and its Checkout Session, as ``POST /api/checkout``
        leaves them; returns (job id, session id)."""
        with gateway.sessions.begin() as session:
            job = create_job(
                session,
                NewJob("https://img.example/a.jpg", "sources/a.jpg", 2000, 2000, amount, "usd"),
            )
            job_id = job.id
            made = self.state.create_checkout_session(
                {
                    "mode": "payment",
                    "line_items": [
                        {
                            "price_data": {
                                "currency": "usd",
                                "product_data": {"name": "High-Resolution Image (4x)"},
                                "unit_amount": amount,
                            },
                            "quantity": 1,
                        }
                    ],
                    "success_url": "http://shop.test/?session_id={CHECKOUT_SESSION_ID}",
                    "metadata": {"job_id": job_id},
                    "payment_intent_data": {"metadata": {"job_id": job_id}},
                    "client_reference_id": job_id,
                }
            )
            job.stripe_session_id = made["id"]
        return job_id, str(made["id"])

    def emitted(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]


def carries_stripes_fields(event: dict[str, Any]) -> bool:
    """The event and its object have every top-level field of Stripe's published fixture."""
    obj = event["data"]["object"]
    shape = FIELDS["objects"][SHAPES[str(obj["id"]).split("_")[0]]]
    return set(FIELDS["objects"]["event"]) <= event.keys() and set(shape) <= obj.keys()


def test_a_paid_checkout_is_one_payment_and_one_upscale_whatever_the_deliveries(gateway, stripe):
    job_id, session_id = stripe.checkout(gateway)
    assert stripe.state.pay(session_id, "4242 4242 4242 4242").outcome == "paid"
    (completed,) = stripe.emitted("checkout.session.completed")
    assert carries_stripes_fields(completed)

    for event in stripe.events:  # in the order Stripe sent them
        assert gateway.deliver(event).status_code == 200
    assert gateway.job(job_id).status == "pending"  # paid, its upscale queued
    (payment,) = gateway.rows(Payment, job_id)
    assert (payment.amount_cents, payment.currency) == (192, "usd")
    assert [m.kind for m in gateway.rows(OutboxMessage, job_id) if m.kind == "upscale"] == [
        "upscale"
    ]

    # Stripe delivers again, twice: nothing changes.
    for _ in range(2):
        answer = gateway.deliver(completed)
        assert answer.status_code == 200
    assert len(gateway.rows(Payment, job_id)) == 1
    assert len([m for m in gateway.rows(OutboxMessage, job_id) if m.kind == "upscale"]) == 1
    with gateway.sessions() as session:
        stored = session.get_one(WebhookEvent, completed["id"])
        assert stored.type == "checkout.session.completed"


def test_a_forged_or_stale_signature_is_refused_and_nothing_is_recorded(gateway, stripe):
    job_id, session_id = stripe.checkout(gateway)
    stripe.state.pay(session_id, "4242424242424242")
    (completed,) = stripe.emitted("checkout.session.completed")
    assert gateway.deliver(completed, secret="whsec_someone_else").status_code == 400
    payload = json.dumps(completed).encode()
    stale = {"Stripe-Signature": sign_payload(payload, SECRET, timestamp=1_600_000_000)}
    assert (
        gateway.request("POST", "/webhooks/stripe", content=payload, headers=stale).status_code
        == 400
    )
    assert gateway.job(job_id).status == "awaiting_payment"
    with gateway.sessions() as session:
        assert session.get(WebhookEvent, completed["id"]) is None


def test_an_expired_checkout_ends_the_job_without_money(gateway, stripe):
    job_id, session_id = stripe.checkout(gateway)
    stripe.state.expire_session(session_id)
    (expired,) = stripe.emitted("checkout.session.expired")
    assert carries_stripes_fields(expired)
    assert gateway.deliver(expired).status_code == 200
    assert gateway.job(job_id).status == "expired"
    assert gateway.rows(Payment, job_id) == []


def test_a_dashboard_refund_is_recorded_once_from_its_events_in_either_order(gateway, stripe):
    job_id, session_id = stripe.checkout(gateway)
    stripe.state.pay(session_id, "4242424242424242")
    for event in stripe.events:
        gateway.deliver(event)
    intent = gateway.job(job_id).stripe_payment_intent_id
    stripe.events.clear()
    refund = stripe.state.create_refund({"payment_intent": intent})  # made in the Dashboard
    kinds = [event["type"] for event in stripe.events]
    assert "charge.refunded" in kinds, kinds
    for event in stripe.events:
        assert carries_stripes_fields(event), event["type"]
    for event in reversed(stripe.events):  # the last first: deliveries come in any order
        assert gateway.deliver(event).status_code == 200
    assert gateway.job(job_id).status == "refunded"
    (row,) = gateway.rows(Refund, job_id)
    assert (row.stripe_refund_id, row.amount_cents, row.status) == (refund["id"], 192, "succeeded")
    for event in stripe.events:  # and again
        gateway.deliver(event)
    assert len(gateway.rows(Refund, job_id)) == 1


def test_a_dispute_pauses_the_job_and_a_won_one_gives_it_back(gateway, stripe):
    job_id, session_id = stripe.checkout(gateway)
    stripe.state.pay(session_id, "4000 0000 0000 0259")  # paid, then disputed
    for event in stripe.events:
        assert carries_stripes_fields(event), event["type"]
        assert gateway.deliver(event).status_code == 200
    assert gateway.job(job_id).status == "disputed"
    (opened,) = stripe.emitted("charge.dispute.created")
    dispute = opened["data"]["object"]
    stripe.events.clear()
    # Stripe's test mode decides a dispute by this evidence: won.
    winning = {"evidence": {"uncategorized_text": "winning_evidence"}}
    stripe.state.update_dispute(dispute["id"], winning)
    kinds = [event["type"] for event in stripe.events]
    assert kinds == ["charge.dispute.updated", "charge.dispute.closed"]
    for event in stripe.events:
        assert gateway.deliver(event).status_code == 200
    assert gateway.job(job_id).status == "pending"  # its upscale goes on


def test_the_buyer_sees_the_job_with_the_key_and_a_stranger_sees_no_payment_proof(gateway, stripe):
    job_id, session_id = stripe.checkout(gateway)
    stranger = gateway.request("GET", f"/api/jobs/{job_id}")
    assert stranger.status_code == 200
    assert session_id not in stranger.text
    assert gateway.request("GET", "/api/jobs/job_nothing_here").status_code == 404
    assert gateway.request("GET", "/admin/jobs").status_code == 401
    listed = gateway.request("GET", "/admin/jobs", headers={"Authorization": f"Bearer {ADMIN}"})
    assert [job["job_id"] for job in listed.json()["jobs"]] == [job_id]
