"""The Stripe emulator, driven by the official stripe SDK over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.emulator.app import EmulatorSettings, create_emulator_app
from devtools.emulator.webhooks import Faults
from servers import free_port, serve, wait_for

SECRET = "whsec_emulator_tests"
API_KEY = "sk_test_emulator"


@dataclass
class Receiver:
    """A webhook endpoint that checks signatures with the SDK and can fail on purpose."""

    events: list[Any] = field(default_factory=list)
    failures_left: int = 0

    async def endpoint(self, request: Request) -> Response:
        payload = await request.body()
        if self.failures_left > 0:
            self.failures_left -= 1
            return Response(status_code=500)
        event = stripe.Webhook.construct_event(payload, request.headers["stripe-signature"], SECRET)
        self.events.append(event)
        return Response(status_code=200)

    def of_type(self, event_type: str) -> list[Any]:
        return [event for event in self.events if event["type"] == event_type]


@dataclass
class Emulator:
    url: str
    client: stripe.StripeClient
    receiver: Receiver
    faults: Faults

    def pay(self, session_id: str, card: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/_emulator/checkout/{session_id}/pay", data={"card": card}
        )
        return response.json()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    receiver = Receiver()
    hooks = Starlette(routes=[Route("/hooks", receiver.endpoint, methods=["POST"])])
    port = free_port()
    faults = Faults()
    with serve(hooks) as hooks_url:
        settings = EmulatorSettings(
            public_url=f"http://127.0.0.1:{port}",
            webhook_url=f"{hooks_url}/hooks",
            webhook_secret=SECRET,
            faults=faults,
        )
        with serve(create_emulator_app(settings), port=port) as url:
            client = stripe.StripeClient(
                API_KEY, base_addresses={"api": url}, max_network_retries=0
            )
            yield Emulator(url, client, receiver, faults)


def session_params(job_id: str = "job_1", amount: int = 192) -> dict[str, Any]:
    return {
        "payment_method_types": ["card"],
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "product_data": {
                        "name": "High-Resolution Image (4x)",
                        "description": "2000x2000 → 8000x8000 pixels",
                    },
                    "unit_amount": amount,
                },
                "quantity": 1,
            }
        ],
        "mode": "payment",
        "success_url": "http://shop.test/p?smi_payment=success&job_id=job_1"
        "&session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/p?smi_payment=cancel&job_id=job_1",
        "metadata": {"job_id": job_id, "plugin": "sell-my-images"},
        "payment_intent_data": {"metadata": {"job_id": job_id}},
        "client_reference_id": job_id,
        "expires_at": int(time.time()) + 3600,
    }


def test_sessions_are_created_read_and_listed_newest_first(emulator):
    first = emulator.client.v1.checkout.sessions.create(session_params("job_1"))
    second = emulator.client.v1.checkout.sessions.create(session_params("job_2"))
    assert first.id.startswith("cs_test_") and first.object == "checkout.session"
    assert (first.amount_total, first.currency, first.payment_status) == (192, "usd", "unpaid")
    assert first.metadata["plugin"] == "sell-my-images"
    assert first.url == f"{emulator.url}/pay/{first.id}"
    assert emulator.client.v1.checkout.sessions.retrieve(first.id).client_reference_id == "job_1"
    listed = emulator.client.v1.checkout.sessions.list({"limit": 10})
    assert [s.id for s in listed.data] == [second.id, first.id]


def test_idempotency_keys_replay_or_refuse(emulator):
    params = session_params()
    options = {"idempotency_key": "job_1-checkout"}
    first = emulator.client.v1.checkout.sessions.create(params, options)
    again = emulator.client.v1.checkout.sessions.create(params, options)
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        emulator.client.v1.checkout.sessions.create(session_params(amount=999), options)


def test_paying_with_4242_completes_the_session_and_signs_the_webhook(emulator):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    outcome = emulator.pay(session.id, "4242 4242 4242 4242")
    assert outcome["outcome"] == "paid"
    assert outcome["redirect"].endswith(f"&session_id={session.id}")
    paid = emulator.client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    intent = emulator.client.v1.payment_intents.retrieve(paid.payment_intent)
    assert intent.status == "succeeded" and intent.metadata["job_id"] == "job_1"
    completed = wait_for(lambda: emulator.receiver.of_type("checkout.session.completed"))
    assert completed[0]["data"]["object"]["id"] == session.id
    assert completed[0]["data"]["object"]["metadata"]["job_id"] == "job_1"


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [("4000000000000002", "generic_decline"), ("4000000000009995", "insufficient_funds")],
)
def test_declined_cards_report_why_and_a_good_card_still_pays(emulator, card, decline_code):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    outcome = emulator.pay(session.id, card)
    assert (outcome["outcome"], outcome["decline_code"]) == ("declined", decline_code)
    failed = wait_for(lambda: emulator.receiver.of_type("payment_intent.payment_failed"))
    error = failed[0]["data"]["object"]["last_payment_error"]
    assert (error["code"], error["decline_code"]) == ("card_declined", decline_code)
    assert failed[0]["data"]["object"]["metadata"]["job_id"] == "job_1"
    assert emulator.pay(session.id, "4242424242424242")["outcome"] == "paid"


def test_unknown_cards_are_refused_without_an_event(emulator):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    assert emulator.pay(session.id, "1234")["outcome"] == "invalid_card"
    assert emulator.client.v1.events.list().data == []


def test_expired_sessions_cannot_be_paid(emulator):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    expired = emulator.client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    with pytest.raises(stripe.InvalidRequestError, match="can be expired"):
        emulator.client.v1.checkout.sessions.expire(session.id)
    assert emulator.pay(session.id, "4242424242424242")["outcome"] == "expired"
    assert wait_for(lambda: emulator.receiver.of_type("checkout.session.expired"))


def test_refunds_happen_once_per_charge(emulator):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    intent_id = emulator.pay(session.id, "4242424242424242")["payment_intent"]
    refund = emulator.client.v1.refunds.create(
        {
            "payment_intent": intent_id,
            "reason": "requested_by_customer",
            "metadata": {"job_id": "job_1", "failure_reason": "corrupt image"},
        }
    )
    assert (refund.status, refund.amount, refund.reason) == (
        "succeeded",
        192,
        "requested_by_customer",
    )
    assert refund.metadata["failure_reason"] == "corrupt image"
    with pytest.raises(stripe.InvalidRequestError, match="already been refunded"):
        emulator.client.v1.refunds.create({"payment_intent": intent_id})
    listed = emulator.client.v1.refunds.list({"payment_intent": intent_id})
    assert [r.id for r in listed.data] == [refund.id]


def test_errors_have_stripes_shapes(emulator):
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("sk_live_nope", base_addresses={"api": emulator.url}).v1.events.list()
    with pytest.raises(stripe.InvalidRequestError, match="line_items"):
        emulator.client.v1.checkout.sessions.create({**session_params(), "line_items": []})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        emulator.client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError, match="at least"):
        emulator.client.v1.checkout.sessions.create(session_params(amount=20))


def test_injected_server_errors_are_retried_by_the_sdk_and_take_effect_once(emulator):
    emulator.faults.error_rate = 0.5
    emulator.faults.rng.seed(3)
    client = stripe.StripeClient(
        API_KEY, base_addresses={"api": emulator.url}, max_network_retries=10
    )
    created = {client.v1.checkout.sessions.create(session_params(f"job_{i}")).id for i in range(6)}
    emulator.faults.error_rate = 0.0
    assert len(created) == 6
    assert len(emulator.client.v1.checkout.sessions.list({"limit": 100}).data) == 6


def test_injected_rate_limits_surface_as_rate_limit_errors(emulator):
    emulator.faults.rate_limit_rate = 1.0
    with pytest.raises(stripe.RateLimitError):
        emulator.client.v1.checkout.sessions.create(session_params())


def test_failed_deliveries_are_retried(emulator):
    emulator.receiver.failures_left = 2
    session = emulator.client.v1.checkout.sessions.create(session_params())
    emulator.pay(session.id, "4242424242424242")
    wait_for(lambda: emulator.receiver.of_type("checkout.session.completed"))
    log = httpx.get(f"{emulator.url}/_emulator/deliveries").json()
    statuses = [record["status"] for record in log]
    assert statuses.count(500) == 2 and 200 in statuses


def test_duplicated_and_reordered_deliveries(emulator):
    httpx.post(
        f"{emulator.url}/_emulator/faults", json={"webhook_copies": 3, "reorder_webhooks": True}
    )
    session = emulator.client.v1.checkout.sessions.create(session_params())
    emulator.pay(session.id, "4242424242424242")
    wait_for(lambda: len(emulator.receiver.events) == 9)  # three events, three copies each
    copies = emulator.receiver.of_type("checkout.session.completed")
    assert len(copies) == 3 and len({event["id"] for event in copies}) == 1
    types = [event["type"] for event in emulator.receiver.events]
    # Reordered: the session completion arrives before the payment intent's success.
    assert types.index("checkout.session.completed") < types.index("payment_intent.succeeded")


def test_the_hosted_page_takes_a_card_and_redirects(emulator):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    page = httpx.get(session.url)
    assert page.status_code == 200
    assert "High-Resolution Image (4x)" in page.text and "$1.92" in page.text
    declined = httpx.post(session.url, data={"card": "4000 0000 0000 0002"})
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    paid = httpx.post(session.url, data={"card": "4242 4242 4242 4242"})
    assert paid.status_code == 303
    assert paid.headers["location"].endswith(f"session_id={session.id}")
    assert "smi_payment=cancel" in page.text


def test_events_are_listed_newest_first(emulator):
    session = emulator.client.v1.checkout.sessions.create(session_params())
    emulator.pay(session.id, "4242424242424242")
    events = emulator.client.v1.events.list()
    assert [e.type for e in events.data] == [
        "checkout.session.completed",
        "payment_intent.succeeded",
        "charge.succeeded",
    ]
    assert json.loads(json.dumps(events.data[0].to_dict()))["data"]["object"]["id"] == session.id


def in_currency(currency: str, amount: int) -> dict[str, Any]:
    params = session_params(amount=amount)
    params["line_items"][0]["price_data"]["currency"] = currency
    return params


@pytest.mark.parametrize(
    ("currency", "too_small", "enough", "shown"),
    [("usd", 49, 50, "$0.50"), ("jpy", 49, 50, "¥50"), ("gbp", 29, 30, "£0.30")],
)
def test_each_currency_has_stripes_minimum(emulator, currency, too_small, enough, shown):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        emulator.client.v1.checkout.sessions.create(in_currency(currency, too_small))
    assert refused.value.code == "amount_too_small" and shown in str(refused.value)
    session = emulator.client.v1.checkout.sessions.create(in_currency(currency, enough))
    assert (session.amount_total, session.currency) == (enough, currency)
    assert shown in httpx.get(session.url).text  # the hosted page shows it as people read it


def test_three_decimal_and_whole_krona_amounts_follow_stripes_special_cases(emulator):
    for currency, amount in (("kwd", 5125), ("isk", 19250)):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            emulator.client.v1.checkout.sessions.create(in_currency(currency, amount))
        assert refused.value.code == "invalid_charge_amount_no_decimal_compatible"
    assert emulator.client.v1.checkout.sessions.create(in_currency("kwd", 5130)).amount_total == (
        5130
    )


FIXTURES = json.loads((Path(__file__).parent / "data" / "stripe_fixture_fields.json").read_text())
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}


def json_type(value: Any) -> str | None:
    if value is None:
        return None
    return "array" if isinstance(value, list) else JSON_TYPES[type(value)]


def test_objects_carry_stripes_full_shapes_field_by_field(emulator):
    """Every object the gateway reads, against Stripe's published fixtures (stripe/openapi)."""
    client = emulator.client
    session = client.v1.checkout.sessions.create(session_params())
    emulator.pay(session.id, "4000000000000259")  # pays, then disputed
    session = client.v1.checkout.sessions.retrieve(session.id)
    intent = client.v1.payment_intents.retrieve(str(session.payment_intent))
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    (dispute,) = client.v1.disputes.list().data
    other = client.v1.checkout.sessions.create(session_params("job_2"))
    emulator.pay(other.id, "4242424242424242")
    refund = client.v1.refunds.create(
        {"payment_intent": str(client.v1.checkout.sessions.retrieve(other.id).payment_intent)}
    )
    event = client.v1.events.list().data[0]
    objects = {
        "checkout.session": session,
        "payment_intent": intent,
        "charge": charge,
        "refund": refund,
        "dispute": dispute,
        "event": event,
    }
    for name, obj in objects.items():
        ours = obj.to_dict()
        theirs = FIXTURES["objects"][name]
        present = [key for key in theirs if key in ours]
        assert len(present) >= 0.9 * len(theirs), (name, sorted(set(theirs) - set(ours)))
        for key in present:
            want, got = theirs[key], json_type(ours[key])
            if want is not None and got is not None:
                assert got == want or {got, want} == {"integer", "number"}, (name, key, got)
        assert ours["object"] == name and ours["id"].startswith(
            {"checkout.session": "cs_test_", "payment_intent": "pi_", "charge": "ch_",
             "refund": "re_", "dispute": "dp_", "event": "evt_"}[name]
        )  # fmt: skip


def test_promotion_codes_tax_and_invoices(emulator):
    client = emulator.client
    coupon = client.v1.coupons.create({"amount_off": 100, "currency": "usd"})
    client.v1.promotion_codes.create(
        {"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "HUNDRED"}
    )
    params = session_params(amount=1000)
    params["line_items"][0]["price_data"]["tax_behavior"] = "inclusive"
    params |= {
        "allow_promotion_codes": True,
        "automatic_tax": {"enabled": True},
        "invoice_creation": {"enabled": True},
    }
    session = client.v1.checkout.sessions.create(params)
    paid = httpx.post(
        f"{emulator.url}/_emulator/checkout/{session.id}/pay",
        data={"card": "4242424242424242", "promotion_code": "hundred", "country": "DE"},
    ).json()
    assert paid["outcome"] == "paid"
    session = client.v1.checkout.sessions.retrieve(session.id)
    # 10.00 less 1.00, German VAT (19%) inside the price: 9.00 / 1.19 * 0.19 = 1.44.
    assert (session.amount_subtotal, session.amount_total) == (1000, 900)
    assert session.total_details.amount_discount == 100
    assert session.total_details.amount_tax == 144
    assert session.customer_details.address.country == "DE"
    invoice = client.v1.invoices.retrieve(str(session.invoice))
    assert invoice.amount_paid == 900 and invoice.tax == 144
    pdf = httpx.get(invoice.invoice_pdf)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert client.v1.payment_intents.retrieve(str(session.payment_intent)).amount == 900
    # Automatic tax needs each price's tax behaviour, as Stripe does.
    params["line_items"][0]["price_data"].pop("tax_behavior")
    with pytest.raises(stripe.InvalidRequestError, match="tax_behavior"):
        client.v1.checkout.sessions.create(params)


def test_disputes_are_opened_by_card_0259_and_decided_by_evidence(emulator):
    client = emulator.client
    for evidence, outcome in (("winning_evidence", "won"), ("losing_evidence", "lost")):
        session = client.v1.checkout.sessions.create(session_params())
        emulator.pay(session.id, "4000000000000259")
        dispute = client.v1.disputes.list().data[0]
        assert dispute.status == "needs_response" and dispute.payment_intent is None
        charge = client.v1.charges.retrieve(dispute.charge)
        assert charge.disputed is True
        with pytest.raises(stripe.InvalidRequestError, match="charged back"):
            client.v1.refunds.create({"charge": charge.id})
        client.v1.disputes.update(dispute.id, {"evidence": {"uncategorized_text": evidence}})
        assert client.v1.disputes.retrieve(dispute.id).status == outcome
    wait_for(lambda: len(emulator.receiver.of_type("charge.dispute.closed")) == 2)
    assert len(emulator.receiver.of_type("charge.dispute.created")) == 2


def test_a_refund_of_card_5126_fails_after_it_seemed_to_succeed(emulator):
    client = emulator.client
    session = client.v1.checkout.sessions.create(session_params())
    emulator.pay(session.id, "4000000000005126")
    intent = str(client.v1.checkout.sessions.retrieve(session.id).payment_intent)
    refund = client.v1.refunds.create({"payment_intent": intent})
    assert refund.status == "succeeded"
    wait_for(lambda: emulator.receiver.of_type("refund.failed"))
    assert client.v1.refunds.list({"payment_intent": intent}).data[0].status == "failed"
    charge = client.v1.charges.retrieve(refund.charge)
    assert (charge.amount_refunded, charge.refunded) == (0, False)
