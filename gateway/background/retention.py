"""Retention: stored images are deleted once nobody may need them.

- the source of a checkout never paid, as soon as it has expired (an expired
  job is never upscaled: a payment that comes later is refunded);
- a completed job's result and source, ``SMI_RESULT_RETENTION_DAYS`` after it
  finished (the completion email says until when; its links then answer 410);
- a refunded job's source and any result, as long after its refund;
- free previews and the images they were made of, ``SMI_PREVIEW_KEEP_S`` after
  they were written.

The job row stays (its amounts, ids and dates are the financial record) and
says when each image went (``source_deleted_at``, ``result_deleted_at``).
The file goes first, then the mark: a crash in between deletes it again,
harmlessly. Runs in every gateway process; rows are claimed with ``SKIP LOCKED``.

``erase_customer`` is the same deletion on request (``smi-admin erase --email``),
with the customer's addresses removed as well: from the jobs, and from what
was kept about them (Stripe's events as received, the seller's notifications).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.delivery.emails import forget_link_requests
from gateway.store.lifecycle import forget_customer, hold_source, record_audit
from gateway.store.tables import Job, Notification, RateBucket, WebhookEvent, utcnow
from shared.jobs import JobStatus
from shared.storage import Storage

log = logging.getLogger(__name__)

BATCH = 100


class Retention:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        storage: Storage,
        retention_days: float,
        preview_keep_s: float = 3600.0,
    ) -> None:
        self.sessions = sessions
        self.storage = storage
        self.retention = timedelta(days=retention_days)
        self.preview_keep_s = preview_keep_s

    def sweep(self) -> int:
        """Delete what is due, one batch; returns how many jobs lost images."""
        cutoff = utcnow() - self.retention
        due = or_(
            Job.status == JobStatus.EXPIRED,
            (Job.status == JobStatus.COMPLETED) & (Job.finished_at < cutoff),
            (Job.status == JobStatus.REFUNDED) & (Job.updated_at < cutoff),
        )
        with self.sessions.begin() as session:
            jobs = list(
                session.scalars(
                    select(Job)
                    .where(due, Job.source_deleted_at.is_(None))
                    .order_by(Job.updated_at)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in jobs:
                self._delete(session, job)
        for key in self.storage.older_than("previews", self.preview_keep_s):
            self.storage.delete(key)
        with self.sessions.begin() as session:  # a refilled bucket is the same as none
            session.execute(delete(RateBucket).where(RateBucket.full_at < time.time()))
        return len(jobs)

    def _delete(self, session: Session, job: Job) -> None:
        deleted = delete_images(session, self.storage, job)
        record_audit(session, job, f"retention: {deleted} deleted", "retention")
        log.info("images deleted", extra={"job_id": job.id, "deleted": deleted})


def delete_images(session: Session, storage: Storage, job: Job) -> str:
    """Delete the job's stored source and result not deleted yet, mark when; says which went.

    A source is shared by every job that bought the same image: its file goes
    with the last job that needs it (the others keep it), under the source's
    lock, so a checkout sharing it meanwhile writes it again after us.
    """
    now, gone = utcnow(), []
    if job.source_deleted_at is None:
        hold_source(session, job.source_key)
        others = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.source_key == job.source_key,
                Job.id != job.id,
                Job.source_deleted_at.is_(None),
            )
        )
        if not others:
            storage.delete(job.source_key)
        job.source_deleted_at = now
        gone.append("source")
    if job.result_key and job.result_deleted_at is None:
        storage.delete(job.result_key)
        job.result_deleted_at = now
        gone.append("result")
    return " and ".join(gone) or "nothing"


ERASED = "[erased]"
# Beside an erased address, these fields are the same person's (Stripe's customer_details,
# billing_details, shipping): name, phone and postal address go with it.
PERSONAL = frozenset({"name", "phone", "address", "shipping", "shipping_details"})


def _erase_from_records(session: Session, address: str, jobs: list[Job]) -> None:
    """The address, and the name, phone and postal address beside it, out of the Stripe
    events stored as received and out of the seller's notifications about the erased jobs.

    An event is looked at when it is about one of the jobs, names one of their payments
    (a charge's event names no job), or holds the address as it is stored: as typed, or
    as JSON writes it (``\u00f6`` for ``ö``). Each is compared decoded, case aside.
    """
    job_ids = [job.id for job in jobs]
    named = {
        value
        for job in jobs
        for value in (job.stripe_payment_intent_id, job.stripe_session_id)
        if value
    }
    escaped = json.dumps(address)[1:-1]
    events = select(WebhookEvent).where(
        or_(
            WebhookEvent.job_id.in_(job_ids),
            func.lower(WebhookEvent.payload).contains(address),
            func.lower(WebhookEvent.payload).contains(escaped),
            *(WebhookEvent.payload.contains(value) for value in named),
        )
    )
    for event in session.scalars(events):
        event.payload = json.dumps(_scrubbed(json.loads(event.payload or "null"), address))
    notes = select(Notification).where(Notification.job_id.in_(job_ids))
    for note in session.scalars(notes):
        note.body = json.dumps(_scrubbed(json.loads(note.body), address))


def _scrubbed(value: Any, address: str) -> Any:
    """``value`` (parsed JSON) with every string holding ``address`` erased, and in each
    object that held one, its ``PERSONAL`` fields too."""
    if isinstance(value, str):
        return ERASED if address in value.lower() else value
    if isinstance(value, list):
        return [_scrubbed(item, address) for item in value]
    if not isinstance(value, dict):
        return value
    cleaned = {key: _scrubbed(item, address) for key, item in value.items()}
    if any(item == ERASED and value[key] != ERASED for key, item in cleaned.items()):
        for key in PERSONAL & cleaned.keys():
            if cleaned[key] is not None:
                cleaned[key] = ERASED
    return cleaned


FINAL = (JobStatus.COMPLETED, JobStatus.REFUNDED, JobStatus.EXPIRED)
KEPT = (
    "job ids, status and dates; amounts and currency; Stripe's session and payment ids; "
    "the audit trail and refund records"
)


@dataclass(frozen=True)
class Erasure:
    """What ``erase_customer`` did, for the admin to read and keep."""

    email: str
    erased: list[str]  # jobs whose images, email address and addresses are gone
    in_progress: list[str]  # jobs not yet finished: nothing erased; erase again after
    kept: str = KEPT


def erase_customer(session: Session, storage: Storage, email: str) -> Erasure:
    """Remove a customer's images, email address and page addresses from every finished job.

    What the financial record needs stays (``KEPT``). A job still being paid,
    processed or refunded is left alone and listed: erasing its image would
    break a delivery or a refund that is owed.
    """
    address = email.strip().lower()
    jobs = list(
        session.scalars(
            select(Job).where(func.lower(Job.customer_email) == address).with_for_update()
        )
    )
    erased, in_progress, gone = [], [], []
    for job in jobs:
        if job.status not in FINAL:
            in_progress.append(job.id)
            continue
        delete_images(session, storage, job)
        forget_customer(job)
        record_audit(
            session, job, "erased at the customer's request: images and addresses", "admin"
        )
        erased.append(job.id)
        gone.append(job)
    forget_link_requests(session, address)  # lost-link requests keep the address a while
    if gone:
        _erase_from_records(session, address, gone)
    log.info("customer erased", extra={"jobs": len(erased), "in_progress": len(in_progress)})
    return Erasure(email, erased, in_progress)
