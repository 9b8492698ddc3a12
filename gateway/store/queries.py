"""What an admin reads about jobs: search, one job in full, its records.

jobs = list_jobs(session, status="failed", query="buyer@example.com", limit=50)
details = job_details(session, job_id)       # job, audit trail, refunds, outbox
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.store.lifecycle import audit_trail, get_job
from gateway.store.tables import Job, OutboxMessage, Refund


def stamp(value: datetime | None) -> str | None:
    """A time as ISO 8601, or ``None``."""
    return value.isoformat() if value else None


def job_record(job: Job) -> dict[str, Any]:
    """Everything an admin sees about a job."""
    return {
        "job_id": job.id,
        "status": job.status,
        "image_url": job.image_url,
        "width": job.width,
        "height": job.height,
        "amount_cents": job.amount_cents,
        "currency": job.currency,
        "model": job.model,
        "customer_email": job.customer_email,
        "stripe_session_id": job.stripe_session_id,
        "stripe_payment_intent_id": job.stripe_payment_intent_id,
        "customer_message": job.customer_message,
        "decline_code": job.decline_code,
        "failure_reason": job.failure_reason,
        "progress": job.progress,
        "attempts": job.attempts,
        "created_at": stamp(job.created_at),
        "paid_at": stamp(job.paid_at),
        "finished_at": stamp(job.finished_at),
        "updated_at": stamp(job.updated_at),
    }


def list_jobs(session: Session, status: str | None, query: str | None, limit: int) -> list[Job]:
    """Newest first; ``query`` matches part of an id, email, session, intent or image URL."""
    statement = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status:
        statement = statement.where(Job.status == status)
    if query:
        pattern = f"%{query}%"
        statement = statement.where(
            or_(
                Job.id.like(pattern),
                Job.customer_email.ilike(pattern),
                Job.stripe_session_id.like(pattern),
                Job.stripe_payment_intent_id.like(pattern),
                Job.image_url.like(pattern),
            )
        )
    return list(session.scalars(statement))


def job_details(session: Session, job_id: str) -> dict[str, Any]:
    """The job, its audit trail, refunds and outbox messages."""
    job = get_job(session, job_id)
    refunds = session.scalars(select(Refund).where(Refund.job_id == job_id).order_by(Refund.id))
    outbox = session.scalars(
        select(OutboxMessage).where(OutboxMessage.job_id == job_id).order_by(OutboxMessage.id)
    )
    return {
        "job": job_record(job),
        "audit": [
            {
                "at": stamp(entry.at),
                "from": entry.from_status,
                "to": entry.to_status,
                "reason": entry.reason,
                "source": entry.source,
            }
            for entry in audit_trail(session, job_id)
        ],
        "refunds": [
            {
                "idempotency_key": r.idempotency_key,
                "status": r.status,
                "stripe_refund_id": r.stripe_refund_id,
                "amount_cents": r.amount_cents,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "reason": r.reason,
            }
            for r in refunds
        ],
        "outbox": [
            {
                "kind": m.kind,
                "attempt": m.attempt,
                "published_at": stamp(m.published_at),
                "attempts": m.publish_attempts,
                "last_error": m.last_error,
            }
            for m in outbox
        ],
    }
