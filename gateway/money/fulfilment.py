"""What a Stripe outcome does to a job: fulfil a paid checkout, record a decline, expire.

``fulfil_checkout`` is the one idempotent function behind both the
``checkout.session.completed`` webhook and the customer's return
(``fulfil_on_return``): whichever comes first wins, the other changes
nothing. All but ``fulfil_on_return`` run inside the caller's transaction;
the job's status moves only through ``gateway.store.lifecycle``.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from gateway.delivery.emails import email_row, usable_email
from gateway.delivery.seller import notify_seller
from gateway.errors import ConflictError
from gateway.money.payments import Payments
from gateway.money.refunds import start_refund
from gateway.money.stripe_objects import StripeCheckout, StripeIntent
from gateway.store.lifecycle import (
    EXPIRED_MESSAGE,
    RETRY_MESSAGE,
    Paid,
    expire,
    get_job,
    lock_for_payment,
    mark_paid,
    queue_again,
    record_audit,
    record_decline,
    record_payment_to_return,
)
from gateway.store.tables import Job
from shared.jobs import JobStatus

log = logging.getLogger(__name__)

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
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.REFUND_FAILED})


def fulfil_checkout(session: Session, checkout: StripeCheckout, source: str) -> bool:
    """Mark a paid checkout's job ``pending`` and queue its work; ``False`` if nothing to do.

    The price is checked against the session's subtotal (before promotion
    codes and tax); what is recorded as paid is Stripe's total, with its tax
    and discount beside it. A payment the job cannot be fulfilled with
    (another price or currency, or one that came after the job expired) is
    refunded instead: money is never kept for nothing. A session that is
    not the job's changes nothing (logged; reconciliation lists it). An
    order a promotion code made free (``no_payment_required``) is fulfilled.
    """
    job_id = checkout.job_id
    if not job_id or not checkout.paid:
        return False
    locked = lock_for_payment(session, job_id)
    context = {"job_id": job_id, "session_id": checkout.id, "source": source}
    if locked.stripe_session_id and locked.stripe_session_id != checkout.id:
        log.warning("checkout session does not belong to this job", extra=context)
        return False
    if locked.status not in (JobStatus.AWAITING_PAYMENT, JobStatus.EXPIRED):
        return False  # already fulfilled, or already being refunded
    amount, currency = checkout.amount_total, checkout.currency
    subtotal = checkout.amount_subtotal
    paid = Paid(
        session_id=checkout.id,
        payment_intent_id=checkout.payment_intent,
        customer_email=usable_email(checkout.email),
        amount_cents=amount,
        tax_cents=checkout.tax_cents,
        discount_cents=checkout.discount_cents,
    )
    problem = None
    if (subtotal, currency) != (locked.amount_cents, locked.currency):
        before = f" (subtotal {subtotal})" if subtotal != amount else ""
        price = f"{locked.amount_cents} {locked.currency}"
        problem = f"paid {amount} {currency}{before}, the price is {price}"
    elif locked.status == JobStatus.EXPIRED:
        problem = "paid after the checkout had expired"
    if problem is not None:
        log.error("payment refunded: %s", problem, extra=context)
        job = get_job(session, job_id, lock=True)
        paid_amount = amount if amount is not None else 0
        paid_currency = str(currency or locked.currency)
        record_payment_to_return(session, job, paid, paid_amount, paid_currency, problem, source)
        start_refund(session, job, problem, source, paid_amount, paid_currency)
        return True
    mark_paid(session, job_id, locked, paid, source, [email_row(job_id, "payment_confirmation")])
    if paid.customer_email is None and checkout.email:
        log.warning(
            "the buyer's email address cannot be used: no email reaches them", extra=context
        )
        record_audit(
            session,
            get_job(session, job_id),
            "the email address given at Stripe cannot be used: none is sent",
            source,
        )
    notify_seller(
        session,
        "sale",
        f"sale:{job_id}",
        job_id,
        amount_cents=paid.amount_cents,
        currency=currency,
        tax_cents=paid.tax_cents,
        discount_cents=paid.discount_cents,
        model=locked.model,
        customer_email=paid.customer_email,
        session_id=paid.session_id,
    )
    log.info("checkout fulfilled", extra=context)
    return True


def fulfil_on_return(
    sessions: sessionmaker[Session], payments: Payments, job_id: str, session_id: str
) -> bool:
    """The customer is back from paying: if the webhook has not come yet, ask Stripe.

    Only for the job's own Checkout Session; a job already past awaiting
    payment costs no call to Stripe.
    """
    with sessions() as session:
        job = get_job(session, job_id)
    if job.stripe_session_id != session_id or job.status != JobStatus.AWAITING_PAYMENT:
        return False
    checkout = payments.retrieve_checkout_session(session_id)
    with sessions.begin() as session:
        return fulfil_checkout(session, checkout, "return")


def settle_from_stripe(sessions: sessionmaker[Session], payments: Payments, job_id: str) -> Job:
    """An admin's "fulfil": ask Stripe about a job still awaiting payment and apply the answer.

    For a job whose webhook never came: paid at Stripe, it is fulfilled (or
    refunded, if the payment cannot be used) through ``fulfil_checkout``;
    not paid, ``ConflictError``.
    """
    with sessions() as session:
        job = get_job(session, job_id)
    if job.status not in (JobStatus.AWAITING_PAYMENT, JobStatus.EXPIRED):
        raise ConflictError(
            f"only jobs awaiting payment are settled from Stripe; this is {job.status}"
        )
    if not job.stripe_session_id:
        raise ConflictError("this job never got a Checkout Session")
    checkout = payments.retrieve_checkout_session(job.stripe_session_id)
    if not checkout.paid:
        raise ConflictError(f"Stripe says this checkout is {checkout.payment_status}")
    with sessions.begin() as session:
        fulfil_checkout(session, checkout, "admin")
    with sessions() as session:
        return get_job(session, job_id)


def decline_checkout(session: Session, intent: StripeIntent, source: str) -> bool:
    """Remember why a payment failed, for the customer; the job stays payable."""
    if not intent.job_id:
        return False
    job = get_job(session, intent.job_id, lock=True)
    code = intent.decline_code
    message = DECLINE_MESSAGES.get(
        code,
        f"The payment did not go through ({intent.decline_message or code}). "
        "Nothing was charged; you can try again.",
    )
    if not record_decline(session, job, code, message):
        return False
    log.info("payment declined", extra={"job_id": job.id, "decline_code": code, "source": source})
    return True


def expire_checkout(session: Session, checkout: StripeCheckout, source: str) -> bool:
    """An unpaid session ran out: the job is ``expired``. After payment it changes nothing."""
    if not checkout.job_id:
        return False
    job = get_job(session, checkout.job_id, lock=True)
    return expire(session, job, "checkout session expired", source, EXPIRED_MESSAGE)


def retry_job(session: Session, job_id: str, admin: str) -> Job:
    """Publish a failed job again (one more attempt); 409 unless it failed and is not refunded."""
    job = get_job(session, job_id, lock=True)
    if job.status not in RETRYABLE:
        raise ConflictError(f"only failed jobs can be retried; this one is {job.status}")
    queue_again(session, job, "retried by an admin", admin, RETRY_MESSAGE)
    return job
