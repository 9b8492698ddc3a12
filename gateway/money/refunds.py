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
``refund_failed`` for an admin (and the seller is told). Every attempt is
written to the row and the audit trail.

Refunds Stripe reports (``refund.created``/``updated``/``failed``,
``refund_reported``) are matched to our rows by the ``refund_key`` in
their metadata or by id; any other is a refund made at Stripe (the
Dashboard) and gets a row of its own, partial or full, so reports and
reconciliation see it. A refund Stripe later reports failed moves the job
to ``refund_failed`` and alerts the seller. Every row is written, and each
refund's status moved, through ``store.ledger``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from gateway.config import RecoveryConfig
from gateway.delivery.emails import queue_email
from gateway.delivery.seller import notify_seller
from gateway.errors import ConflictError, PaymentProviderRejected, PaymentProviderUnavailable
from gateway.money.payments import Payments
from gateway.money.stripe_objects import StripeCharge, StripeRefund
from gateway.store import ledger, lifecycle
from gateway.store.leases import backoff_s, claim_due
from gateway.store.lifecycle import get_job, record_audit
from gateway.store.tables import Job, Payment, Refund, RefundStatus, utcnow
from shared.failpoints import failpoint
from shared.jobs import IllegalTransitionError, JobStatus

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

    Stripe refunds the whole payment: what the buyer paid (after discounts,
    with tax), unless ``amount_cents`` and ``currency`` say otherwise. An
    order that cost nothing (a 100% promotion code) has nothing to send
    back: it is refunded at once.
    """
    lifecycle.start_refunding(session, job, reason, source)
    payment = ledger.payment_of(session, job)
    if amount_cents is None and payment is not None:
        # What is left of the payment: a part refunded at Stripe already stays refunded.
        amount_cents = payment.amount_cents - ledger.refunded_so_far(session, job)
    elif amount_cents is None:  # no payment intent: a free order has nothing to send back
        amount_cents = 0 if job.paid_at is not None else job.amount_cents
    currency = currency or (payment.currency if payment is not None else job.currency)
    refund = ledger.new_refund(session, job, reason, amount_cents, currency)
    if amount_cents == 0 and job.paid_at is not None and not job.stripe_payment_intent_id:
        ledger.refund_went_through(refund, note="nothing was paid")
        if lifecycle.refunded(session, job, "nothing to refund", source):
            queue_email(session, job, "refunded")
    return refund


def refunded_in_full(session: Session, job: Job, source: str) -> bool:
    """The whole payment went back: the job is ``refunded``, waiting refunds of ours are
    canceled (never sent), the customer is emailed once. ``False`` if it already was."""
    if job.status == JobStatus.REFUNDING:
        changed = lifecycle.refunded(session, job, "refunded at Stripe", source)
    else:
        try:
            changed = lifecycle.refunded_at_stripe(session, job, source)
        except IllegalTransitionError:
            changed = False
    if not changed:
        return False
    ledger.cancel_pending_refunds(session, job, "not needed: the charge was refunded at Stripe")
    queue_email(session, job, "refunded")
    return True


def refunded_at_stripe(
    session: Session, job: Job, payment: Payment | None, charge: StripeCharge, source: str
) -> bool:
    """``charge.refunded``: money went back at Stripe, by our refund or by hand in its Dashboard.

    Each refund the charge lists (as Stripe holds them when the event is
    applied) is recorded first, as its own ``refund.created`` would, so a
    job never ends refunded without the rows that say by which refund.
    Fully refunded: ``refunded_in_full`` (the download stops working, no
    refund of ours is ever sent again, one email). Partly refunded: the
    refunds' rows say so. A replay, or our own refund's echo, changes nothing.
    """
    changed = False
    for refund in reversed(charge.refunds):  # oldest first
        changed |= refund_reported(session, job, payment, refund, source)
    if not charge.refunded or _a_refund_failed_since(session, job, payment):
        # Partly refunded, or out of date (a refund failed since): the refunds' rows say it.
        return changed
    if refunded_in_full(session, job, source):
        log.info("refunded at Stripe", extra={"job_id": job.id, "source": source})
        changed = True
    return changed


def _a_refund_failed_since(session: Session, job: Job, payment: Payment | None) -> bool:
    """Whether a refund Stripe reported failed leaves the payment no longer refunded in full
    (a ``charge.refunded`` delivered after ``refund.failed`` tells an older state)."""
    if not ledger.failed_at_stripe(session, job):
        return False
    return payment is not None and ledger.refunded_so_far(session, job) < payment.amount_cents


def refund_reported(
    session: Session, job: Job, payment: Payment | None, refund: StripeRefund, source: str
) -> bool:
    """``refund.created`` / ``refund.updated`` / ``refund.failed``: one refund as Stripe sees it.

    Ours (by ``refund_key`` or id) is brought up to date; any other is
    recorded as a refund made at Stripe. A refund that went through tells
    the seller and, when the payment is now refunded in full, ends the job;
    one that failed or was canceled puts the job in ``refund_failed`` for an
    admin and alerts the seller. Returns whether anything changed.
    """
    row = ledger.find_refund(session, job, refund.id, refund.refund_key)
    if row is not None and row.status == RefundStatus.FAILED:
        return False  # failed is final at Stripe: a late or replayed older event changes nothing
    changed = False
    if row is None:
        currency = refund.currency or job.currency
        row = ledger.refund_made_at_stripe(session, job, refund.id, refund.amount, currency)
        record_audit(session, job, f"refund {refund.id} of {refund.amount} made at Stripe", source)
        changed = True
    else:
        changed |= ledger.link_refund(row, refund.id)
    if refund.went_through:  # succeeded, pending, requires_action
        changed |= _refund_went_through(session, job, payment, row, refund.amount, source)
    elif row.status != RefundStatus.FAILED:
        changed |= _refund_did_not_go_through(session, job, row, str(refund.status), source)
    return changed


def _refund_went_through(
    session: Session, job: Job, payment: Payment | None, row: Refund, amount: int, source: str
) -> bool:
    changed = ledger.refund_went_through(row, amount)
    notify_seller(
        session,
        "refund",
        f"refund:{row.stripe_refund_id}",
        job.id,
        refund_id=row.stripe_refund_id,
        amount_cents=amount,
        currency=row.currency,
        reason=row.reason,
    )
    session.flush()
    back = ledger.refunded_so_far(session, job)
    if payment is not None and back >= payment.amount_cents:
        changed |= refunded_in_full(session, job, source)
    elif changed:
        paid = payment.amount_cents if payment is not None else "?"
        record_audit(session, job, f"refunded {back} of {paid} so far", source)
    return changed


def _refund_did_not_go_through(
    session: Session, job: Job, row: Refund, status: str, source: str
) -> bool:
    ledger.fail_refund(row, f"Stripe reports the refund {status}")
    error = f"Stripe reports refund {row.stripe_refund_id} {status}"
    if lifecycle.refund_failed(session, job, error, source):
        queue_email(session, job, "refund_failed")  # the buyer may have been told "refunded"
    notify_seller(
        session,
        "refund_failed",
        f"refund_failed:{row.idempotency_key}",
        job.id,
        refund_id=row.stripe_refund_id,
        amount_cents=row.amount_cents,
        currency=row.currency,
        error=error,
        customer_email=job.customer_email,
    )
    log.error("refund failed at Stripe; an admin must act", extra={"job_id": job.id})
    return True


def _record_made_at_stripe(session: Session, job: Job, at_stripe: list[StripeRefund]) -> None:
    """The refunds listed at Stripe that are not ours (no ``refund_key``), recorded as their
    own events would record them: the Refunder saw them before their events came."""
    payment = ledger.payment_of(session, job)
    for made in reversed(at_stripe):  # oldest first
        if not made.refund_key:
            refund_reported(session, job, payment, made, "refunder")


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
            payment = ledger.payment_of(session, job)
            intent, key, reason, planned = (
                job.stripe_payment_intent_id,
                refund.idempotency_key,
                refund.reason,
                refund.amount_cents,
            )
            paid = payment.amount_cents if payment is not None else None
        context = {"job_id": refund.job_id, "refund_key": key}
        if not intent:
            self._give_up(refund_id, "the job has no payment intent to refund")
            return
        try:
            stripe_refund, at_stripe = self._send(intent, refund.job_id, key, reason, planned, paid)
        except PaymentProviderUnavailable as exc:
            log.warning("refund attempt failed, will retry: %s", exc, extra=context)
            self._retry_later(refund_id, str(exc))
            return
        except PaymentProviderRejected as exc:
            log.error("refund refused: %s", exc, extra=context)
            self._give_up(refund_id, str(exc))
            return
        if stripe_refund is None:
            self._not_needed(refund_id, at_stripe)
            return
        failpoint("refund.sent")
        if not stripe_refund.live:
            self._give_up(refund_id, f"Stripe reports the refund {stripe_refund.status}")
            return
        self._succeeded(refund_id, stripe_refund, at_stripe)

    def _send(
        self,
        intent: str,
        job_id: str,
        key: str,
        reason: str,
        planned: int | None,
        paid: int | None,
        *,
        second_look: bool = True,
    ) -> tuple[StripeRefund | None, list[StripeRefund]]:
        """Stripe's refund for our row ``key`` (the one already made, or a new one of what is
        left of the payment now; ``None`` when nothing is left), and the payment's refunds
        at Stripe before it.

        What is left is read from Stripe as each attempt is sent, not from when
        the refund was planned: a part refunded in the Dashboard meanwhile (its
        events perhaps still on their way) is never asked for twice. One made
        between that reading and our request makes Stripe refuse ours: then
        the refunds are read once more and, if they changed, what is left now
        is asked for.
        """
        at_stripe = self.payments.list_refunds(intent)
        live = [r for r in at_stripe if r.live]
        for made in live:
            # Ours went through already (an attempt whose answer was lost), or, for a later
            # round (an admin's retry), an earlier round of ours did.
            if made.refund_key == key or (made.refund_key and not key.endswith("-1")):
                return made, at_stripe
        amount = planned or None  # no payment recorded: as planned, or all of it (Stripe knows)
        if paid is not None:
            left = paid - sum(r.amount for r in live)
            amount = left if planned is None else min(planned, left)
            if amount <= 0:
                return None, at_stripe
        # Stripe ties an idempotency key to its request's parameters: another amount than
        # planned is another request, with a key of its own (one per amount).
        request_key = key if amount == planned else f"{key}-{amount}"
        try:
            made = self.payments.refund(intent, job_id, reason, key, amount, request_key)
        except PaymentProviderRejected:
            if not second_look:
                raise
            now = [r.id for r in self.payments.list_refunds(intent)]
            if now == [r.id for r in at_stripe]:
                raise  # refused for another reason: nothing changed at Stripe
            log.info("refunds changed at Stripe while ours was sent; asking for what is left")
            return self._send(intent, job_id, key, reason, planned, paid, second_look=False)
        return made, at_stripe

    def _succeeded(
        self, refund_id: int, stripe_refund: StripeRefund, at_stripe: list[StripeRefund]
    ) -> None:
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, None)
            _record_made_at_stripe(session, job, at_stripe)
            stripe_id = stripe_refund.id
            if ledger.refund_recorded_apart(session, stripe_id, refund) is not None:
                # A refund made at Stripe, on its own row already.
                ledger.cancel_refund(refund, f"not needed: {stripe_id} was made at Stripe")
            else:
                amount = stripe_refund.amount or refund.amount_cents or 0
                ledger.refund_went_through(refund, amount, stripe_id=stripe_id)
                notify_seller(
                    session,
                    "refund",
                    f"refund:{stripe_id}",
                    job.id,
                    refund_id=stripe_id,
                    amount_cents=refund.amount_cents,
                    currency=refund.currency,
                    reason=refund.reason,
                )
            if lifecycle.refunded(session, job, stripe_id, "refunder"):
                queue_email(session, job, "refunded")
        log.info("refunded", extra={"job_id": refund.job_id, "refund": stripe_refund.id})

    def _not_needed(self, refund_id: int, at_stripe: list[StripeRefund]) -> None:
        """Nothing is left to refund: refunds made at Stripe took it all. They are recorded
        (their events may still be on their way), which ends the job as ``charge.refunded``
        would, and our row is canceled."""
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, None)
            _record_made_at_stripe(session, job, at_stripe)
            if refund.status == RefundStatus.PENDING:
                ledger.cancel_refund(
                    refund, "not needed: the payment was refunded in full at Stripe"
                )
            if job.status == JobStatus.REFUNDING:
                refunded_in_full(session, job, "refunder")

    def _retry_later(self, refund_id: int, error: str) -> None:
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, error)
            if refund.status == RefundStatus.CANCELED:
                return  # not needed any more (refunded at Stripe, or disputed) while we tried
            record_audit(
                session, job, f"refund attempt {refund.attempts} failed: {error}", "refunder"
            )
            if refund.attempts >= self.config.refund_max_attempts:
                self._mark_failed(session, refund, job, f"gave up after {refund.attempts} tries")
                return
            delay = backoff_s(self.config.refund_backoff_s, refund.attempts)
            ledger.retry_refund_at(refund, utcnow() + timedelta(seconds=delay))

    def _give_up(self, refund_id: int, error: str) -> None:
        with self.sessions.begin() as session:
            refund, job = self._count_attempt(session, refund_id, error)
            if refund.status == RefundStatus.CANCELED:
                return  # not needed any more (refunded at Stripe, or disputed) while we tried
            self._mark_failed(session, refund, job, error)

    @staticmethod
    def _count_attempt(session: Session, refund_id: int, error: str | None) -> tuple[Refund, Job]:
        """The refund and its job (locked), with this attempt counted and its error kept."""
        refund = session.get_one(Refund, refund_id)
        job = get_job(session, refund.job_id, lock=True)
        ledger.count_refund_attempt(refund, error)
        return refund, job

    @staticmethod
    def _mark_failed(session: Session, refund: Refund, job: Job, error: str) -> None:
        ledger.fail_refund(refund)
        if job.status == JobStatus.REFUNDING:  # (a refunded job's money went back another way)
            lifecycle.refund_failed(session, job, error, "refunder")
            queue_email(session, job, "refund_failed")
        notify_seller(
            session,
            "refund_failed",
            f"refund_failed:{refund.idempotency_key}",
            job.id,
            amount_cents=refund.amount_cents,
            currency=refund.currency,
            error=error,
            attempts=refund.attempts,
            customer_email=job.customer_email,
        )
        log.error("refund failed; an admin must act", extra={"job_id": job.id, "error": error})
