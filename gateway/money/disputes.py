"""Disputes (chargebacks): the buyer's bank takes the payment back until the seller answers.

    dispute_opened(session, dispute, "stripe:evt_...")   # charge.dispute.created
    dispute_closed(session, dispute, "stripe:evt_...")   # charge.dispute.closed

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
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from gateway.delivery.emails import queue_email
from gateway.delivery.seller import notify_seller
from gateway.money.refunds import start_refund
from gateway.store import lifecycle
from gateway.store.lifecycle import RETRY_MESSAGE, job_of_payment, queue_again, record_audit
from gateway.store.tables import Dispute, Refund, RefundStatus, utcnow
from shared.jobs import JobStatus

log = logging.getLogger(__name__)

# Stripe's closing statuses that leave the money with the seller.
WON = frozenset({"won", "warning_closed"})


def dispute_opened(session: Session, dispute: Mapping[str, Any], source: str) -> bool:
    """Record the dispute, stop delivery and our refunds, alert the seller; once per dispute."""
    job = job_of_payment(session, dispute)
    if job is None:
        return False
    dispute_id = str(dispute["id"])
    if session.get(Dispute, dispute_id) is not None:
        return False
    amount, currency = int(dispute.get("amount") or 0), str(dispute.get("currency") or "")
    reason = str(dispute.get("reason") or "general")
    session.add(
        Dispute(
            id=dispute_id,
            job_id=job.id,
            stripe_charge_id=dispute.get("charge"),
            amount_cents=amount,
            currency=currency or job.currency,
            reason=reason,
            status=str(dispute.get("status") or "needs_response"),
            job_status_before=job.status,
        )
    )
    if lifecycle.disputed(session, job, f"dispute {dispute_id} opened ({reason})", source):
        for refund in session.query(Refund).filter(
            Refund.job_id == job.id, Refund.status == RefundStatus.PENDING
        ):
            refund.status, refund.next_attempt_at = RefundStatus.CANCELED, None
            refund.last_error = f"not sent: the charge is disputed ({dispute_id})"
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
        evidence_due_by=(dispute.get("evidence_details") or {}).get("due_by"),
        customer_email=job.customer_email,
    )
    log.warning("payment disputed", extra={"job_id": job.id, "dispute_id": dispute_id})
    return True


def dispute_closed(session: Session, dispute: Mapping[str, Any], source: str) -> bool:
    """Won: the job gets what it was owed again; lost: it stays disputed. Once per dispute."""
    job = job_of_payment(session, dispute)
    if job is None:
        return False
    dispute_id, status = str(dispute["id"]), str(dispute.get("status"))
    row = session.get(Dispute, dispute_id)
    if row is None:  # the opening event never came: record it now
        dispute_opened(session, dispute, source)
        row = session.get_one(Dispute, dispute_id)
    if row.closed_at is not None:
        return False
    row.status, row.closed_at = status, utcnow()
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


def _restore(session: Session, job: Any, before: str, dispute_id: str, source: str) -> None:
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
