"""The job lifecycle: the only code that moves a job from one status to another.

    job = create_job(session, NewJob(...))            # awaiting_payment
    mark_paid(session, job_id, lock_for_payment(...)) # -> pending, in plain SQL
    start_processing(session, job, ...)               # -> processing
    complete(session, job, result_key, source)        # -> completed
    fail(session, job, reason, source)                # -> failed
    start_refunding, refunded, refund_failed          # -> refunding -> refunded | refund_failed
    refunded_at_stripe(session, job, source)          # any paid status -> refunded
    queue_again(session, job, reason, source)         # -> pending, published again
    expire(session, job, reason, source, message)     # -> expired

Each runs inside the caller's transaction with the job row locked
(PostgreSQL ``FOR UPDATE``; SQLite takes the write lock at ``BEGIN
IMMEDIATE``), checks the move against ``shared.jobs`` (an illegal one is
logged and raises ``IllegalTransitionError``), sets what the customer is
told and writes an audit row. Effects that must happen once are guarded by
unique keys in the same transaction (``claim_event``, the outbox's (job,
kind, attempt)): a duplicate delivery changes nothing but its count.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from gateway.store import ledger
from gateway.store.database import insert_into
from gateway.store.tables import (
    AuditEntry,
    EventOutcome,
    Job,
    OutboxMessage,
    Source,
    WebhookEvent,
    utcnow,
)
from shared.jobs import IllegalTransitionError, JobStatus, check_transition
from shared.messages import UpscaleRequest
from shared.models import DEFAULT_MODEL
from shared.storage import result_key_for

log = logging.getLogger(__name__)

UPSCALE_KIND = "upscale"

# What the customer's page says in each status.
AWAITING_PAYMENT_MESSAGE = "Waiting for payment."
PAID_MESSAGE = "Payment received. Your image is queued for upscaling."
PROCESSING_MESSAGE = "Your image is being upscaled."
COMPLETED_MESSAGE = "Your upscaled image is ready to download."
EXPIRED_MESSAGE = "The checkout session expired before payment. Nothing was charged."
FAILED_MESSAGE = "We could not upscale your image. You will be refunded automatically."
REFUNDING_MESSAGE = "We could not upscale your image. Your payment is being refunded."
REFUNDED_MESSAGE = "We could not upscale your image, so your payment has been refunded in full."
REFUNDED_BY_HAND_MESSAGE = "Your payment has been refunded in full."
DISPUTED_MESSAGE = (
    "Your bank has disputed this payment, so the download is paused until the dispute is settled."
)
REFUND_FAILED_MESSAGE = (
    "We could not upscale your image and the automatic refund did not go through. "
    "It needs a person now: please write to our support (the address is in your "
    "payment email) and we will refund you."
)
# A refund that was not for a failed upscale (a delivered image refunded by hand) and did
# not go through says only what is true of it.
REFUND_FAILED_BY_HAND_MESSAGE = (
    "The refund of your payment did not go through. It needs a person now: please write "
    "to our support (the address is in your payment email) and we will refund you another way."
)
RETRY_MESSAGE = "We are trying your image again."
# The key of each message in the customer catalogues (gateway/static/i18n/): the page
# shows the buyer's language; the English text stays for admins and old pages.
MESSAGE_KEYS = {
    AWAITING_PAYMENT_MESSAGE: "message.awaiting_payment",
    PAID_MESSAGE: "message.paid",
    PROCESSING_MESSAGE: "message.processing",
    COMPLETED_MESSAGE: "message.completed",
    EXPIRED_MESSAGE: "message.expired",
    FAILED_MESSAGE: "message.failed",
    REFUNDING_MESSAGE: "message.refunding",
    REFUNDED_MESSAGE: "message.refunded",
    REFUNDED_BY_HAND_MESSAGE: "message.refunded_by_hand",
    REFUND_FAILED_MESSAGE: "message.refund_failed",
    REFUND_FAILED_BY_HAND_MESSAGE: "message.refund_failed_by_hand",
    RETRY_MESSAGE: "message.retry",
    DISPUTED_MESSAGE: "message.disputed",
}


class UnknownJobError(LookupError):
    """Raised when a job id matches no job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


def new_job_id() -> str:
    """An unguessable job id (128 random bits)."""
    return "job_" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class NewJob:
    """What checkout knows when it creates a job."""

    image_url: str
    source_key: str
    width: int
    height: int
    amount_cents: int
    currency: str
    return_url: str | None = None
    language: str = "en"
    model: str = DEFAULT_MODEL
    buyer_key_hash: str | None = None


def hold_source(session: Session, key: str) -> None:
    """Lock the stored source ``key`` for this transaction (its row made if need be): a
    checkout that will use it and a retention pass that may delete it take turns."""
    values = {"key": key, "used_at": utcnow()}
    session.execute(insert_into(session, Source).values(values).on_conflict_do_nothing())
    session.execute(update(Source).where(Source.key == key).values(used_at=utcnow()))


def forget_customer(job: Job) -> None:
    """Erase what the job says of its customer (``retention.erase_customer``): address and
    pages. The amounts, ids and dates stay: they are the financial record."""
    job.customer_email = None
    job.image_url = ""
    job.return_url = None
    job.checkout_url = None


def customer_forgotten(session: Session, job_id: str) -> bool:
    """Whether ``forget_customer`` erased this job's customer (no job is sold without an
    image address otherwise), read without loading the job."""
    found = session.execute(_ERASED_OR_NOT, {"job_id": job_id}).one_or_none()
    return found is not None and found.image_url == "" and found.customer_email is None


# In a Stripe object, what is the buyer's own: their details, and every address of theirs.
_PERSONAL = frozenset(
    {"customer_details", "billing_details", "shipping", "shipping_details"}
    | {"email", "customer_email", "receipt_email"}
)


def impersonal(value: Any) -> Any:
    """Parsed JSON (a Stripe event) with the buyer's details and addresses erased."""
    if isinstance(value, list):
        return [impersonal(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: "[erased]" if key in _PERSONAL and item else impersonal(item)
        for key, item in value.items()
    }


def create_job(session: Session, new: NewJob, job_id: str | None = None) -> Job:
    """Insert a job awaiting payment, with its first audit row."""
    job = Job(
        id=job_id or new_job_id(),
        status=JobStatus.AWAITING_PAYMENT,
        image_url=new.image_url,
        return_url=new.return_url,
        source_key=new.source_key,
        width=new.width,
        height=new.height,
        amount_cents=new.amount_cents,
        currency=new.currency,
        language=new.language,
        model=new.model,
        buyer_key_hash=new.buyer_key_hash,
        customer_message=AWAITING_PAYMENT_MESSAGE,
        progress=0.0,
        attempts=0,
    )
    session.add(job)
    session.flush()  # the audit row's foreign key needs the job row first
    session.add(
        AuditEntry(
            job_id=job.id,
            from_status=None,
            to_status=job.status,
            reason="checkout created",
            source="checkout",
        )
    )
    return job


def record_checkout_session(session: Session, job_id: str, session_id: str, url: str) -> None:
    """The Checkout Session made for a new job: its id and the address the buyer pays at
    (one statement; the job's status does not move)."""
    session.execute(
        _SET_CHECKOUT, {"job_id": job_id, "stripe_session_id": session_id, "checkout_url": url}
    )


def get_job(session: Session, job_id: str, *, lock: bool = False) -> Job:
    """The job, locked for update when ``lock``; ``UnknownJobError`` if there is none."""
    query = select(Job).where(Job.id == job_id)
    if lock:
        query = query.with_for_update()
    job = session.scalars(query).first()
    if job is None:
        raise UnknownJobError(job_id)
    return job


# ---------------------------------------------------------------- payment


@dataclass(frozen=True)
class Paid:
    """A payment Stripe confirmed for a job."""

    session_id: str
    payment_intent_id: str | None
    customer_email: str | None
    amount_cents: int | None = None  # what Stripe took, tax included; None: the price
    tax_cents: int = 0
    discount_cents: int = 0


def lock_for_payment(session: Session, job_id: str) -> Any:
    """The job's status, price and keys, locked; ``UnknownJobError`` if there is none.

    Every webhook takes this path, so it reads a row, not an ORM object.
    """
    session.flush()  # a job made in this session must be in the table before we lock it
    row = session.execute(_LOCK_JOB, {"job_id": job_id}).first()
    if row is None:
        raise UnknownJobError(job_id)
    return row


def mark_paid(
    session: Session,
    job_id: str,
    locked: Any,
    paid: Paid,
    source: str,
    emails: list[tuple[str, str]],
) -> None:
    """``awaiting_payment -> pending`` with its payment, ``upscale`` message and ``emails``.

    Five plain SQL statements rather than the ORM's unit of work (which cost
    four times as much here); the move is still checked and audited. The
    first and only time (the job was awaiting payment, under lock), so the
    payment and outbox rows need no lookup; their unique keys stand behind them.
    """
    check_transition(JobStatus(locked.status), JobStatus.PENDING)
    now = utcnow()
    attempt = locked.attempts + 1
    session.execute(
        _MARK_PAID,
        {
            "job_id": job_id,
            "status": JobStatus.PENDING,
            "customer_message": PAID_MESSAGE,
            "stripe_session_id": paid.session_id,
            "stripe_payment_intent_id": paid.payment_intent_id,
            "paid_at": now,
            "updated_at": now,
            "decline_code": None,
            "customer_email": paid.customer_email,
            "attempts": attempt,
        },
    )
    session.execute(
        insert(_AUDIT),
        {
            "job_id": job_id,
            "from_status": locked.status,
            "to_status": JobStatus.PENDING,
            "reason": "payment received",
            "source": source,
            "at": now,
        },
    )
    if paid.payment_intent_id:
        ledger.record_payment(
            session,
            job_id,
            paid.payment_intent_id,
            paid.session_id,
            locked.amount_cents if paid.amount_cents is None else paid.amount_cents,
            locked.currency,
            paid.tax_cents,
            paid.discount_cents,
            now,
        )
    request = upscale_request(job_id, locked.source_key, locked.result_key, attempt, locked.model)
    session.execute(
        insert(_OUTBOX),
        [
            _outbox_row(job_id, UPSCALE_KIND, attempt, request.to_json(), now),
            *(_outbox_row(job_id, kind, 1, body, now) for kind, body in emails),
        ],
    )
    _forget_loaded(session, job_id)


def record_payment_to_return(
    session: Session, job: Job, paid: Paid, amount: int, currency: str, reason: str, source: str
) -> None:
    """A payment the job cannot be fulfilled with: kept on record, for a refund to follow."""
    job.stripe_session_id = paid.session_id
    job.stripe_payment_intent_id = paid.payment_intent_id
    job.customer_email = paid.customer_email or job.customer_email
    job.paid_at = utcnow()
    job.failure_reason = reason
    if paid.payment_intent_id:
        ledger.record_payment(
            session, job.id, paid.payment_intent_id, paid.session_id, amount, currency
        )
    record_audit(session, job, f"paid {amount} {currency}, to be returned: {reason}", source)


def record_decline(session: Session, job: Job, code: str, message: str) -> bool:
    """Remember why a payment failed; the job stays payable. ``False`` once it was paid."""
    if job.status != JobStatus.AWAITING_PAYMENT:
        return False  # a later success already won
    job.decline_code = code
    job.customer_message = message
    job.updated_at = utcnow()
    return True


# ---------------------------------------------------------------- the other moves


def expire(session: Session, job: Job, reason: str, source: str, message: str) -> bool:
    """``awaiting_payment -> expired``; ``False`` when the job is past that (paid, say)."""
    try:
        return _move(session, job, JobStatus.EXPIRED, reason, source, message)
    except IllegalTransitionError:
        return False


def start_processing(
    session: Session, job: Job, progress: float | None, attempt: int, source: str
) -> bool:
    """``pending -> processing``, or more progress; returns whether this is the start."""
    first = job.status == JobStatus.PENDING
    reason = f"worker started attempt {attempt}"
    _move(session, job, JobStatus.PROCESSING, reason, source, PROCESSING_MESSAGE)
    job.heartbeat_at = utcnow()
    if progress is not None:
        job.progress = progress if first else max(job.progress, progress)
    return first


def complete(
    session: Session,
    job: Job,
    result_key: str,
    source: str,
    size: int | None = None,
    sha256: str | None = None,
) -> None:
    """``-> completed`` with the stored result's key, and its size and sha256 when known."""
    _move(session, job, JobStatus.COMPLETED, "result stored", source, COMPLETED_MESSAGE)
    job.result_key = result_key
    job.result_size = size
    job.result_sha256 = sha256
    job.progress = 1.0
    job.finished_at = utcnow()


def fail(session: Session, job: Job, reason: str, source: str) -> bool:
    """``pending | processing -> failed``; ``False`` if the job was neither."""
    if job.status not in (JobStatus.PENDING, JobStatus.PROCESSING):
        return False
    _move(session, job, JobStatus.FAILED, reason, source, FAILED_MESSAGE)
    job.failure_reason = reason
    job.finished_at = utcnow()
    return True


def start_refunding(session: Session, job: Job, reason: str, source: str) -> None:
    """``-> refunding`` (from failed, completed or refund_failed)."""
    _move(
        session, job, JobStatus.REFUNDING, f"refund requested: {reason}", source, REFUNDING_MESSAGE
    )


def refunded(session: Session, job: Job, refund_id: str, source: str) -> bool:
    """``refunding -> refunded``; ``False`` if the job was not refunding."""
    if job.status != JobStatus.REFUNDING:
        return False
    message = REFUNDED_MESSAGE if job.failure_reason else REFUNDED_BY_HAND_MESSAGE
    _move(session, job, JobStatus.REFUNDED, f"refunded ({refund_id})", source, message)
    job.finished_at = utcnow()
    return True


def refunded_at_stripe(session: Session, job: Job, source: str) -> bool:
    """Any paid status ``-> refunded``: Stripe says the whole charge went back.

    ``False`` when the job is refunded already (the echo of our own refund).
    """
    if job.status == JobStatus.REFUNDED:
        return False
    message = REFUNDED_MESSAGE if job.failure_reason else REFUNDED_BY_HAND_MESSAGE
    _move(session, job, JobStatus.REFUNDED, "refunded at Stripe", source, message)
    job.finished_at = utcnow()
    return True


def refund_failed(session: Session, job: Job, error: str, source: str) -> bool:
    """``refunding -> refund_failed`` for an admin, or ``refunded -> refund_failed`` when
    Stripe says later that the refund did not go through; ``False`` from any other status."""
    if job.status not in (JobStatus.REFUNDING, JobStatus.REFUNDED):
        return False
    after_all = " after all" if job.status == JobStatus.REFUNDED else ""
    message = REFUND_FAILED_MESSAGE if job.failure_reason else REFUND_FAILED_BY_HAND_MESSAGE
    _move(
        session, job, JobStatus.REFUND_FAILED, f"refund failed{after_all}: {error}", source, message
    )
    return True


def disputed(session: Session, job: Job, reason: str, source: str) -> bool:
    """Any paid status but refunded ``-> disputed``; ``False`` if it cannot be (or is)."""
    try:
        return _move(session, job, JobStatus.DISPUTED, reason, source, DISPUTED_MESSAGE)
    except IllegalTransitionError:
        return False


def dispute_won(session: Session, job: Job, source: str) -> None:
    """``disputed -> completed``: the money stays with the seller, the download works again."""
    _move(session, job, JobStatus.COMPLETED, "dispute won", source, COMPLETED_MESSAGE)
    job.progress = 1.0
    job.finished_at = job.finished_at or utcnow()  # retention counts from here


def queue_again(
    session: Session, job: Job, reason: str, source: str, message: str | None = None
) -> UpscaleRequest:
    """Back to ``pending`` (or stay there) and publish the job's next attempt.

    For the watchdog (a stalled job) and an admin's retry (a failed one).
    """
    if job.status == JobStatus.PENDING:
        record_audit(session, job, reason, source)
        job.updated_at = utcnow()
    else:
        _move(session, job, JobStatus.PENDING, reason, source, message)
    job.failure_reason = None
    job.finished_at = None
    job.heartbeat_at = None
    job.attempts += 1
    request = upscale_request(job.id, job.source_key, job.result_key, job.attempts, job.model)
    add_outbox_message(session, job, UPSCALE_KIND, request.to_json(), attempt=job.attempts)
    return request


def upscale_request(
    job_id: str, source_key: str, result_key: str | None, attempt: int, model: str
) -> UpscaleRequest:
    """The message that asks a worker for one attempt at a job, with the model it was sold."""
    return UpscaleRequest(
        job_id=job_id,
        source_key=source_key,
        result_key=result_key or result_key_for(job_id),
        model=model,
        attempt=attempt,
    )


def _move(
    session: Session,
    job: Job,
    wanted: JobStatus,
    reason: str,
    source: str,
    customer_message: str | None,
) -> bool:
    """The guard: move ``job`` to ``wanted`` if allowed; returns whether anything changed.

    Staying in the same state is a no-op (``False``), except ``processing``,
    which may record progress again. An illegal move raises
    ``IllegalTransitionError`` after logging it with the job id.
    """
    current = JobStatus(job.status)
    if current == wanted and wanted != JobStatus.PROCESSING:
        return False
    try:
        check_transition(current, wanted)
    except IllegalTransitionError:
        log.warning(
            "refused transition",
            extra={"job_id": job.id, "from": current, "to": wanted, "source": source},
        )
        raise
    job.status = wanted
    job.updated_at = utcnow()
    if customer_message is not None:
        job.customer_message = customer_message
    if current != wanted:
        session.add(
            AuditEntry(
                job_id=job.id, from_status=current, to_status=wanted, reason=reason, source=source
            )
        )
    return True


def record_audit(session: Session, job: Job, reason: str, source: str) -> None:
    """An audit row for something that happened to a job without changing its status."""
    session.add(
        AuditEntry(
            job_id=job.id,
            from_status=job.status,
            to_status=job.status,
            reason=reason,
            source=source,
        )
    )


@dataclass(frozen=True)
class ClaimedEvent:
    """A Stripe event claimed in this transaction: its row as it stands."""

    event_id: str
    job_id: str | None
    outcome: str
    detail: str | None
    deliveries: int


def claim_event(
    session: Session, event: dict[str, Any], *, replay: bool = False, job_id: str | None = None
) -> ClaimedEvent | None:
    """Store a Stripe event as taking effect now; ``None`` if it already did.

    Call it first in the transaction that applies the event, then
    ``settle_event`` with what it did. ``None`` is a duplicate: its delivery
    is counted in this transaction, so commit it and apply nothing. An event
    stored with outcome ``error`` or ``unknown job`` (its effect rolled back)
    is claimed again, any event by a ``replay`` (which counts no delivery).
    One statement, an insert that counts a delivery instead where the id is
    taken: on PostgreSQL a concurrent claim of the same id waits for the
    first transaction, then counts, which is what makes five simultaneous
    deliveries take effect once. ``job_id``, the job the event names where
    that is known before it is applied, is stored with a new row.
    """
    now = utcnow()
    values = {
        "event_id": str(event["id"]),
        "type": str(event["type"]),
        "job_id": job_id,
        "payload": json.dumps(event),
        "outcome": EventOutcome.APPLIED,
        "now": now,
        "counted": 0 if replay else 1,
    }
    found = session.execute(_claim(session), values).one()
    claimed = ClaimedEvent(
        found.event_id, found.job_id, found.outcome, found.detail, found.deliveries
    )
    fresh = claimed.deliveries == 1  # a stored row had a delivery before this one
    if fresh or replay or claimed.outcome in (EventOutcome.ERROR, EventOutcome.UNKNOWN_JOB):
        return claimed
    return None


def settle_event(
    session: Session,
    claimed: ClaimedEvent,
    job_id: str | None,
    outcome: str,
    detail: str | None,
    payload: str | None = None,
) -> None:
    """Store what a claimed event did (``payload``: a new one to keep instead, if any);
    nothing is written when the claim already says so."""
    changed = (job_id, outcome, detail) != (claimed.job_id, claimed.outcome, claimed.detail)
    if not changed and payload is None:
        return
    values: dict[str, Any] = {"job_id": job_id, "outcome": outcome, "detail": detail}
    if payload is not None:
        values["payload"] = payload
    session.execute(update(_EVENTS).where(_EVENTS.c.event_id == claimed.event_id).values(values))


def _claim(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect not in _CLAIMS:
        new_row = insert_into(session, _EVENTS).values(
            event_id=bindparam("event_id"),
            type=bindparam("type"),
            job_id=bindparam("job_id"),
            payload=bindparam("payload"),
            outcome=bindparam("outcome"),
            deliveries=1,
            received_at=bindparam("now"),
            last_received_at=bindparam("now"),
        )
        _CLAIMS[dialect] = new_row.on_conflict_do_update(
            index_elements=[_EVENTS.c.event_id],
            set_={
                "deliveries": _EVENTS.c.deliveries + bindparam("counted"),
                "last_received_at": bindparam("now"),
            },
        ).returning(
            _EVENTS.c.event_id,
            _EVENTS.c.job_id,
            _EVENTS.c.outcome,
            _EVENTS.c.detail,
            _EVENTS.c.deliveries,
        )
    return _CLAIMS[dialect]


def add_outbox_message(session: Session, job: Job, kind: str, body: str, attempt: int = 1) -> None:
    """Queue a message for the relay in the caller's transaction.

    The outbox's unique key (job, kind, attempt) refuses a second copy: the
    transaction that tries fails with ``IntegrityError`` and changes nothing.
    """
    session.add(OutboxMessage(job_id=job.id, kind=kind, attempt=attempt, body=body))


def audit_trail(session: Session, job_id: str) -> list[AuditEntry]:
    """Every recorded status change of a job, oldest first."""
    return list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.job_id == job_id).order_by(AuditEntry.id)
        )
    )


# Built once: SQLAlchemy caches their compiled form.
_JOBS = cast(Table, Job.__table__)
_AUDIT = cast(Table, AuditEntry.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
_EVENTS = cast(Table, WebhookEvent.__table__)
_CLAIMS: dict[str, Any] = {}  # by dialect
_SET_CHECKOUT = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"))
    .values(
        stripe_session_id=bindparam("stripe_session_id"), checkout_url=bindparam("checkout_url")
    )
)
_ERASED_OR_NOT = select(_JOBS.c.image_url, _JOBS.c.customer_email).where(
    _JOBS.c.id == bindparam("job_id")
)
_LOCK_JOB = (
    select(
        _JOBS.c.status,
        _JOBS.c.stripe_session_id,
        _JOBS.c.amount_cents,
        _JOBS.c.currency,
        _JOBS.c.source_key,
        _JOBS.c.result_key,
        _JOBS.c.attempts,
        _JOBS.c.model,
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
