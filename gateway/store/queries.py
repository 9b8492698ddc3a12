"""What an admin reads about jobs: search, one job in full, its records.

jobs = list_jobs(session, status="failed", query="buyer@example.com", limit=50)
details = job_details(session, job_id)       # job, audit trail, refunds, disputes, outbox, events
events = list_events(session, job_id=None, outcome="ignored", event_type=None, limit=50)
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.store.lifecycle import audit_trail, get_job
from gateway.store.tables import (
    Dispute,
    Job,
    Notification,
    OutboxMessage,
    Payment,
    Refund,
    WebhookEvent,
    as_utc,
)


def stamp(value: datetime | None) -> str | None:
    """A time as RFC 3339 (ISO 8601 with its offset: SQLite gives times back without their
    zone, which is UTC), or ``None``."""
    return as_utc(value).isoformat() if value else None


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
        "source_key": job.source_key,
        "customer_email": job.customer_email,
        "stripe_session_id": job.stripe_session_id,
        "stripe_payment_intent_id": job.stripe_payment_intent_id,
        "customer_message": job.customer_message,
        "decline_code": job.decline_code,
        "failure_reason": job.failure_reason,
        "progress": job.progress,
        "attempts": job.attempts,
        "result_size": job.result_size,
        "result_sha256": job.result_sha256,
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
    """The job, its payment, audit trail, refunds, disputes, outbox, events and notifications."""
    job = get_job(session, job_id)
    payment = session.scalars(select(Payment).where(Payment.job_id == job_id)).first()
    disputes = session.scalars(select(Dispute).where(Dispute.job_id == job_id))
    notifications = session.scalars(
        select(Notification).where(Notification.job_id == job_id).order_by(Notification.id)
    )
    refunds = session.scalars(select(Refund).where(Refund.job_id == job_id).order_by(Refund.id))
    outbox = session.scalars(
        select(OutboxMessage).where(OutboxMessage.job_id == job_id).order_by(OutboxMessage.id)
    )
    return {
        "job": job_record(job),
        "payment": None
        if payment is None
        else {
            "amount_cents": payment.amount_cents,
            "currency": payment.currency,
            "tax_cents": payment.tax_cents,
            "discount_cents": payment.discount_cents,
            "stripe_charge_id": payment.stripe_charge_id,
        },
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
        "disputes": [
            {
                "id": d.id,
                "status": d.status,
                "reason": d.reason,
                "amount_cents": d.amount_cents,
                "currency": d.currency,
                "created_at": stamp(d.created_at),
                "closed_at": stamp(d.closed_at),
            }
            for d in disputes
        ],
        "events": list_events(session, job_id=job_id, limit=200),
        "notifications": [
            {
                "key": n.key,
                "kind": n.kind,
                "sent_at": stamp(n.sent_at),
                "attempts": n.attempts,
                "last_error": n.last_error,
            }
            for n in notifications
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


def event_record(event: WebhookEvent, *, payload: bool = False) -> dict[str, Any]:
    """A received Stripe event: id, type, job, outcome and why; the payload when asked."""
    record: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "job_id": event.job_id,
        "outcome": event.outcome,
        "detail": event.detail,
        "deliveries": event.deliveries,
        "received_at": stamp(event.received_at),
        "last_received_at": stamp(event.last_received_at),
    }
    if payload:
        record["payload"] = json.loads(event.payload) if event.payload else None
    return record


def list_events(
    session: Session,
    job_id: str | None = None,
    outcome: str | None = None,
    event_type: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Received Stripe events, newest first, of one job, outcome or type when given."""
    statement = (
        select(WebhookEvent)
        .order_by(WebhookEvent.received_at.desc(), WebhookEvent.event_id)
        .limit(limit)
    )
    if job_id:
        statement = statement.where(WebhookEvent.job_id == job_id)
    if outcome:
        statement = statement.where(WebhookEvent.outcome == outcome)
    if event_type:
        statement = statement.where(WebhookEvent.type == event_type)
    return [event_record(event) for event in session.scalars(statement)]
