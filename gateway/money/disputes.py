"""Disputes (chargebacks): the buyer's bank takes the payment back until the seller answers.

    dispute_opened(session, job, payment, dispute, "stripe:evt_...")   # charge.dispute.created
    dispute_closed(session, job, payment, dispute, "stripe:evt_...")   # charge.dispute.closed

An opened dispute marks the job ``disputed``: its downloads stop working, a
refund of ours still waiting is canceled (Stripe refuses to refund a
disputed charge; the dispute decides where the money goes), and the seller
is alerted, since only they can answer the bank. A won dispute gives back
what the job was owed: the download again when the result is stored, the
work again when it was never finished, the refund when it had failed. A
lost one leaves the job ``disputed``: the bank returned the money.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from gateway.delivery.emails import queue_email
from gateway.delivery.seller import notify_seller
from gateway.money.refunds import start_refund
from gateway.money.stripe_objects import StripeDispute
from gateway.store import ledger, lifecycle
from gateway.store.lifecycle import RETRY_MESSAGE, queue_again, record_audit
from gateway.store.tables import Job, Payment
from shared.jobs import JobStatus

log = logging.getLogger(__name__)

# Stripe's closing statuses that leave the money with the seller.
WON = frozenset({"won", "warning_closed"})


def dispute_opened(
    session: Session, job: Job, payment: Payment | None, dispute: StripeDispute, source: str
) -> bool:
    """Record the dispute, stop delivery and our refunds, alert the seller; once per dispute."""
    dispute_id = dispute.id
    if ledger.dispute_of(session, dispute_id) is not None:
        return False
    amount, currency = dispute.amount, dispute.currency or ""
    reason = dispute.reason or "general"
    ledger.record_dispute(
        session,
        job,
        dispute_id,
        dispute.charge,
        amount,
        currency or job.currency,
        reason,
        dispute.status or "needs_response",
    )
    if lifecycle.disputed(session, job, f"dispute {dispute_id} opened ({reason})", source):
        why = f"not sent: the charge is disputed ({dispute_id})"
        ledger.cancel_pending_refunds(session, job, why)
    else:
        record_audit(session, job, f"dispute {dispute_id} opened on a {job.status} job", source)
    notify_seller(
        session,
        "dispute_opened",
        f"dispute_opened:{dispute_id}",
        job.id,
        dispute_id=dispute_id,
        amount_cents=amount,
        currency=currency,
        reason=reason,
        evidence_due_by=dispute.evidence_due_by,
        customer_email=job.customer_email,
    )
    log.warning("payment disputed", extra={"job_id": job.id, "dispute_id": dispute_id})
    return True


def dispute_updated(
    session: Session, job: Job, payment: Payment | None, dispute: StripeDispute, source: str
) -> bool:
    """``charge.dispute.updated``: where an open dispute stands (evidence sent: under
    review), so the seller's count of disputes that need an answer is true. An update
    about one never recorded records it; a closed one is left as it closed."""
    row = ledger.dispute_of(session, dispute.id)
    if row is None:
        return dispute_opened(session, job, payment, dispute, source)
    if row.closed_at is not None or not dispute.status or dispute.status == row.status:
        return False
    ledger.update_dispute(row, dispute.status)
    record_audit(session, job, f"dispute {dispute.id} is {dispute.status}", source)
    return True


def dispute_closed(
    session: Session, job: Job, payment: Payment | None, dispute: StripeDispute, source: str
) -> bool:
    """Won: the job gets what it was owed again; lost: it stays disputed. Once per dispute."""
    dispute_id, status = dispute.id, str(dispute.status)
    if ledger.dispute_of(session, dispute_id) is None:  # the opening event never came
        dispute_opened(session, job, payment, dispute, source)
    row = ledger.dispute_of(session, dispute_id)
    if row is None or row.closed_at is not None:
        return False
    ledger.close_dispute(row, status)
    if job.status == JobStatus.DISPUTED and status in WON:
        _restore(session, job, row.job_status_before, dispute_id, source)
    else:
        record_audit(session, job, f"dispute {dispute_id} closed: {status}", source)
    notify_seller(
        session,
        "dispute_closed",
        f"dispute_closed:{dispute_id}",
        job.id,
        dispute_id=dispute_id,
        status=status,
        amount_cents=row.amount_cents,
        currency=row.currency,
    )
    log.info("dispute closed", extra={"job_id": job.id, "dispute_id": dispute_id})
    return True


def _restore(session: Session, job: Job, before: str, dispute_id: str, source: str) -> None:
    """After a won dispute: the download, the work, or the refund, whichever was owed.

    A job that was delivered stays delivered, even if retention has deleted
    its result since: the buyer had it, the money is the seller's. A refund
    that was owed when the dispute opened (ours waiting or retrying, or one
    that had failed) goes on: winning the dispute does not cancel it.
    """
    if before in (JobStatus.REFUNDING, JobStatus.REFUND_FAILED):
        start_refund(session, job, f"dispute {dispute_id} won; the refund owed goes on", source)
    elif before == JobStatus.COMPLETED:
        lifecycle.dispute_won(session, job, source)
    elif job.result_key and job.result_deleted_at is None:  # finished while disputed
        lifecycle.dispute_won(session, job, source)
        queue_email(session, job, "completed")
    elif before in (JobStatus.PENDING, JobStatus.PROCESSING):
        queue_again(
            session, job, f"dispute {dispute_id} won; the work goes on", source, RETRY_MESSAGE
        )
    else:
        start_refund(session, job, f"dispute {dispute_id} won, but nothing was delivered", source)
