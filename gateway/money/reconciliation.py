"""Reconciliation: what Stripe says was paid and refunded, against our records.

    report = reconcile(session, payments)      # {"mismatches": [...], "checked": {...}}

Every Checkout Session and every refund of the Stripe account is compared
with the jobs, payments and refunds tables. A mismatch names its kind, the
Stripe object, the job when there is one, and what to look at:

- ``paid_session_without_job``    Stripe took money for a session we have no job for
- ``paid_session_not_fulfilled``  the job exists but never saw the payment
- ``amount_mismatch``             Stripe charged another amount than the job's price
- ``job_paid_without_payment``    we think a job is paid; Stripe's session is not
- ``refund_not_recorded``         a refund at Stripe that our records lack
- ``refund_missing_at_stripe``    a refund we recorded as done that Stripe does not have
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.delivery.seller import notify_seller
from gateway.money.payments import Payments
from gateway.money.stripe_objects import StripeCheckout, StripeRefund
from gateway.store.tables import Job, Refund, RefundStatus
from shared.jobs import JobStatus

log = logging.getLogger(__name__)

UNPAID_STATES = (JobStatus.AWAITING_PAYMENT, JobStatus.EXPIRED)


@dataclass(frozen=True)
class Mismatch:
    kind: str
    stripe_id: str | None
    job_id: str | None
    amount_cents: int | None
    detail: str


class Reconciler:
    """Reconciles every ``SMI_RECONCILE_INTERVAL_S`` and tells the seller of each new mismatch.

    A mismatch is notified when two passes in a row find it (one pass may
    fall between a payment and its webhook), and once only (keyed by its kind
    and Stripe object), however many passes still find it.
    """

    def __init__(self, sessions: sessionmaker[Session], payments: Payments) -> None:
        self.sessions = sessions
        self.payments = payments
        self.found_before: set[str] = set()

    def check(self) -> int:
        """One pass; returns 0 (the loop then waits its interval)."""
        with self.sessions() as session:
            report = reconcile(session, self.payments)
        found = {}
        for mismatch in report["mismatches"]:
            key = f"mismatch:{mismatch['kind']}:{mismatch['stripe_id'] or mismatch['job_id']}"
            found[key] = mismatch
        lasting = [(key, found[key]) for key in found if key in self.found_before]
        self.found_before = set(found)
        for key, mismatch in lasting:
            try:
                with self.sessions.begin() as session:
                    if notify_seller(
                        session,
                        "reconciliation_mismatch",
                        key,
                        mismatch["job_id"],
                        mismatch=mismatch["kind"],
                        stripe_id=mismatch["stripe_id"],
                        amount_cents=mismatch["amount_cents"],
                        detail=mismatch["detail"],
                    ):
                        log.error("reconciliation mismatch: %s", mismatch["detail"], extra=mismatch)
            except IntegrityError:
                pass  # another gateway process notified it at the same moment
        return 0


def reconcile(session: Session, payments: Payments) -> dict[str, Any]:
    """Compare the Stripe account with our tables; see the module docstring."""
    checkout_sessions = payments.list_checkout_sessions()
    stripe_refunds = payments.list_refunds()
    jobs = {job.id: job for job in session.scalars(select(Job))}
    refunds = list(session.scalars(select(Refund)))
    mismatches = [
        *_check_sessions(checkout_sessions, jobs),
        *_check_refunds(stripe_refunds, refunds, jobs),
    ]
    return {
        "mismatches": [asdict(m) for m in mismatches],
        "checked": {
            "checkout_sessions": len(checkout_sessions),
            "stripe_refunds": len(stripe_refunds),
            "jobs": len(jobs),
            "refunds": len(refunds),
        },
    }


def _check_sessions(
    checkout_sessions: list[StripeCheckout], jobs: dict[str, Job]
) -> Iterable[Mismatch]:
    paid_at_stripe = set()
    for checkout in checkout_sessions:
        session_id, amount = checkout.id, checkout.amount_total
        # The price is what came before promotion codes and tax.
        subtotal = checkout.amount_subtotal
        job_id = checkout.job_id
        job = jobs.get(job_id or "")
        if not checkout.paid:
            continue
        paid_at_stripe.add(session_id)
        if job is None:
            yield Mismatch(
                "paid_session_without_job",
                session_id,
                job_id,
                amount,
                "Stripe took a payment for a Checkout Session that matches no job",
            )
        elif job.status in UNPAID_STATES or job.stripe_session_id != session_id:
            yield Mismatch(
                "paid_session_not_fulfilled",
                session_id,
                job.id,
                amount,
                f"the session is paid but the job is {job.status} "
                f"(linked session: {job.stripe_session_id})",
            )
        elif subtotal != job.amount_cents or checkout.currency != job.currency:
            yield Mismatch(
                "amount_mismatch",
                session_id,
                job.id,
                amount,
                f"Stripe charged {amount} {checkout.currency}, "
                f"the job's price is {job.amount_cents} {job.currency}",
            )
    for job in jobs.values():
        if job.paid_at is not None and job.stripe_session_id not in paid_at_stripe:
            yield Mismatch(
                "job_paid_without_payment",
                job.stripe_session_id,
                job.id,
                job.amount_cents,
                "the job is marked paid but Stripe has no paid session for it",
            )


def _check_refunds(
    stripe_refunds: list[StripeRefund], refunds: list[Refund], jobs: dict[str, Job]
) -> Iterable[Mismatch]:
    recorded = {r.stripe_refund_id for r in refunds if r.stripe_refund_id}
    live = {r.id for r in stripe_refunds if r.live}
    by_intent = {job.stripe_payment_intent_id: job.id for job in jobs.values()}
    for refund in stripe_refunds:
        if refund.id in recorded or not refund.live:
            continue
        yield Mismatch(
            "refund_not_recorded",
            refund.id,
            refund.job_id or by_intent.get(refund.payment_intent),
            refund.amount,
            f"Stripe refunded {refund.amount} {refund.currency} "
            f"of {refund.payment_intent}; our records have no such refund",
        )
    for row in refunds:
        nothing_paid = not row.amount_cents and row.stripe_refund_id is None  # a free order
        if (
            row.status == RefundStatus.SUCCEEDED
            and not nothing_paid
            and row.stripe_refund_id not in live
        ):
            yield Mismatch(
                "refund_missing_at_stripe",
                row.stripe_refund_id,
                row.job_id,
                row.amount_cents,
                "we recorded this refund as done; Stripe does not list it",
            )
