"""Refunds: a job that fails after payment gets its money back, exactly once.

    fail_job(session, job, "CorruptImageError: ...", source="worker")   # in a transaction
    Refunder(sessions, payments, config.recovery).refund_due()            # later, in the loop

``fail_job`` moves the job ``failed -> refunding`` and adds a ``refunds`` row
in the same transaction, so a duplicate failure event finds the job
already refunding and changes nothing. The ``Refunder`` then calls Stripe
(the spec's ``process_refund``) with the row's idempotency key
``refund-{job_id}-{round}``: however often a call is retried, by this
process or another, Stripe refunds once. Unavailable: retried with
backoff; refused, or still failing after the last attempt: the job becomes
``refund_failed`` for an admin. Every attempt is written to the row and
the audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import RecoveryConfig
from gateway.delivery.emails import queue_email
from gateway.errors import ConflictError, PaymentProviderRejected, PaymentProviderUnavailable
from gateway.money.payments import LIVE_REFUND_STATUSES, Payments
from gateway.store import lifecycle
from gateway.store.leases import backoff_s, claim_due
from gateway.store.lifecycle import get_job, job_paid_by, record_audit
from gateway.store.tables import Job, Refund, RefundStatus, utcnow
from shared.failpoints import failpoint
from shared.jobs import JobStatus

log = logging.getLogger(__name__)

REFUNDABLE = frozenset({JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.REFUND_FAILED})


def fail_job(session: Session, job: Job, reason: str, source: str) -> bool:
    """Fail a paid job that was queued or running, and start its refund; ``False`` if neither."""
    if not lifecycle.fail(session, job, reason, source):
        return False
    start_refund(session, job, reason, source)
    return True


def refund_job(session: Session, job_id: str, reason: str, admin: str) -> Job:
    """Start a refund by hand; 409 unless the job is completed, failed or refund_failed."""
    job = get_job(session, job_id, lock=True)
    if job.status not in REFUNDABLE or not job.stripe_payment_intent_id:
        raise ConflictError(f"a {job.status} job cannot be refunded")
    start_refund(session, job, f"{reason} (by an admin)", admin)
    return job


def start_refund(
    session: Session,
    job: Job,
    reason: str,
    source: str,
    amount_cents: int | None = None,
    currency: str | None = None,
) -> Refund:
    """``refunding`` and a new refund row (a new round, with its own key); call under lock.

    Stripe refunds the whole payment; ``amount_cents`` and ``currency`` say
    what it was when that is not the job's price.
    """
    lifecycle.start_refunding(session, job, reason, source)
    rounds = session.scalar(select(func.count()).where(Refund.job_id == job.id)) or 0
    refund = Refund(
        job_id=job.id,
        idempotency_key=f"refund-{job.id}-{rounds + 1}",
        reason=reason,
        status=RefundStatus.PENDING,
        amount_cents=job.amount_cents if amount_cents is None else amount_cents,
        currency=currency or job.currency,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(refund)
    return refund


def refunded_at_stripe(session: Session, charge: Mapping[str, Any], source: str) -> bool:
    """``charge.refunded``: money went back at Stripe, by our refund or by hand in its Dashboard.

    Fully refunded: the job is ``refunded`` (its download stops working), a
    refund of ours still waiting counts as done (so it is never sent again),
    and the customer is emailed once. Partly refunded: noted in the audit
    trail, nothing else changes. Our own refund's echo changes nothing.
    """
    intent = charge.get("payment_intent")
    job = job_paid_by(session, intent) if isinstance(intent, str) else None
    if job is None:
        return False
    amount, refunded = charge.get("amount"), charge.get("amount_refunded")
    if not charge.get("refunded"):
        record_audit(session, job, f"partly refunded at Stripe: {refunded} of {amount}", source)
        return True
    if not lifecycle.refunded_at_stripe(session, job, source):
        return False
    waiting = select(Refund).where(Refund.job_id == job.id, Refund.status == RefundStatus.PENDING)
    for refund in session.scalars(waiting):
        refund.status = RefundStatus.SUCCEEDED
        refund.next_attempt_at = None
        refund.last_error = "the charge was refunded at Stripe"
    queue_email(session, job, "refunded")
    log.info("refunded at Stripe", extra={"job_id": job.id, "source": source})
    return True


class Refunder:
    """Sends due refunds to Stripe; any number of gateway processes may run one."""

    def __init__(
        self, sessions: sessionmaker[Session], payments: Payments, config: RecoveryConfig
    ) -> None:
        self.sessions = sessions
        self.payments = payments
        self.config = config

    def refund_due(self) -> int:
        """Try every due refund once; returns how many were tried."""
        claimed = claim_due(
            self.sessions,
            Refund,
            [Refund.status == RefundStatus.PENDING],
            lease_s=self.config.refund_lease_s,
        )
        for refund_id in claimed:
            self._attempt(refund_id)
        return len(claimed)

    def _attempt(self, refund_id: int) -> None:
        with self.sessions() as session:
            refund = session.get_one(Refund, refund_id)
            job = get_job(session, refund.job_id)
            intent, key, reason = (
                job.stripe_payment_intent_id,
                refund.idempotency_key,
                refund.reason,
            )
        context = {"job_id": refund.job_id, "refund_key": key}
        if not intent:
            self._give_up(refund_id, "the job has no payment intent to refund")
            return
        try:
            # A later round (an admin's retry) first looks for a refund that already went through.
            stripe_refund: Any = (
                self.payments.existing_refund(intent) if not key.endswith("-1") else None
            ) or self.payments.refund(intent, refund.job_id, reason, key)
        except PaymentProviderUnavailable as exc:
            log.warning("refund attempt failed, will retry: %s", exc, extra=context)
            self._retry_later(refund_id, str(exc))
            return
        except PaymentProviderRejected as exc:
            log.error("refund refused: %s", exc, extra=context)
            self._give_up(refund_id, str(exc))
            return
        failpoint("refund.sent")
        if stripe_refund.get("status") not in LIVE_REFUND_STATUSES:
            self._give_up(refund_id, f"Stripe reports the refund {stripe_refund.get('status')}")
            return
        self._succeeded(refund_id, stripe_refund)

    def _succeeded(self, refund_id: int, stripe_refund: Any) -> None:
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, None)
            refund.status = RefundStatus.SUCCEEDED
            refund.stripe_refund_id = str(stripe_refund["id"])
            refund.amount_cents = int(stripe_refund.get("amount") or refund.amount_cents or 0)
            refund.next_attempt_at = None
            if lifecycle.refunded(session, job, str(stripe_refund["id"]), "refunder"):
                queue_email(session, job, "refunded")
        log.info("refunded", extra={"job_id": refund.job_id, "refund": stripe_refund["id"]})

    def _retry_later(self, refund_id: int, error: str) -> None:
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, error)
            record_audit(
                session, job, f"refund attempt {refund.attempts} failed: {error}", "refunder"
            )
            if refund.attempts >= self.config.refund_max_attempts:
                self._mark_failed(session, refund, job, f"gave up after {refund.attempts} tries")
                return
            delay = backoff_s(self.config.refund_backoff_s, refund.attempts)
            refund.next_attempt_at = utcnow() + timedelta(seconds=delay)

    def _give_up(self, refund_id: int, error: str) -> None:
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, error)
            self._mark_failed(session, refund, job, error)

    @staticmethod
    def _count_attempt(session: Session, refund_id: int, error: str | None) -> tuple[Refund, Job]:
        """The refund and its job (locked), with this attempt counted and its error kept."""
        refund = session.get_one(Refund, refund_id)
        job = get_job(session, refund.job_id, lock=True)
        refund.attempts += 1
        refund.last_error = error[:500] if error else None
        return refund, job

    @staticmethod
    def _mark_failed(session: Session, refund: Refund, job: Job, error: str) -> None:
        refund.status = RefundStatus.FAILED
        refund.next_attempt_at = None
        lifecycle.refund_failed(session, job, error, "refunder")
        log.error("refund failed; an admin must act", extra={"job_id": job.id, "error": error})
