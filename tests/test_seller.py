"""What a seller running the shop beside Stripe's Dashboard meets: refunds and disputes made
elsewhere, the event store, Checkout options, and the notifications that tell them.

The gateway runs in-process with its background work driven by hand
(``Loop``), against the Stripe emulator through the SDK, SQLite and
PostgreSQL, a real SMTP server and a real webhook endpoint on loopback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from test_gateway_app import post_event, start_stack
from test_recovery import TOKEN, Loop, hand_driven

from gateway.delivery.mailer import Mailer
from gateway.delivery.seller import SellerNotifier
from gateway.money.payments import Payments
from gateway.money.reconciliation import Reconciler
from gateway.store.tables import Dispute, Job, Notification, Payment, Refund, WebhookEvent
from servers import MailSink, serve, wait_for
from shared.messages import EventKind
from shared.storage import Storage

SELLER_SECRET = "seller-webhook-secret-0123456789"
DISPUTE_CARD = "4000000000000259"
REFUND_FAILS_CARD = "4000000000005126"
BIN = Path(sys.executable).parent


@dataclass
class SellerEndpoint:
    """The seller's webhook receiver: checks each signature, can fail on purpose."""

    received: list[dict] = field(default_factory=list)
    failures_left: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        stamp, _, signature = request.headers["smi-signature"].partition(",v1=")
        expected = hmac.new(
            SELLER_SECRET.encode(), f"{stamp.removeprefix('t=')}.".encode() + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return Response(status_code=400)
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return Response(status_code=503)
            notice = json.loads(body)
            assert request.headers["smi-notification-id"] == notice["id"]
            self.received.append(notice)
        return Response(status_code=204)

    def of_type(self, kind: str) -> list[dict]:
        with self.lock:
            return [n for n in self.received if n["type"] == kind]


@dataclass
class Shop:
    """A gateway with a seller who listens by email and by webhook."""

    loop: Loop
    mail: MailSink
    endpoint: SellerEndpoint

    def notify(self) -> int:
        config = self.loop.stack.config
        mail = dataclasses.replace(config.mail, smtp_url=self.mail.url)
        seller = dataclasses.replace(config.seller, backoff_s=0)
        return SellerNotifier(self.loop.sessions, seller, Mailer(mail), mail.sender).send_due()

    def completed(self, job_id: str) -> str | None:
        """The worker stores the result and says so; the download link, if there is one."""
        key = f"jobs/{job_id}/result.png"
        Storage(self.loop.stack.config.storage_url).put(key, b"\x89PNG result")
        self.loop.event(job_id, EventKind.COMPLETED, result_key=key)
        return self.loop.stack.status(job_id, as_buyer=True).get("download_url")

    def rows(self, model, **where):
        with self.loop.sessions() as session:
            query = select(model).filter_by(**where)
            return list(session.scalars(query))


@contextmanager
def open_shop(database_url: str, tmp_path: Path, **extra: str) -> Iterator[Shop]:
    """A hand-driven gateway whose seller listens by email and by signed webhook."""
    endpoint = SellerEndpoint()
    hooks = Starlette(routes=[Route("/seller", endpoint.endpoint, methods=["POST"])])
    with serve(hooks) as hooks_url, MailSink() as mail:
        seller = {
            "SMI_SELLER_EMAIL": "seller@shop.test",
            "SMI_SELLER_WEBHOOK_URL": f"{hooks_url}/seller",
            "SMI_SELLER_WEBHOOK_SECRET": SELLER_SECRET,
        }
        with hand_driven(database_url, tmp_path, **seller, **extra) as loop:
            yield Shop(loop, mail, endpoint)


@pytest.fixture
def shop(database_url, tmp_path) -> Iterator[Shop]:
    with open_shop(database_url, tmp_path) as opened:
        yield opened


def test_dashboard_refunds_are_recorded_partial_then_full_and_the_seller_told_once(shop):
    loop = shop.loop
    job_id = loop.buy()
    url = str(shop.completed(job_id))
    intent = loop.job(job_id).stripe_payment_intent_id
    first = loop.stack.stripe.v1.refunds.create({"payment_intent": intent, "amount": 20})
    wait_for(lambda: len(shop.rows(Refund, job_id=job_id)) == 1)
    assert loop.job(job_id).status == "completed" and httpx.get(url).status_code == 200
    second = loop.stack.stripe.v1.refunds.create({"payment_intent": intent})
    wait_for(lambda: loop.job(job_id).status == "refunded")
    assert httpx.get(url).status_code == 410
    rows = {r.stripe_refund_id: r for r in shop.rows(Refund, job_id=job_id)}
    assert {key: (r.amount_cents, r.status) for key, r in rows.items()} == {
        first.id: (20, "succeeded"),
        second.id: (30, "succeeded"),
    }
    assert all(r.idempotency_key == f"stripe-{r.stripe_refund_id}" for r in rows.values())
    # The admin's report and reconciliation agree with Stripe.
    report = loop.admin("GET", "/admin/reports/revenue").json()["days"][0]
    assert (report["gross_cents"], report["refunded_cents"], report["net_cents"]) == (50, 50, 0)
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []
    # No refund of ours, ever: an admin's refund is refused, the Refunder has nothing due.
    assert loop.admin("POST", f"/admin/jobs/{job_id}/refund", json={}).status_code == 409
    assert loop.refunder().refund_due() == 0
    assert len(loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data) == 2
    # Each refund once to the seller, by email and webhook; the customer once.
    assert shop.notify() == 2 * 3  # sale + two refunds, two channels each
    wait_for(lambda: len(shop.endpoint.of_type("refund")) == 2)
    assert {n["refund_id"] for n in shop.endpoint.of_type("refund")} == {first.id, second.id}
    assert len(shop.mail.of_kind("seller-refund")) == 2
    assert len(shop.mail.of_kind("seller-sale", job_id)) == 1
    assert shop.notify() == 0
    assert loop.outbox(job_id).count("email:refunded:1") == 1


def test_a_dashboard_refund_while_ours_waits_leaves_one_refund_whatever_the_order(shop):
    loop = shop.loop
    for refunder_first in (False, True):
        job_id = loop.buy()
        loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
        intent = loop.job(job_id).stripe_payment_intent_id
        if refunder_first:
            assert loop.refunder().refund_due() == 1
        made_by_hand = None
        try:
            made_by_hand = loop.stack.stripe.v1.refunds.create({"payment_intent": intent})
        except Exception as exc:  # ours went first: Stripe says it is refunded already
            assert "already been refunded" in str(exc)
        wait_for(lambda job_id=job_id: loop.job(job_id).status == "refunded")
        loop.refunder().refund_due()
        at_stripe = loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data
        assert len(at_stripe) == 1
        if made_by_hand is not None:
            assert at_stripe[0].id == made_by_hand.id
        rows = shop.rows(Refund, job_id=job_id)
        succeeded = [r for r in rows if r.status == "succeeded"]
        # The job ends refunded in the transaction that records the refund that did it.
        assert [r.stripe_refund_id for r in succeeded] == [at_stripe[0].id], "\n".join(
            map(repr, rows)
        )
        assert all(r.status in ("succeeded", "canceled") for r in rows)
        assert loop.outbox(job_id).count("email:refunded:1") == 1
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []


def test_charge_refunded_before_the_refunds_own_event_ends_the_job_with_its_rows(
    database_url, tmp_path
):
    """Stripe does not order its events: a ``charge.refunded`` that comes before the
    ``refund.created`` of the refund that caused it still records that refund, in the
    transaction that ends the job; the late events and any replay change nothing."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        job_id = body["job_id"]
        assert stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"

        def events(kind: str) -> list[dict]:  # newest first
            return [e.to_dict() for e in stack.stripe.v1.events.list({"type": kind}).data]

        def post(event: dict) -> str:
            return str(post_event(stack, event).json()["result"])

        def replay(event: dict) -> str:
            return str(loop.admin("POST", f"/admin/events/{event['id']}/replay").json()["outcome"])

        def refunds() -> dict[str, tuple[str, int]]:
            rows = loop.refunds(job_id)
            return {str(r.stripe_refund_id): (r.status, r.amount_cents) for r in rows}

        assert post(events("checkout.session.completed")[0]) == "applied"
        intent = loop.job(job_id).stripe_payment_intent_id
        part = stack.stripe.v1.refunds.create({"payment_intent": intent, "amount": 20})
        (partly,) = events("charge.refunded")
        assert post(partly) == "applied"
        assert refunds() == {part.id: ("succeeded", 20)}
        assert loop.job(job_id).status == "pending"  # the rest is still the buyer's order
        trail = len(loop.audit(job_id))
        assert replay(partly) == "no change" and len(loop.audit(job_id)) == trail

        rest = stack.stripe.v1.refunds.create({"payment_intent": intent})
        wholly = events("charge.refunded")[0]
        assert wholly["data"]["object"]["refunded"] is True
        assert post(wholly) == "applied"
        assert loop.job(job_id).status == "refunded"
        assert refunds() == {part.id: ("succeeded", 20), rest.id: ("succeeded", rest.amount)}
        trail = len(loop.audit(job_id))
        for created in events("refund.created"):
            assert post(created) == "no change"
        assert replay(wholly) == "no change" and replay(partly) == "no change"
        assert len(loop.audit(job_id)) == trail
        assert loop.outbox(job_id).count("email:refunded:1") == 1


def test_a_refund_that_fails_after_succeeding_needs_an_admin_and_alerts_the_seller(shop):
    loop = shop.loop
    job_id = loop.buy(REFUND_FAILS_CARD)
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.refunder().refund_due() == 1
    assert loop.job(job_id).status == "refunded"
    wait_for(lambda: loop.job(job_id).status == "refund_failed", timeout=20)  # refund.failed
    (row,) = shop.rows(Refund, job_id=job_id)
    assert row.status == "failed" and "failed" in (row.last_error or "")
    assert "needs a person" in loop.job(job_id).customer_message
    shop.endpoint.failures_left = 2  # the seller's endpoint is down for a moment: retried
    for _ in range(4):
        shop.notify()
    wait_for(lambda: len(shop.endpoint.of_type("refund_failed")) == 1)
    alert = shop.endpoint.of_type("refund_failed")[0]
    assert alert["job_id"] == job_id and alert["refund_id"] == row.stripe_refund_id
    (email,) = shop.mail.of_kind("seller-refund_failed", job_id)
    assert email["To"] == "seller@shop.test" and "ACTION NEEDED" in email["Subject"]
    # The events that did it are on record, in order, with what each did.
    events = loop.admin("GET", "/admin/events", params={"job": job_id}).json()["events"]
    outcomes = {e["type"]: e["outcome"] for e in events}
    assert outcomes["refund.failed"] in ("applied", "no change")
    assert outcomes["checkout.session.completed"] == "applied"


def test_a_dispute_pauses_delivery_and_our_refunds_and_a_won_one_restores_them(shop):
    loop = shop.loop
    job_id = loop.buy(DISPUTE_CARD)
    wait_for(lambda: loop.job(job_id).status == "disputed")  # before the work was done
    (dispute,) = shop.rows(Dispute, job_id=job_id)
    assert dispute.status == "needs_response" and dispute.job_status_before == "pending"
    assert "disputed" in loop.stack.status(job_id)["message"]
    # The worker finishes meanwhile: the result is kept, nothing delivered.
    assert shop.completed(job_id) is None
    assert loop.job(job_id).status == "disputed"
    # The seller answers with evidence; test mode's "winning_evidence" wins.
    loop.stack.stripe.v1.disputes.update(
        dispute.id, {"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    wait_for(lambda: loop.job(job_id).status == "completed")
    url = loop.stack.status(job_id, as_buyer=True)["download_url"]
    assert httpx.get(url).status_code == 200
    assert shop.rows(Dispute, job_id=job_id)[0].status == "won"
    shop.notify()
    assert [n["type"] for n in shop.endpoint.received if n["job_id"] == job_id] == [
        "sale",
        "dispute_opened",
        "dispute_closed",
    ]
    opened = shop.endpoint.of_type("dispute_opened")[0]
    assert opened["dispute_id"] == dispute.id and opened["evidence_due_by"]
    # The dispute named only the charge: the payment now knows it.
    (payment,) = shop.rows(Payment, job_id=job_id)
    assert payment.stripe_charge_id == dispute.stripe_charge_id


def test_a_lost_dispute_keeps_the_job_disputed_and_the_report_shows_it(shop):
    loop = shop.loop
    job_id = loop.buy(DISPUTE_CARD)
    wait_for(lambda: loop.job(job_id).status == "disputed")
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: x")  # no refund: disputed
    assert loop.refunder().refund_due() == 0
    (dispute,) = shop.rows(Dispute, job_id=job_id)
    loop.stack.stripe.v1.disputes.close(dispute.id)
    wait_for(lambda: shop.rows(Dispute, job_id=job_id)[0].status == "lost")
    assert loop.job(job_id).status == "disputed"
    intent = loop.job(job_id).stripe_payment_intent_id
    assert loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data == []
    report = loop.admin("GET", "/admin/reports/revenue").json()["days"][0]
    assert (report["gross_cents"], report["disputed_cents"], report["net_cents"]) == (50, 50, 0)


def test_every_event_is_stored_with_its_outcome_and_replays_change_nothing(shop):
    loop = shop.loop
    job_id = loop.buy()
    wait_for(lambda: len(loop.admin("GET", "/admin/events").json()["events"]) >= 3)
    events = {e["type"]: e for e in loop.admin("GET", "/admin/events").json()["events"]}
    assert events["checkout.session.completed"]["outcome"] == "applied"
    assert events["checkout.session.completed"]["job_id"] == job_id
    assert events["charge.succeeded"]["outcome"] == "ignored"
    assert events["charge.succeeded"]["detail"] == "not a type the gateway acts on"
    paid = events["checkout.session.completed"]["event_id"]
    stored = loop.admin("GET", f"/admin/events/{paid}").json()["event"]
    assert stored["payload"]["data"]["object"]["metadata"]["job_id"] == job_id
    replayed = loop.admin("POST", f"/admin/events/{paid}/replay").json()
    assert (
        replayed["outcome"] == "no change"
        and replayed["event"]["detail"] == "replayed by an admin (it was applied)"
    )
    assert loop.outbox(job_id).count("upscale:1") == 1  # nothing happened twice
    assert loop.admin("POST", "/admin/events/evt_nope/replay").status_code == 404
    # A second delivery of the same event is counted, not applied.
    with loop.sessions() as session:
        before = session.get_one(WebhookEvent, paid).deliveries
    answer = post_event(loop.stack, stored["payload"])
    assert answer.json()["result"] == "duplicate"
    with loop.sessions() as session:
        assert session.get_one(WebhookEvent, paid).deliveries == before + 1
    # smi-admin: the same from a terminal.
    env = {**os.environ, "SMI_ADMIN_TOKEN": TOKEN, "SMI_ADMIN_URL": loop.stack.gateway}
    listed = subprocess.run(
        [BIN / "smi-admin", "events", "--job", job_id], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0 and paid in listed.stdout
    assert "no change" in listed.stdout and "replayed by an admin" in listed.stdout
    assert "(2 deliveries)" in listed.stdout
    again = subprocess.run(
        [BIN / "smi-admin", "replay", paid], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stdout.strip() == f"{paid}: no change"


def test_an_event_before_its_payment_is_refused_for_now_then_applied(database_url, tmp_path):
    """A dispute delivered before the checkout it disputes: 503, applied when it comes again."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        assert stack.pay(body["checkout_url"], DISPUTE_CARD)["outcome"] == "paid"
        events = {e.type: e.to_dict() for e in stack.stripe.v1.events.list().data}
        dispute = events["charge.dispute.created"]
        too_early = post_event(stack, dispute)
        assert too_early.status_code == 503 and too_early.headers["retry-after"] == "30"
        assert post_event(stack, events["checkout.session.completed"]).json()["result"] == "applied"
        assert post_event(stack, dispute).json()["result"] == "applied"
        assert loop.job(body["job_id"]).status == "disputed"
        stored = loop.admin("GET", f"/admin/events/{dispute['id']}").json()["event"]
        assert (stored["outcome"], stored["deliveries"]) == ("applied", 2)
        # A dispute of a payment that is not ours (another product on the same account):
        # Stripe's payment intent names no job of ours, so it is stored as ignored.
        other = stack.stripe.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "success_url": "http://shop.test/",
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 900,
                            "product_data": {"name": "T-shirt"},
                        },
                        "quantity": 1,
                    }
                ],
            }
        )
        assert stack.pay(str(other.url), DISPUTE_CARD)["outcome"] == "paid"
        foreign = next(
            e.to_dict()
            for e in stack.stripe.v1.events.list().data
            if e.type == "charge.dispute.created" and e.id != dispute["id"]
        )
        assert post_event(stack, foreign).json()["result"] == "ignored"
        # A refund of a payment Stripe itself does not know (404 there): not ours, ignored.
        unknown = {
            "id": "evt_unknown_refund",
            "type": "refund.created",
            "livemode": False,
            "data": {"object": {"id": "re_x", "object": "refund", "payment_intent": "pi_nope"}},
        }
        assert post_event(stack, unknown).json()["result"] == "ignored"
        stored = loop.admin("GET", f"/admin/events/{foreign['id']}").json()["event"]
        assert stored["detail"] == "about no job of ours"


@pytest.fixture
def options_shop(database_url, tmp_path) -> Iterator[Shop]:
    with open_shop(
        database_url,
        tmp_path,
        SMI_ALLOW_PROMOTION_CODES="true",
        SMI_AUTOMATIC_TAX="true",
        SMI_INVOICE_CREATION="true",
        SMI_COLLECT_BILLING_ADDRESS="true",
    ) as opened:
        yield opened


def test_checkout_options_pass_through_and_what_stripe_took_is_what_is_recorded(options_shop):
    shop, loop = options_shop, options_shop.loop
    stripe = loop.stack.stripe
    coupon = stripe.v1.coupons.create({"percent_off": 20, "duration": "once"})
    stripe.v1.promotion_codes.create(
        {"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "LAUNCH20"}
    )
    job_id = loop.buy(promotion_code="launch20", country="FR")
    checkout = stripe.v1.checkout.sessions.retrieve(loop.stack.session_of(job_id))
    assert checkout.allow_promotion_codes is True
    assert checkout.automatic_tax.enabled is True
    assert checkout.invoice_creation.enabled is True
    assert checkout.billing_address_collection == "required"
    # The price was 50: 20% off is 40, French VAT on top is 8.
    assert (checkout.amount_subtotal, checkout.amount_total) == (50, 48)
    assert checkout.total_details.amount_discount == 10
    assert checkout.total_details.amount_tax == 8
    (payment,) = shop.rows(Payment, job_id=job_id)
    assert (payment.amount_cents, payment.tax_cents, payment.discount_cents) == (48, 8, 10)
    invoice = stripe.v1.invoices.retrieve(checkout.invoice)
    assert invoice.amount_paid == 48 and httpx.get(invoice.invoice_pdf).content[:5] == b"%PDF-"
    details = loop.admin("GET", f"/admin/jobs/{job_id}").json()
    assert details["payment"]["amount_cents"] == 48 and details["payment"]["tax_cents"] == 8
    report = loop.admin("GET", "/admin/reports/revenue").json()["days"][0]
    assert (report["gross_cents"], report["tax_cents"], report["discount_cents"]) == (48, 8, 10)
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []
    # A refund gives back what was paid, tax included.
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.refunder().refund_due() == 1
    (refund,) = stripe.v1.refunds.list({"payment_intent": payment.stripe_payment_intent_id}).data
    assert refund.amount == 48 and shop.rows(Refund, job_id=job_id)[0].amount_cents == 48
    shop.notify()
    sale = shop.endpoint.of_type("sale")[0]
    assert (sale["amount_cents"], sale["tax_cents"], sale["discount_cents"]) == (48, 8, 10)


def test_an_order_a_code_made_free_is_fulfilled_and_refunds_nothing(options_shop):
    shop, loop = options_shop, options_shop.loop
    stripe = loop.stack.stripe
    coupon = stripe.v1.coupons.create({"percent_off": 100})
    stripe.v1.promotion_codes.create({"coupon": coupon.id, "code": "FREE"})
    job_id = loop.buy(promotion_code="FREE", country="US")
    assert (
        loop.job(job_id).status == "pending" and loop.job(job_id).stripe_payment_intent_id is None
    )
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.job(job_id).status == "refunded"
    assert loop.refunder().refund_due() == 0
    assert stripe.v1.refunds.list().data == []
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []
    assert shop.rows(Notification, job_id=job_id)  # the sale was still reported


def test_a_wrong_code_or_missing_country_changes_nothing(options_shop):
    loop = options_shop.loop
    body = loop.stack.checkout().json()
    refused = loop.stack.pay(body["checkout_url"], "4242424242424242", promotion_code="NOPE")
    assert refused["outcome"] == "invalid_code"
    refused = loop.stack.pay(body["checkout_url"], "4242424242424242")
    assert refused["outcome"] == "address_required"
    assert loop.job(body["job_id"]).status == "awaiting_payment"


def test_a_lasting_reconciliation_mismatch_is_sent_to_the_seller_once(shop):
    loop = shop.loop
    loop.buy()
    # A session paid at Stripe that no job knows (another tool on the same account).
    stray = loop.stack.stripe.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "success_url": "http://shop.test/",
            "metadata": {"job_id": "job_made_up_elsewhere_000000"},
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 700,
                        "product_data": {"name": "Something else"},
                    },
                    "quantity": 1,
                }
            ],
        }
    )
    assert loop.stack.pay(str(stray.url), "4242424242424242")["outcome"] == "paid"
    reconciler = Reconciler(loop.sessions, Payments(loop.stack.config.stripe))
    reconciler.check()
    assert shop.rows(Notification, kind="reconciliation_mismatch") == []  # once may be a race
    reconciler.check()
    reconciler.check()
    rows = shop.rows(Notification, kind="reconciliation_mismatch")
    assert len(rows) == 2  # one by email, one by webhook
    shop.notify()
    (notice,) = shop.endpoint.of_type("reconciliation_mismatch")
    assert notice["mismatch"] == "paid_session_without_job" and notice["stripe_id"] == stray.id
    assert shop.mail.of_kind("seller-reconciliation_mismatch")


def test_after_a_partial_dashboard_refund_ours_returns_the_rest_and_no_more(shop):
    loop = shop.loop
    job_id = loop.buy()
    intent = loop.job(job_id).stripe_payment_intent_id
    by_hand = loop.stack.stripe.v1.refunds.create({"payment_intent": intent, "amount": 20})
    wait_for(lambda: len(shop.rows(Refund, job_id=job_id)) == 1)
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.refunder().refund_due() == 1
    wait_for(lambda: loop.job(job_id).status == "refunded")
    at_stripe = loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data
    assert sorted(r.amount for r in at_stripe) == [20, 30]  # the rest, not the whole again
    ours = next(
        r for r in shop.rows(Refund, job_id=job_id) if r.idempotency_key.startswith("refund-")
    )
    assert ours.idempotency_key == f"refund-{job_id}-1" and ours.amount_cents == 30
    assert ours.status == "succeeded" and ours.stripe_refund_id != by_hand.id
    report = loop.admin("GET", "/admin/reports/revenue").json()["days"][0]
    assert (report["refunded_cents"], report["net_cents"]) == (50, 0)
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []


def test_a_replayed_refund_created_after_the_refund_failed_changes_nothing(shop):
    loop = shop.loop
    job_id = loop.buy(REFUND_FAILS_CARD)
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.refunder().refund_due() == 1
    wait_for(lambda: loop.job(job_id).status == "refund_failed", timeout=20)
    events = loop.admin("GET", "/admin/events", params={"job": job_id}).json()["events"]
    created = next(e for e in events if e["type"] == "refund.created")
    replayed = loop.admin("POST", f"/admin/events/{created['event_id']}/replay").json()
    assert replayed["outcome"] == "no change"
    assert loop.job(job_id).status == "refund_failed"
    assert [r.status for r in shop.rows(Refund, job_id=job_id)] == ["failed"]


def test_a_dispute_won_after_retention_deleted_the_result_keeps_the_money(shop):
    loop = shop.loop
    job_id = loop.buy(DISPUTE_CARD)
    wait_for(lambda: loop.job(job_id).status == "disputed")
    (dispute,) = shop.rows(Dispute, job_id=job_id)
    with loop.sessions.begin() as session:  # delivered long ago, its result since deleted
        session.get_one(Dispute, dispute.id).job_status_before = "completed"
        job = session.get_one(Job, job_id)
        job.result_key = f"jobs/{job_id}/result.png"
        job.result_deleted_at = job.paid_at
    loop.stack.stripe.v1.disputes.update(
        dispute.id, {"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    wait_for(lambda: loop.job(job_id).status == "completed")
    assert loop.refunder().refund_due() == 0
    intent = loop.job(job_id).stripe_payment_intent_id
    assert loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data == []
    assert loop.job(job_id).finished_at is not None  # retention has a date to count from


def test_a_seller_who_listens_nowhere_gets_no_notification_rows(database_url, tmp_path):
    with hand_driven(database_url, tmp_path) as loop:
        job_id = loop.buy()  # the sale is applied by the gateway, which knows its channels
        with loop.sessions() as session:
            assert session.scalars(select(Notification).filter_by(job_id=job_id)).all() == []


def test_a_dashboard_refund_of_a_delivered_image_that_fails_later_says_what_is_true(shop):
    """Delivered, refunded by the seller in the Dashboard, and the refund fails days later:
    the buyer is told each of these as it happens, and never that the upscale failed."""
    loop = shop.loop
    job_id = loop.buy(REFUND_FAILS_CARD)
    assert shop.completed(job_id)
    intent = loop.job(job_id).stripe_payment_intent_id
    loop.stack.stripe.v1.refunds.create({"payment_intent": intent})  # in the Dashboard
    wait_for(lambda: loop.job(job_id).status == "refunded")
    assert loop.job(job_id).customer_message == "Your payment has been refunded in full."
    relay = loop.email_relay(shop.mail.url)
    relay.send_due()
    (refunded,) = shop.mail.of_kind("refunded", job_id)
    assert "As agreed, we have refunded" in refunded.get_body(("plain",)).get_content()
    wait_for(lambda: loop.job(job_id).status == "refund_failed", timeout=20)  # refund.failed
    message = loop.job(job_id).customer_message
    assert "did not go through" in message and "upscale" not in message
    assert loop.stack.status(job_id)["message_key"] == "message.refund_failed_by_hand"
    relay.send_due()
    (failed,) = shop.mail.of_kind("refund_failed", job_id)
    text = failed.get_body(("plain",)).get_content()
    assert failed["Subject"] == "Your refund did not go through"
    assert "we told you about did not go through" in text and "upscale" not in text
    relay.send_due()
    assert len(shop.mail.of_kind("refund_failed", job_id)) == 1  # once


def test_evidence_sent_moves_the_dispute_under_review_and_out_of_what_needs_an_answer(shop):
    """``charge.dispute.updated``: once the seller has answered, the dispute no longer counts
    as needing a response (the alert on it resolves); it stays open until the bank decides."""
    loop = shop.loop
    job_id = loop.buy(DISPUTE_CARD)
    wait_for(lambda: loop.job(job_id).status == "disputed")
    (dispute,) = shop.rows(Dispute, job_id=job_id)
    assert dispute.status == "needs_response"
    loop.stack.stripe.v1.disputes.update(
        dispute.id, {"evidence": {"uncategorized_text": "the buyer downloaded it twice"}}
    )
    wait_for(lambda: shop.rows(Dispute, job_id=job_id)[0].status == "under_review")
    row = shop.rows(Dispute, job_id=job_id)[0]
    assert row.closed_at is None and loop.job(job_id).status == "disputed"
    events = loop.admin("GET", "/admin/events", params={"job": job_id}).json()["events"]
    assert {e["type"]: e["outcome"] for e in events}["charge.dispute.updated"] == "applied"
    assert any(f"dispute {dispute.id} is under_review" in e.reason for e in loop.audit(job_id))
