"""Stripe webhooks: verify the signature on the raw body, then apply each event once.

``HANDLERS`` says what each event type does (fulfil a paid checkout,
record a decline, expire an unpaid job, take note of a refund made at
Stripe); others get 200 and no effect. An event's id is claimed in the
same transaction as its effect, so duplicates, concurrent deliveries and
replays change nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import stripe
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import RequestError, WebhookSignatureError
from gateway.money.fulfilment import (
    decline_checkout,
    expire_checkout,
    fulfil_checkout,
    job_id_of,
)
from gateway.money.refunds import refunded_at_stripe
from gateway.store.lifecycle import DuplicateEventError, UnknownJobError, claim_event
from shared.failpoints import failpoint

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_S = 300
# Event type -> what it does to our records, in the transaction that claims the
# event. Each takes the event's object and returns whether anything changed.
HANDLERS: dict[str, Callable[[Session, dict[str, Any], str], bool]] = {
    "checkout.session.completed": fulfil_checkout,
    "checkout.session.async_payment_succeeded": fulfil_checkout,
    "payment_intent.payment_failed": decline_checkout,
    "checkout.session.expired": expire_checkout,
    "charge.refunded": refunded_at_stripe,
}


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
    if bool(event.get("livemode")) != live:
        mode = "live" if event.get("livemode") else "test"
        raise RequestError(f"a {mode}-mode event at a {'live' if live else 'test'}-mode gateway")
    return event


def apply_event(sessions: sessionmaker[Session], event: dict[str, Any]) -> str:
    """Apply one verified event; returns what happened (for logs and tests)."""
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return "ignored"
    stripe_object = event["data"]["object"]
    job_id = job_id_of(stripe_object)
    context = {"event_id": event.get("id"), "type": event.get("type"), "job_id": job_id}
    if not job_id and not isinstance(stripe_object.get("payment_intent"), str):
        log.info("event for no job of ours", extra=context)
        return "ignored"
    try:
        with sessions.begin() as session:
            claim_event(session, str(event["id"]), str(event["type"]), job_id)
            changed = handler(session, stripe_object, f"stripe:{event['id']}")
            failpoint("webhook.applied")
        failpoint("webhook.committed")
    except DuplicateEventError:
        return "duplicate"
    except UnknownJobError:
        log.warning("event for an unknown job", extra=context)
        return "unknown job"
    log.info("event applied", extra={**context, "changed": changed})
    return "applied" if changed else "no change"
