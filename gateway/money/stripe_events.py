"""Stripe webhooks: verify the signature on the raw body, then apply each event once.

    event = verify_event(body, request.headers["stripe-signature"], secret)
    apply_event(sessions, event, payments)     # "applied", "duplicate", "ignored" ...
    replay_event(sessions, "evt_...", payments)  # an admin's second try of a stored event

``HANDLERS`` says what each event type does (fulfil a paid checkout,
record a decline, expire an unpaid job, a refund or dispute made at
Stripe); others are stored as ignored. Every received event is stored
with its payload and outcome (``webhook_events``); its id is claimed in
the same transaction as its effect, so duplicates, concurrent deliveries
and replays change nothing. An event may name its job by metadata, by
payment intent or only by charge (a dispute, a Dashboard refund): the
charge's payment intent is asked of Stripe before the transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import stripe
from sqlalchemy import select, update
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
from gateway.money.disputes import dispute_closed, dispute_opened
from gateway.money.fulfilment import (
    decline_checkout,
    expire_checkout,
    fulfil_checkout,
    job_id_of,
)
from gateway.money.payments import Payments
from gateway.money.refunds import refund_reported, refunded_at_stripe
from gateway.store.lifecycle import (
    DuplicateEventError,
    UnknownJobError,
    claim_event,
    customer_forgotten,
    impersonal,
)
from gateway.store.tables import UNSTORABLE, EventOutcome, Job, Payment, WebhookEvent, utcnow
from shared.failpoints import failpoint

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_S = 300
# Stripe's ids and types are short: the columns that keep them are wider than any of them.
MAX_ID_LENGTH, MAX_TYPE_LENGTH = 255, 128
# Event type -> what it does to our records, in the transaction that claims the
# event. Each takes the event's object and returns whether anything changed.
HANDLERS: dict[str, Callable[[Session, dict[str, Any], str], bool]] = {
    "checkout.session.completed": fulfil_checkout,
    "checkout.session.async_payment_succeeded": fulfil_checkout,
    "payment_intent.payment_failed": decline_checkout,
    "checkout.session.expired": expire_checkout,
    "charge.refunded": refunded_at_stripe,
    "refund.created": refund_reported,
    "refund.updated": refund_reported,
    "refund.failed": refund_reported,
    "charge.dispute.created": dispute_opened,
    "charge.dispute.closed": dispute_closed,
}
# Events about a payment rather than a checkout: they may name only the charge.
PAYMENT_EVENTS = frozenset(
    {
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.dispute.created",
        "charge.dispute.closed",
    }
)


def verify_event(
    payload: bytes, signature: str | None, secret: str, *, live: bool = False
) -> dict[str, Any]:
    """The event in ``payload`` if ``signature`` is Stripe's for it, made within 300 s.

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
    return event


def apply_event(
    sessions: sessionmaker[Session],
    event: dict[str, Any],
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
    event = storable_event(event)
    handler = HANDLERS.get(event["type"])
    stripe_object = dict(event["data"]["object"])
    if handler is not None and payments is not None and event["type"] in PAYMENT_EVENTS:
        try:
            _resolve_payment(sessions, stripe_object, payments)
            if event["type"] == "charge.refunded":
                _attach_refunds(stripe_object, payments)
        except GatewayError as exc:
            _record(sessions, event, EventOutcome.ERROR, str(exc))
            raise
    context = {"event_id": event.get("id"), "type": event.get("type")}
    try:
        with sessions.begin() as session:
            row = claim_event(session, event, replay=replay)
            before = row.outcome
            job_id = _job_id(session, stripe_object) if handler is not None else None
            row.job_id = job_id
            if handler is None:
                row.outcome, row.detail = EventOutcome.IGNORED, "not a type the gateway acts on"
            elif job_id is None:
                row.outcome, row.detail = EventOutcome.IGNORED, "about no job of ours"
            else:
                changed = handler(session, stripe_object, f"stripe:{event['id']}")
                row.outcome = EventOutcome.APPLIED if changed else EventOutcome.NO_CHANGE
                row.detail = f"replayed by an admin (it was {before})" if replay else None
                job = session.get(Job, job_id)
                if job is not None and customer_forgotten(job):  # erased: kept erased
                    row.payload = json.dumps(impersonal(event))
            failpoint("webhook.applied")
            outcome = str(row.outcome)
        failpoint("webhook.committed")
    except DuplicateEventError:
        if _count_delivery(sessions, str(event["id"])) == EventOutcome.ERROR:
            # A concurrent delivery failed and rolled back just now: not applied yet.
            raise EventTooEarlyError(
                "another delivery of this event failed a moment ago; it is applied when "
                "delivered again"
            ) from None
        return "duplicate"
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
    return outcome


def storable_event(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with every character no database stores (a NUL or lone surrogate a buyer
    typed into their email or name at Stripe) made U+FFFD.

    The event is Stripe's, signed: refusing it would leave a paid order unfulfilled and
    the catch-up failing on it for ever. What a buyer typed is stored as it can be
    (``usable_email`` then refuses such an address for sending).
    """

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return UNSTORABLE.sub("\ufffd", value)
        if isinstance(value, dict):
            return {clean(key): clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    cleaned: dict[str, Any] = clean(event)
    return cleaned


def replay_event(sessions: sessionmaker[Session], event_id: str, payments: Payments) -> str:
    """Apply a stored event again; ``LookupError`` if no event with that id was received."""
    with sessions() as session:
        payload = session.scalar(
            select(WebhookEvent.payload).where(WebhookEvent.event_id == event_id)
        )
    if payload is None:
        raise LookupError(event_id)
    return apply_event(sessions, json.loads(payload), payments, replay=True)


def _job_id(session: Session, stripe_object: Mapping[str, Any]) -> str | None:
    """The job an event is about: by metadata, else by payment intent, else by charge."""
    job_id = job_id_of(stripe_object)
    if job_id:
        return job_id
    intent, charge = stripe_object.get("payment_intent"), stripe_object.get("charge")
    if stripe_object.get("object") == "charge":
        charge = stripe_object.get("id")
    payment = None
    if isinstance(intent, str):
        payment = session.scalars(
            select(Payment).where(Payment.stripe_payment_intent_id == intent)
        ).first()
    if payment is None and isinstance(charge, str):
        payment = session.scalars(select(Payment).where(Payment.stripe_charge_id == charge)).first()
    if payment is None:
        return None
    if isinstance(charge, str) and not payment.stripe_charge_id:
        payment.stripe_charge_id = charge  # the next event naming only the charge finds it
    return payment.job_id


def _resolve_payment(
    sessions: sessionmaker[Session], stripe_object: dict[str, Any], payments: Payments
) -> None:
    """Before a refund or dispute event's transaction: the payment it names, made findable.

    Naming only a charge we have not seen, it gets the charge's payment intent
    (asked of Stripe). Naming a payment of one of our jobs that is not
    recorded yet (its ``checkout.session.completed`` is still on its way),
    ``EventTooEarlyError``: Stripe (or the catch-up) delivers it again.
    """
    if job_id_of(stripe_object):
        return
    intent, charge = stripe_object.get("payment_intent"), stripe_object.get("charge")
    if stripe_object.get("object") == "charge":
        charge = stripe_object.get("id")
    try:
        if not isinstance(intent, str) and isinstance(charge, str):
            if _payment_known(sessions, None, charge):
                return
            intent = payments.payment_intent_of_charge(charge)
            stripe_object["payment_intent"] = intent
        if not isinstance(intent, str) or _payment_known(sessions, intent, None):
            return
        job_id = payments.job_id_of_payment_intent(intent)
    except PaymentProviderRejected:
        return  # Stripe does not know it (404): no payment of ours
    if job_id is None:
        return  # not a payment of ours
    with sessions() as session:
        if session.get(Job, job_id) is not None:
            raise EventTooEarlyError(
                f"the payment of {job_id} is not recorded yet; this event is applied when "
                "it is delivered again"
            )


def _attach_refunds(charge: dict[str, Any], payments: Payments) -> None:
    """Before a ``charge.refunded`` transaction: the charge's refunds as Stripe holds them now.

    The charge in the event no longer lists them (API version 2022-11-15),
    and its refunds' own events may come later or in parallel: with them in
    hand, the transaction that ends the job records by which refunds it
    ended, so a refunded job is never without its refund rows.
    """
    intent = charge.get("payment_intent")
    if isinstance(intent, str):
        refunds = payments.list_refunds(intent)
        charge["refunds"] = {"object": "list", "data": refunds, "has_more": False}


def _payment_known(sessions: sessionmaker[Session], intent: str | None, charge: str | None) -> bool:
    """Whether a payment of ours has this payment intent or charge."""
    column, value = (
        (Payment.stripe_payment_intent_id, intent) if intent else (Payment.stripe_charge_id, charge)
    )
    with sessions() as session:
        return session.scalar(select(Payment.id).where(column == value)) is not None


def _record(
    sessions: sessionmaker[Session], event: dict[str, Any], outcome: str, detail: str
) -> None:
    """Store an event whose own transaction rolled back, with why (best effort: logged)."""
    try:
        with sessions.begin() as session:
            row = session.get(WebhookEvent, str(event["id"]))
            if row is None:
                row = WebhookEvent(event_id=str(event["id"]), type=str(event["type"]))
                session.add(row)
            elif row.outcome not in (EventOutcome.ERROR, EventOutcome.UNKNOWN_JOB):
                return  # another delivery took effect meanwhile
            row.payload = json.dumps(event)
            row.outcome, row.detail = outcome, detail[:1000]
            row.last_received_at = utcnow()
    except Exception:
        log.exception("could not store the event's outcome", extra={"event_id": event.get("id")})


def _count_delivery(sessions: sessionmaker[Session], event_id: str) -> str | None:
    """Count one more delivery of a stored event; returns its stored outcome."""
    try:
        with sessions.begin() as session:
            return session.scalar(
                update(WebhookEvent)
                .where(WebhookEvent.event_id == event_id)
                .values(deliveries=WebhookEvent.deliveries + 1, last_received_at=utcnow())
                .returning(WebhookEvent.outcome)
            )
    except Exception:
        log.exception("could not count a duplicate delivery", extra={"event_id": event_id})
        return None
