"""What a signed-in seller does to orders, through the admin API's own functions.

    job = refund(services, seller, job_id, "damaged file")   # NotPermittedError past the limit
    retry(services, seller, job_id); fulfil(...); resend_link(...)
    erasure = erase(services, seller, "buyer@example.com")
    outcome = replay(services, seller, "evt_...")
    report = reconcile(services, seller)                      # kept for the overview

Each checks the seller's role first (``gateway.store.accounts.PERMISSIONS``),
then calls what ``/admin`` calls, with the seller as the source of the audit
rows (``seller:EMAIL``); where that function names its source ``admin``
itself, an audit row of ours says who asked. Blocking: call off the loop.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select

from gateway.background.retention import Erasure, erase_customer
from gateway.currencies import format_money
from gateway.delivery.emails import email_kind, queue_email_again
from gateway.delivery.mailer import MAX_SEND_ATTEMPTS
from gateway.errors import ConflictError, NotFoundError, NotPermittedError
from gateway.money.fulfilment import retry_job, settle_from_stripe
from gateway.money.reconciliation import reconcile as reconcile_with_stripe
from gateway.money.refunds import refund_job
from gateway.money.stripe_events import replay_event
from gateway.services import Services
from gateway.store.accounts import Seller
from gateway.store.lifecycle import get_job, record_audit
from gateway.store.orders import left_to_refund
from gateway.store.tables import Job, OutboxMessage, ReconciliationCheck, WebhookEvent
from shared.jobs import JobStatus

log = logging.getLogger(__name__)
COMPLETED_EMAIL = email_kind("completed")


def require(seller: Seller, action: str) -> None:
    """``NotPermittedError`` unless the seller's role allows ``action``."""
    if not seller.may(action):
        raise NotPermittedError(f"a {seller.role} account may not do this ({action})")


def refund(services: Services, seller: Seller, job_id: str, reason: str) -> Job:
    """Refund what is left of the job's payment; a support account only up to its limit."""
    require(seller, "refund")
    limit = services.config.dashboard.support_refund_limit
    with services.sessions.begin() as session:
        left, currency = left_to_refund(session, get_job(session, job_id, lock=True))
        if not seller.may("refund_any_amount") and left > limit:
            raise NotPermittedError(
                f"a support account refunds at most {format_money(limit, currency)}; "
                f"this refund is {format_money(left, currency)}: ask an owner"
            )
        done = refund_job(session, job_id, reason, seller.who)
    log.info("refund asked from the dashboard", extra={"job_id": job_id, "seller": seller.email})
    return done


def retry(services: Services, seller: Seller, job_id: str) -> Job:
    require(seller, "retry")
    with services.sessions.begin() as session:
        return retry_job(session, job_id, seller.who)


def fulfil(services: Services, seller: Seller, job_id: str) -> Job:
    """Ask Stripe about a job still awaiting payment and fulfil it if paid."""
    require(seller, "fulfil")
    done = settle_from_stripe(services.sessions, services.payments, job_id)
    with services.sessions.begin() as session:
        job = get_job(session, job_id, lock=True)
        record_audit(session, job, "settled from Stripe", seller.who)
    return done


def resend_link(services: Services, seller: Seller, job_id: str) -> int:
    """Send the completion email again, with a fresh download link; returns its attempt."""
    require(seller, "resend")
    with services.sessions.begin() as session:
        job = get_job(session, job_id, lock=True)
        if job.status != JobStatus.COMPLETED or job.result_deleted_at is not None:
            raise ConflictError(f"only a completed job's link is sent; this one is {job.status}")
        if not job.customer_email:
            raise ConflictError("this job has no email address to send the link to")
        last = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.job_id == job.id, OutboxMessage.kind == COMPLETED_EMAIL)
            .order_by(OutboxMessage.attempt.desc())
            .limit(1)
        ).first()
        if last and last.published_at is None and last.publish_attempts < MAX_SEND_ATTEMPTS:
            raise ConflictError("the last copy of this email is still being sent")
        attempt = queue_email_again(session, job, "completed")
        record_audit(session, job, f"download link sent again (email {attempt})", seller.who)
        return attempt


def erase(services: Services, seller: Seller, email: str) -> Erasure:
    """A customer's images and personal data, as ``smi-admin erase``; who asked is audited."""
    require(seller, "erase")
    with services.sessions.begin() as session:
        done = erase_customer(session, services.storage, email)
        for job_id in done.erased:
            record_audit(session, get_job(session, job_id), "erasure asked", seller.who)
    log.info("customer erased from the dashboard", extra={"seller": seller.email})
    return done


def replay(services: Services, seller: Seller, event_id: str) -> str:
    """Apply a stored Stripe event again (idempotent); returns its outcome."""
    require(seller, "replay")
    try:
        outcome = replay_event(services.sessions, event_id, services.payments)
    except LookupError:
        raise NotFoundError("no such event, or one received before payloads were kept") from None
    with services.sessions.begin() as session:
        event = session.get(WebhookEvent, event_id)
        if event is not None and event.job_id:
            try:
                job = get_job(session, event.job_id)
            except LookupError:
                return outcome
            record_audit(session, job, f"Stripe event {event_id} replayed: {outcome}", seller.who)
    return outcome


def reconcile(services: Services, seller: Seller) -> dict[str, Any]:
    """Stripe's records against ours, now; kept so the overview lists what it found."""
    require(seller, "reconcile")
    with services.sessions() as session:
        report = reconcile_with_stripe(session, services.payments)
    with services.sessions.begin() as session:
        session.add(ReconciliationCheck(checked_by=seller.who, report=json.dumps(report)))
    return report
