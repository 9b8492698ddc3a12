"""Stripe webhooks: verify the signature on the raw body, then apply each event once.

    event = verify_event(body, request.headers["stripe-signature"], secret)   # a StripeEvent
    apply_event(sessions, event, payments)     # "applied", "duplicate", "ignored" ...
    replay_event(sessions, "evt_...", payments)  # an admin's second try of a stored event

The event is parsed once, where it is verified (``stripe_objects``): the
handlers get typed objects, never dicts. ``CHECKOUT_HANDLERS`` say what
an event about a checkout does (fulfil a paid one, record a decline,
expire an unpaid job): its object names the job by metadata.
``PAYMENT_HANDLERS`` say what an event about a payment does (a refund or
dispute made at Stripe): its object names the payment by payment intent
or only by charge, and the handler gets the job (locked) and the payment
that ``store.ledger.payment_named`` found. Other types are stored as
ignored. Every received event is stored with its payload and outcome
(``webhook_events``); its id is claimed in the same transaction as its
effect, so duplicates, concurrent deliveries and replays change nothing.
A payment named only by a charge we have not seen gets the charge's
payment intent from Stripe before the transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import (
    EventTooEarlyError,
    GatewayError,
    PaymentProviderRejected,
    RequestError,
    UnstorableTextError,
    WebhookSignatureError,
)
from gateway.money.disputes import dispute_closed, dispute_opened, dispute_updated
from gateway.money.fulfilment import decline_checkout, expire_checkout, fulfil_checkout
from gateway.money.payments import Payments
from gateway.money.refunds import refund_reported, refunded_at_stripe
from gateway.money.stripe_objects import (
    CHECKOUT_OBJECTS,
    PAYMENT_OBJECTS,
    PaymentObject,
    StripeCharge,
    StripeEvent,
    StripeObject,
    parse_event,
)
from gateway.store import ledger
from gateway.store.lifecycle import (
    UnknownJobError,
    claim_event,
    customer_forgotten,
    get_job,
    impersonal,
    settle_event,
)
from gateway.store.tables import UNSTORABLE, EventOutcome, Job, Payment, WebhookEvent, utcnow
from shared.failpoints import failpoint

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_S = 300
# Stripe's ids and types are short: the columns that keep them are wider than any of them.
MAX_ID_LENGTH, MAX_TYPE_LENGTH = 255, 128
# Event type -> what it does to our records, in the transaction that claims the event.
# Each returns whether anything changed. A checkout's event names its job by metadata:
# the handler takes the event's object.
CHECKOUT_HANDLERS: dict[str, Callable[[Session, Any, str], bool]] = {
    "checkout.session.completed": fulfil_checkout,
    "checkout.session.async_payment_succeeded": fulfil_checkout,
    "payment_intent.payment_failed": decline_checkout,
    "checkout.session.expired": expire_checkout,
}
# A payment's event names the payment (by payment intent, or only by charge): the handler
# takes the job (locked) and the payment it names, then the event's object.
PAYMENT_HANDLERS: dict[str, Callable[[Session, Job, Payment, Any, str], bool]] = {
    "charge.refunded": refunded_at_stripe,
    "refund.created": refund_reported,
    "refund.updated": refund_reported,
    "refund.failed": refund_reported,
    "charge.dispute.created": dispute_opened,
    "charge.dispute.updated": dispute_updated,
    "charge.dispute.closed": dispute_closed,
}
# Every type the gateway acts on (the catch-up lists these; metrics label only these).
HANDLED_TYPES = frozenset(CHECKOUT_HANDLERS) | frozenset(PAYMENT_HANDLERS)


def verify_event(
    payload: bytes, signature: str | None, secret: str, *, live: bool = False
) -> StripeEvent:
    """The event in ``payload`` if ``signature`` is Stripe's for it, made within 300 s, parsed.

    Refused too: a signature dated more than 300 s in the future (the SDK
    only checks the past), and an event of the other mode (a live event
    at a test gateway, or the reverse).
    """
    if not signature:
        raise WebhookSignatureError("missing Stripe-Signature header")
    stamps = [part.strip()[2:] for part in signature.split(",") if part.strip().startswith("t=")]
    dated = int(stamps[0]) if stamps and stamps[0].isdigit() else 0
    if dated > time.time() + SIGNATURE_TOLERANCE_S:
        raise WebhookSignatureError("webhook signature is dated in the future")
    try:
        # The SDK's check (HMAC-SHA256 of "t.payload", constant-time compare,
        # timestamp tolerance); the body is then plain JSON, no object graph.
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, secret, tolerance=SIGNATURE_TOLERANCE_S
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise WebhookSignatureError("webhook signature verification failed") from exc
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise RequestError("webhook body is not valid JSON") from exc
    data = event.get("data") if isinstance(event, dict) else None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise RequestError("webhook body is not a Stripe event")
    if UNSTORABLE.search(event["id"] + event["type"]):
        raise UnstorableTextError("the event's id or type holds a character that cannot be stored")
    if len(event["id"]) > MAX_ID_LENGTH or len(event["type"]) > MAX_TYPE_LENGTH:
        raise RequestError("webhook body is not a Stripe event (its id or type is too long)")
    if bool(event.get("livemode")) != live:
        mode = "live" if event.get("livemode") else "test"
        raise RequestError(f"a {mode}-mode event at a {'live' if live else 'test'}-mode gateway")
    return parse_event(event)


def apply_event(
    sessions: sessionmaker[Session],
    event: StripeEvent,
    payments: Payments | None = None,
    *,
    replay: bool = False,
) -> str:
    """Apply one verified event and store it with its outcome; returns the outcome.

    ``payments`` looks up the payment intent of an event that names only a
    charge; ``replay`` applies an event that was stored before (an admin's
    second try: the handlers are idempotent, so an event that took effect
    changes nothing again).
    """
    stripe_object = event.object
    if (
        payments is not None
        and event.type in PAYMENT_HANDLERS
        and isinstance(stripe_object, PAYMENT_OBJECTS)
    ):
        try:
            stripe_object = _made_findable(sessions, stripe_object, payments)
            if isinstance(stripe_object, StripeCharge) and event.type == "charge.refunded":
                stripe_object = _with_refunds(stripe_object, payments)
        except GatewayError as exc:
            _record(sessions, event, EventOutcome.ERROR, str(exc))
            raise
    context = {"event_id": event.id, "type": event.type}
    try:
        with sessions.begin() as session:
            named = stripe_object.job_id if isinstance(stripe_object, CHECKOUT_OBJECTS) else None
            claimed = claim_event(session, event.payload, replay=replay, job_id=named)
            if claimed is None:
                return "duplicate"  # its delivery counted, in that one statement
            job_id, changed = _handle(session, event.type, stripe_object, f"stripe:{event.id}")
            detail, payload = None, None
            if event.type not in HANDLED_TYPES:
                outcome, detail = EventOutcome.IGNORED, "not a type the gateway acts on"
            elif job_id is None:
                outcome, detail = EventOutcome.IGNORED, "about no job of ours"
            else:
                outcome = EventOutcome.APPLIED if changed else EventOutcome.NO_CHANGE
                if replay:
                    detail = f"replayed by an admin (it was {claimed.outcome})"
                if customer_forgotten(session, job_id):  # erased: kept erased
                    payload = json.dumps(impersonal(event.payload))
            settle_event(session, claimed, job_id, outcome, detail, payload)
            failpoint("webhook.applied")
        failpoint("webhook.committed")
    except UnknownJobError as exc:
        log.warning("event for an unknown job", extra={**context, "job_id": exc.job_id})
        _record(sessions, event, EventOutcome.UNKNOWN_JOB, f"no job {exc.job_id}")
        return str(EventOutcome.UNKNOWN_JOB)
    except DataError as exc:  # a value no column takes (longer than any Stripe sends)
        _record(sessions, event, EventOutcome.ERROR, f"{type(exc).__name__}: {exc.orig}")
        raise RequestError("the event holds a value the gateway cannot store") from exc
    except Exception as exc:
        _record(sessions, event, EventOutcome.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    log.info("event %s", outcome, extra={**context, "job_id": job_id})
    return str(outcome)


def replay_event(sessions: sessionmaker[Session], event_id: str, payments: Payments) -> str:
    """Apply a stored event again; ``LookupError`` if no event with that id was received."""
    with sessions() as session:
        payload = session.scalar(
            select(WebhookEvent.payload).where(WebhookEvent.event_id == event_id)
        )
    if payload is None:
        raise LookupError(event_id)
    return apply_event(sessions, parse_event(json.loads(payload)), payments, replay=True)


def _handle(
    session: Session, event_type: str, stripe_object: StripeObject | None, source: str
) -> tuple[str | None, bool]:
    """Apply an event's object: the job it is about (``None``: none of ours) and whether
    anything changed. A payment's job is the one ``ledger.payment_named`` finds, found once
    and handed to the handler, locked; an object that names a job of ours by metadata
    (our own refunds) is about that job."""
    if event_type in PAYMENT_HANDLERS and isinstance(stripe_object, PAYMENT_OBJECTS):
        payment = ledger.payment_named(session, stripe_object)
        if payment is None:
            return stripe_object.job_id, False
        ledger.note_charge(payment, stripe_object.charge_id)
        job = get_job(session, payment.job_id, lock=True)
        changed = PAYMENT_HANDLERS[event_type](session, job, payment, stripe_object, source)
        return stripe_object.job_id or payment.job_id, changed
    if event_type in CHECKOUT_HANDLERS and isinstance(stripe_object, CHECKOUT_OBJECTS):
        if stripe_object.job_id is None:
            return None, False
        return stripe_object.job_id, CHECKOUT_HANDLERS[event_type](session, stripe_object, source)
    return None, False


def _made_findable(
    sessions: sessionmaker[Session], stripe_object: PaymentObject, payments: Payments
) -> PaymentObject:
    """Before a payment event's transaction: the payment it names, made findable.

    Naming only a charge we have not seen, it gets the charge's payment intent
    (asked of Stripe). Naming a payment of one of our jobs that is not
    recorded yet (its ``checkout.session.completed`` is still on its way),
    ``EventTooEarlyError``: Stripe (or the catch-up) delivers it again.
    """
    if stripe_object.job_id:
        return stripe_object
    try:
        if stripe_object.payment_intent is None and stripe_object.charge_id is not None:
            if _payment_known(sessions, stripe_object):
                return stripe_object
            intent = payments.payment_intent_of_charge(stripe_object.charge_id)
            stripe_object = replace(stripe_object, payment_intent=intent)
        if stripe_object.payment_intent is None or _payment_known(sessions, stripe_object):
            return stripe_object
        job_id = payments.job_id_of_payment_intent(stripe_object.payment_intent)
    except PaymentProviderRejected:
        return stripe_object  # Stripe does not know it (404): no payment of ours
    if job_id is None:
        return stripe_object  # not a payment of ours
    with sessions() as session:
        if session.get(Job, job_id) is not None:
            raise EventTooEarlyError(
                f"the payment of {job_id} is not recorded yet; this event is applied when "
                "it is delivered again"
            )
    return stripe_object


def _payment_known(sessions: sessionmaker[Session], stripe_object: PaymentObject) -> bool:
    with sessions() as session:
        return ledger.payment_named(session, stripe_object) is not None


def _with_refunds(charge: StripeCharge, payments: Payments) -> StripeCharge:
    """Before a ``charge.refunded`` transaction: the charge's refunds as Stripe holds them now.

    The charge in the event no longer lists them (API version 2022-11-15),
    and its refunds' own events may come later or in parallel: with them in
    hand, the transaction that ends the job records by which refunds it
    ended, so a refunded job is never without its refund rows.
    """
    if charge.payment_intent is None:
        return charge
    return replace(charge, refunds=tuple(payments.list_refunds(charge.payment_intent)))


def _record(sessions: sessionmaker[Session], event: StripeEvent, outcome: str, detail: str) -> None:
    """Store an event whose own transaction rolled back, with why (best effort: logged)."""
    try:
        with sessions.begin() as session:
            row = session.get(WebhookEvent, event.id)
            if row is None:
                row = WebhookEvent(event_id=event.id, type=event.type)
                session.add(row)
            elif row.outcome not in (EventOutcome.ERROR, EventOutcome.UNKNOWN_JOB):
                return  # another delivery took effect meanwhile
            row.payload = json.dumps(event.payload)
            row.outcome, row.detail = outcome, detail[:1000]
            row.last_received_at = utcnow()
    except Exception:
        log.exception("could not store the event's outcome", extra={"event_id": event.id})
