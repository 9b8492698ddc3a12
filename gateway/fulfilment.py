"""What a Stripe outcome does to a job: fulfil, record a decline, expire.

``fulfil_checkout`` is the one idempotent function behind both the
``checkout.session.completed`` webhook and the customer's return with
``session_id`` (whichever comes first wins; the other changes nothing).
All functions run inside the caller's transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from gateway.emails import email_kind
from gateway.jobs import add_outbox_message, change_status, get_job
from gateway.tables import Job, Payment, utcnow
from shared.jobs import IllegalTransitionError, JobStatus
from shared.messages import UpscaleRequest

log = logging.getLogger(__name__)

UPSCALE_KIND = "upscale"
PAID_MESSAGE = "Payment received. Your image is queued for upscaling."
EXPIRED_MESSAGE = "The checkout session expired before payment. Nothing was charged."
DECLINE_MESSAGES = {
    "insufficient_funds": (
        "Your card has insufficient funds. Nothing was charged; please try again with another card."
    ),
    "generic_decline": (
        "Your card was declined. Nothing was charged; you can try again with another card."
    ),
    "expired_card": "Your card has expired. Nothing was charged; please use another card.",
    "incorrect_cvc": "The card's security code was incorrect. Nothing was charged.",
}


def job_id_of(stripe_object: Mapping[str, Any]) -> str | None:
    """Our job id from a session or payment intent (metadata, else client_reference_id)."""
    metadata = stripe_object.get("metadata") or {}
    return metadata.get("job_id") or stripe_object.get("client_reference_id")


def fulfil_checkout(session: Session, checkout: Mapping[str, Any], source: str) -> bool:
    """Mark a paid checkout's job ``pending`` and queue its work; ``False`` if nothing to do.

    Refuses (logs, changes nothing) when the session is not paid, belongs to
    another job, or charged another amount than the job's price.
    """
    job_id = job_id_of(checkout)
    if not job_id or checkout.get("payment_status") != "paid":
        return False
    job = get_job(session, job_id, lock=True)
    context = {"job_id": job.id, "session_id": checkout.get("id"), "source": source}
    if job.stripe_session_id and job.stripe_session_id != checkout.get("id"):
        log.warning("checkout session does not belong to this job", extra=context)
        return False
    if (checkout.get("amount_total"), checkout.get("currency")) != (job.amount_cents, job.currency):
        log.error("paid amount differs from the job's price", extra=context)
        return False
    if job.status != JobStatus.AWAITING_PAYMENT:
        return False  # already fulfilled (or expired: that case is logged by the guard)
    intent_id = str(checkout.get("payment_intent") or "")
    change_status(
        session,
        job,
        JobStatus.PENDING,
        reason="payment received",
        source=source,
        customer_message=PAID_MESSAGE,
    )
    job.stripe_session_id = str(checkout["id"])
    job.stripe_payment_intent_id = intent_id or None
    job.paid_at = utcnow()
    job.decline_code = None
    details = checkout.get("customer_details") or {}
    job.customer_email = details.get("email") or checkout.get("customer_email")
    if intent_id:  # the first and only time: the job was awaiting payment, under lock
        session.add(
            Payment(
                job_id=job.id,
                stripe_payment_intent_id=intent_id,
                stripe_session_id=str(checkout["id"]),
                amount_cents=job.amount_cents,
                currency=job.currency,
            )
        )
    publish_job(session, job)
    # The first and only time (the job was awaiting payment, under lock): no copy can
    # exist, so no lookup; the outbox's unique key still stands behind it.
    confirmation = email_kind("payment_confirmation")
    add_outbox_message(
        session, job, confirmation, json.dumps({"job_id": job.id, "email": "payment_confirmation"})
    )
    log.info("checkout fulfilled", extra=context)
    return True


def publish_job(session: Session, job: Job) -> UpscaleRequest:
    """Queue the job's next attempt for the workers (an outbox row, in this transaction)."""
    job.attempts += 1
    request = UpscaleRequest(
        job_id=job.id,
        source_key=job.source_key,
        result_key=job.result_key or f"jobs/{job.id}/result.png",
        attempt=job.attempts,
    )
    add_outbox_message(session, job, UPSCALE_KIND, request.to_json(), attempt=job.attempts)
    return request


def record_decline(session: Session, intent: Mapping[str, Any], source: str) -> bool:
    """Remember why a payment failed, for the customer; the job stays payable."""
    job_id = job_id_of(intent)
    if not job_id:
        return False
    job = get_job(session, job_id, lock=True)
    if job.status != JobStatus.AWAITING_PAYMENT:
        return False  # a later success already won
    error = intent.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code") or "card_declined"
    job.decline_code = str(code)
    job.customer_message = DECLINE_MESSAGES.get(
        code,
        f"The payment did not go through ({error.get('message') or code}). "
        "Nothing was charged; you can try again.",
    )
    job.updated_at = utcnow()
    log.info("payment declined", extra={"job_id": job.id, "decline_code": code, "source": source})
    return True


def expire_checkout(session: Session, checkout: Mapping[str, Any], source: str) -> bool:
    """An unpaid session ran out: the job is ``expired``. After payment it changes nothing."""
    job_id = job_id_of(checkout)
    if not job_id:
        return False
    job: Job = get_job(session, job_id, lock=True)
    try:
        return change_status(
            session,
            job,
            JobStatus.EXPIRED,
            reason="checkout session expired",
            source=source,
            customer_message=EXPIRED_MESSAGE,
        )
    except IllegalTransitionError:
        return False
