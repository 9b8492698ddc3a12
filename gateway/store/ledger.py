"""The money ledger: payments, refunds and disputes, and the only code that writes their rows
(but for the Refunder's lease on a due refund, ``store.leases.claim_due``).

    payment = payment_named(session, stripe_refund)   # the payment a Stripe object names
    payment = payment_of(session, job)                # the job's own payment
    refund = new_refund(session, job, reason, amount, currency)   # pending, a new round
    refund_went_through(refund, amount)               # -> succeeded
    fail_refund(refund)                               # -> failed (final)
    cancel_refund(refund, "not needed: ...")          # -> canceled
    cancel_pending_refunds(session, job, "...")       # every pending one -> canceled

A Stripe object names a payment by its payment intent, else by its charge
(a charge by its own id): ``payment_named`` is the one lookup. A refund's
status moves only through the named moves here, each checked against
``REFUND_STEPS`` the way ``store.lifecycle`` checks a job's against
``shared.jobs``: staying put changes nothing, an illegal step is logged
and raises ``IllegalRefundStepError``. Everything runs inside the
caller's transaction, with the job locked.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from gateway.store.tables import Dispute, Job, Payment, Refund, RefundStatus, utcnow

log = logging.getLogger(__name__)

# Where each refund status may go next.
REFUND_STEPS: dict[RefundStatus, frozenset[RefundStatus]] = {
    # Sent (or about to be): it went through, failed for good, or was not needed after all
    # (refunded at Stripe, or disputed).
    RefundStatus.PENDING: frozenset(
        {RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CANCELED}
    ),
    # Stripe may report days later that a refund failed (the card was closed).
    RefundStatus.SUCCEEDED: frozenset({RefundStatus.FAILED}),
    # Canceled while our request was on its way: Stripe reports it went through, or
    # failed, after all.
    RefundStatus.CANCELED: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    # Final at Stripe: a late or replayed event changes nothing; an admin starts a new round.
    RefundStatus.FAILED: frozenset(),
}
# Our own refunds' keys: refund-{job}-{round}; one made at Stripe is stripe-{its id}.
OUR_KEY_PREFIX = "refund-"


class IllegalRefundStepError(ValueError):
    """Raised by ``check_refund_step`` when a refund may not go from one status to another."""

    def __init__(self, current: RefundStatus, wanted: RefundStatus) -> None:
        super().__init__(f"a refund cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted


def can_refund_step(current: RefundStatus, wanted: RefundStatus) -> bool:
    """Whether ``current -> wanted`` is an allowed step of a refund."""
    return wanted in REFUND_STEPS[current]


def check_refund_step(current: RefundStatus, wanted: RefundStatus) -> None:
    """Raise ``IllegalRefundStepError`` unless ``current -> wanted`` is allowed."""
    if not can_refund_step(current, wanted):
        raise IllegalRefundStepError(current, wanted)


# ---------------------------------------------------------------- payments


class NamesPayment(Protocol):
    """A Stripe object that names a payment (a charge, refund or dispute)."""

    @property
    def payment_intent(self) -> str | None: ...

    @property
    def charge_id(self) -> str | None: ...


def payment_named(session: Session, named: NamesPayment) -> Payment | None:
    """The payment of ours a Stripe object names: by its payment intent, else by its
    charge (a charge's own id); ``None`` when it names none of ours."""
    return _payment(session, named.payment_intent, named.charge_id)


def payment_of(session: Session, job: Job) -> Payment | None:
    """The job's payment (the one its payment intent made), if it has one."""
    return _payment(session, job.stripe_payment_intent_id, None)


def _payment(session: Session, intent: str | None, charge: str | None) -> Payment | None:
    payment = None
    if intent:
        query = select(Payment).where(Payment.stripe_payment_intent_id == intent)
        payment = session.scalars(query).first()
    if payment is None and charge:
        payment = session.scalars(select(Payment).where(Payment.stripe_charge_id == charge)).first()
    return payment


def note_charge(payment: Payment, charge: str | None) -> None:
    """Keep the payment's charge the first time an object names it: the next event that
    names only the charge finds the payment."""
    if charge and not payment.stripe_charge_id:
        payment.stripe_charge_id = charge


def record_payment(
    session: Session,
    job_id: str,
    payment_intent: str,
    session_id: str,
    amount_cents: int,
    currency: str,
    tax_cents: int = 0,
    discount_cents: int = 0,
    at: datetime | None = None,
) -> None:
    """A payment Stripe took for a job, in plain SQL (the webhook's hot path); the unique
    payment intent stands behind it."""
    session.execute(
        insert(_PAYMENTS),
        {
            "job_id": job_id,
            "stripe_payment_intent_id": payment_intent,
            "stripe_session_id": session_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "created_at": at or utcnow(),
            "tax_cents": tax_cents,
            "discount_cents": discount_cents,
        },
    )


# ---------------------------------------------------------------- refunds: what is there


def find_refund(session: Session, job: Job, stripe_id: str, key: str | None) -> Refund | None:
    """The job's refund row for a Stripe refund: by its id, else by our key in its metadata."""
    row = session.scalars(
        select(Refund).where(Refund.job_id == job.id, Refund.stripe_refund_id == stripe_id)
    ).first()
    if row is None and key is not None:
        row = session.scalars(
            select(Refund).where(Refund.job_id == job.id, Refund.idempotency_key == key)
        ).first()
    return row


def refund_recorded_apart(session: Session, stripe_id: str, refund: Refund) -> Refund | None:
    """Another row than ``refund`` that records the Stripe refund ``stripe_id`` (one made at
    Stripe, recorded from its events)."""
    return session.scalars(
        select(Refund).where(Refund.stripe_refund_id == stripe_id, Refund.id != refund.id)
    ).first()


def refunded_so_far(session: Session, job: Job) -> int:
    """What went back of the job's payment: its succeeded refunds, ours and Stripe's."""
    back = session.scalar(
        select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(
            Refund.job_id == job.id, Refund.status == RefundStatus.SUCCEEDED
        )
    )
    return int(back or 0)


def failed_at_stripe(session: Session, job: Job) -> bool:
    """Whether Stripe reported one of the job's refunds failed."""
    failed = session.scalar(
        select(func.count()).where(
            Refund.job_id == job.id,
            Refund.status == RefundStatus.FAILED,
            Refund.stripe_refund_id.is_not(None),
        )
    )
    return bool(failed)


# ---------------------------------------------------------------- refunds: the moves


def new_refund(
    session: Session, job: Job, reason: str, amount_cents: int | None, currency: str
) -> Refund:
    """A refund of ours, due now: the job's next round, with its own key."""
    # Rounds of ours only: a refund made at Stripe has a row too, but not our key.
    rounds = session.scalar(
        select(func.count()).where(
            Refund.job_id == job.id, Refund.idempotency_key.like(f"{OUR_KEY_PREFIX}%")
        )
    )
    refund = Refund(
        job_id=job.id,
        idempotency_key=f"{OUR_KEY_PREFIX}{job.id}-{(rounds or 0) + 1}",
        reason=reason,
        status=RefundStatus.PENDING,
        amount_cents=amount_cents,
        currency=currency,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(refund)
    return refund


def refund_made_at_stripe(
    session: Session, job: Job, stripe_id: str, amount_cents: int, currency: str
) -> Refund:
    """A refund made at Stripe (its Dashboard, another tool): a row of its own, never sent
    by us; its status follows what Stripe reports."""
    refund = Refund(
        job_id=job.id,
        idempotency_key=f"stripe-{stripe_id}",
        reason="refunded at Stripe (its Dashboard or another tool)",
        status=RefundStatus.PENDING,
        stripe_refund_id=stripe_id,
        amount_cents=amount_cents,
        currency=currency,
        attempts=0,
    )
    session.add(refund)
    return refund


def link_refund(refund: Refund, stripe_id: str) -> bool:
    """Our row learns the id Stripe gave its refund; ``False`` if it knew one."""
    if refund.stripe_refund_id is not None:
        return False
    refund.stripe_refund_id = stripe_id
    return True


def refund_went_through(
    refund: Refund,
    amount_cents: int | None = None,
    *,
    stripe_id: str | None = None,
    note: str | None = None,
) -> bool:
    """``-> succeeded``, for ``amount_cents`` when given; returns whether the status changed."""
    changed = _step(refund, RefundStatus.SUCCEEDED)
    refund.next_attempt_at = None
    if amount_cents is not None:
        refund.amount_cents = amount_cents
    if stripe_id is not None:
        refund.stripe_refund_id = stripe_id
    if note is not None:
        refund.last_error = note
    return changed


def fail_refund(refund: Refund, error: str | None = None) -> bool:
    """``-> failed`` for good (an admin acts); ``error`` says why when given."""
    changed = _step(refund, RefundStatus.FAILED)
    refund.next_attempt_at = None
    if error is not None:
        refund.last_error = error
    return changed


def cancel_refund(refund: Refund, why: str) -> bool:
    """``-> canceled``: not needed after all, and never sent again."""
    changed = _step(refund, RefundStatus.CANCELED)
    refund.next_attempt_at = None
    refund.last_error = why
    return changed


def cancel_pending_refunds(session: Session, job: Job, why: str) -> None:
    """Every refund of the job still waiting to be sent ``-> canceled`` (the charge was
    refunded at Stripe, or is disputed: Stripe would refuse it, or refund twice)."""
    pending = select(Refund).where(Refund.job_id == job.id, Refund.status == RefundStatus.PENDING)
    for refund in session.scalars(pending):
        cancel_refund(refund, why)


def count_refund_attempt(refund: Refund, error: str | None) -> None:
    """One more try at Stripe, and what went wrong in it (``None``: nothing)."""
    refund.attempts += 1
    refund.last_error = error[:500] if error else None


def retry_refund_at(refund: Refund, when: datetime) -> None:
    """The next try, after a backoff."""
    refund.next_attempt_at = when


def _step(refund: Refund, wanted: RefundStatus) -> bool:
    """The guard: move ``refund`` to ``wanted`` if allowed; returns whether it moved.

    Staying put is a no-op (``False``); an illegal step raises ``IllegalRefundStepError``
    after logging it with the job and the refund's key.
    """
    current = RefundStatus(refund.status)
    if current == wanted:
        return False
    try:
        check_refund_step(current, wanted)
    except IllegalRefundStepError:
        log.warning(
            "refused refund step",
            extra={
                "job_id": refund.job_id,
                "refund_key": refund.idempotency_key,
                "from": current,
                "to": wanted,
            },
        )
        raise
    refund.status = wanted
    return True


# ---------------------------------------------------------------- disputes


def dispute_of(session: Session, dispute_id: str) -> Dispute | None:
    """The dispute recorded under Stripe's id, if it is."""
    return session.get(Dispute, dispute_id)


def record_dispute(
    session: Session,
    job: Job,
    dispute_id: str,
    charge: str | None,
    amount_cents: int,
    currency: str,
    reason: str,
    status: str,
) -> Dispute:
    """A dispute the buyer's bank opened, with the job's status before it (a won dispute
    goes back to what was owed then)."""
    dispute = Dispute(
        id=dispute_id,
        job_id=job.id,
        stripe_charge_id=charge,
        amount_cents=amount_cents,
        currency=currency,
        reason=reason,
        status=status,
        job_status_before=job.status,
    )
    session.add(dispute)
    return dispute


def update_dispute(dispute: Dispute, status: str) -> None:
    """Where an open dispute stands now (``under_review`` once the evidence is in)."""
    dispute.status = status


def close_dispute(dispute: Dispute, status: str) -> None:
    """The bank decided (``won``, ``lost``, ...)."""
    dispute.status, dispute.closed_at = status, utcnow()


# Built once: SQLAlchemy caches its compiled form.
_PAYMENTS = cast(Table, Payment.__table__)
