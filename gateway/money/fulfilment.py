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
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from gateway.delivery.emails import email_kind
from gateway.store.lifecycle import UnknownJobError, add_outbox_message, change_status, get_job
from gateway.store.tables import AuditEntry, Job, OutboxMessage, Payment, utcnow
from shared.jobs import IllegalTransitionError, JobStatus, check_transition
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

    Every webhook takes this path, so it is written as five plain SQL
    statements rather than through the ORM's unit of work (which cost four
    times as much here); the status change still goes through
    ``check_transition`` and leaves its audit row.
    """
    job_id = job_id_of(checkout)
    if not job_id or checkout.get("payment_status") != "paid":
        return False
    session.flush()  # a job made in this session must be in the table before we lock it
    job = session.execute(_LOCK_JOB, {"job_id": job_id}).first()
    if job is None:
        raise UnknownJobError(job_id)
    context = {"job_id": job_id, "session_id": checkout.get("id"), "source": source}
    if job.stripe_session_id and job.stripe_session_id != checkout.get("id"):
        log.warning("checkout session does not belong to this job", extra=context)
        return False
    if (checkout.get("amount_total"), checkout.get("currency")) != (job.amount_cents, job.currency):
        log.error("paid amount differs from the job's price", extra=context)
        return False
    if job.status != JobStatus.AWAITING_PAYMENT:
        return False  # already fulfilled (or expired: that case is logged by the guard)
    check_transition(JobStatus(job.status), JobStatus.PENDING)
    now = utcnow()
    intent_id = str(checkout.get("payment_intent") or "") or None
    details = checkout.get("customer_details") or {}
    attempt = job.attempts + 1
    session.execute(
        _MARK_PAID,
        {
            "job_id": job_id,
            "status": JobStatus.PENDING,
            "customer_message": PAID_MESSAGE,
            "stripe_session_id": str(checkout["id"]),
            "stripe_payment_intent_id": intent_id,
            "paid_at": now,
            "updated_at": now,
            "decline_code": None,
            "customer_email": details.get("email") or checkout.get("customer_email"),
            "attempts": attempt,
        },
    )
    session.execute(
        insert(_AUDIT),
        {
            "job_id": job_id,
            "from_status": job.status,
            "to_status": JobStatus.PENDING,
            "reason": "payment received",
            "source": source,
            "at": now,
        },
    )
    if intent_id:  # the first and only time: the job was awaiting payment, under lock
        session.execute(
            insert(_PAYMENTS),
            {
                "job_id": job_id,
                "stripe_payment_intent_id": intent_id,
                "stripe_session_id": str(checkout["id"]),
                "amount_cents": job.amount_cents,
                "currency": job.currency,
                "created_at": now,
            },
        )
    request = UpscaleRequest(
        job_id=job_id,
        source_key=job.source_key,
        result_key=job.result_key or f"jobs/{job_id}/result.png",
        attempt=attempt,
    )
    # The first and only confirmation (the job was awaiting payment, under lock): no
    # lookup; the outbox's unique key (job, kind, attempt) still stands behind both rows.
    confirmation = json.dumps({"job_id": job_id, "email": "payment_confirmation"})
    session.execute(
        insert(_OUTBOX),
        [
            _outbox_row(job_id, UPSCALE_KIND, attempt, request.to_json(), now),
            _outbox_row(job_id, email_kind("payment_confirmation"), 1, confirmation, now),
        ],
    )
    _forget_loaded(session, job_id)
    log.info("checkout fulfilled", extra=context)
    return True


# Built once: SQLAlchemy caches their compiled form.
_JOBS = cast(Table, Job.__table__)
_AUDIT = cast(Table, AuditEntry.__table__)
_PAYMENTS = cast(Table, Payment.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
_LOCK_JOB = (
    select(
        _JOBS.c.status,
        _JOBS.c.stripe_session_id,
        _JOBS.c.amount_cents,
        _JOBS.c.currency,
        _JOBS.c.source_key,
        _JOBS.c.result_key,
        _JOBS.c.attempts,
    )
    .where(_JOBS.c.id == bindparam("job_id"))
    .with_for_update()
)
_MARK_PAID = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"))
    .values(
        {
            name: bindparam(name)
            for name in (
                "status",
                "customer_message",
                "stripe_session_id",
                "stripe_payment_intent_id",
                "paid_at",
                "updated_at",
                "decline_code",
                "customer_email",
                "attempts",
            )
        }
    )
)


def _outbox_row(job_id: str, kind: str, attempt: int, body: str, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "kind": kind,
        "attempt": attempt,
        "body": body,
        "created_at": now,
        "publish_attempts": 0,
    }


def _forget_loaded(session: Session, job_id: str) -> None:
    """Expire a copy of the job this session holds: the statements above changed its row."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Job) and obj.id == job_id:
            session.expire(obj)


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
