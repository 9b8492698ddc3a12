"""Job records: creation, the one status-change guard, audit, outbox, event dedupe.

Every status change goes through ``change_status`` inside the caller's
transaction: it locks the job row (PostgreSQL ``FOR UPDATE``; SQLite takes
the write lock at ``BEGIN IMMEDIATE``), checks the transition against
``shared.jobs``, and writes an audit row. Effects that must happen once are
guarded by unique keys in the same transaction (``claim_event``,
``add_outbox_message``), so a duplicate delivery rolls back whole.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.store.tables import AuditEntry, Job, OutboxMessage, WebhookEvent, utcnow
from shared.jobs import IllegalTransitionError, JobStatus, check_transition

log = logging.getLogger(__name__)


class UnknownJobError(LookupError):
    """Raised when a job id matches no job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class DuplicateEventError(Exception):
    """Raised by ``claim_event`` when a Stripe event already took effect."""


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
        customer_message="Waiting for payment.",
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


def get_job(session: Session, job_id: str, *, lock: bool = False) -> Job:
    """The job, locked for update when ``lock``; ``UnknownJobError`` if there is none."""
    query = select(Job).where(Job.id == job_id)
    if lock:
        query = query.with_for_update()
    job = session.scalars(query).first()
    if job is None:
        raise UnknownJobError(job_id)
    return job


def change_status(
    session: Session,
    job: Job,
    wanted: JobStatus,
    *,
    reason: str,
    source: str,
    customer_message: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Move ``job`` to ``wanted`` if allowed; returns whether anything changed.

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
    job.updated_at = at or utcnow()
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


def claim_event(session: Session, event_id: str, event_type: str, job_id: str | None) -> None:
    """Record that a Stripe event takes effect now; ``DuplicateEventError`` if it already did.

    Call it first in the transaction that applies the event, and roll that
    transaction back on ``DuplicateEventError``. On PostgreSQL a concurrent
    claim of the same id waits for the first transaction and then fails
    here, which is what makes five simultaneous deliveries take effect once.
    """
    session.add(WebhookEvent(event_id=event_id, type=event_type, job_id=job_id))
    try:
        session.flush()
    except IntegrityError as exc:
        raise DuplicateEventError(event_id) from exc


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
