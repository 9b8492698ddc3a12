"""What workers report, applied to jobs: progress, completion, failure.

    consume_job_events(broker, sessions, stop, up)  # a thread of the gateway, until ``stop``

``apply_job_event`` runs in one transaction with the job row locked, and
the status guard makes every event safe to repeat or reorder: a second
``completed`` changes nothing, a ``progress`` that arrives after
``completed`` is ignored, a ``failed`` for a job already refunding adds no
second refund. Emails are queued in the same transaction (once per kind).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.delivery.emails import queue_email
from gateway.money.refunds import fail_job
from gateway.store import lifecycle
from gateway.store.lifecycle import UnknownJobError, get_job
from shared.broker import Broker, Delivery
from shared.jobs import JobStatus
from shared.messages import EventKind, JobEvent, MessageError
from shared.topology import EVENTS_QUEUE

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.PENDING, JobStatus.PROCESSING)
EVENTS_PREFETCH = 20


def apply_job_event(session: Session, event: JobEvent) -> str:
    """Apply one worker event to its job (locked); returns what happened."""
    job = get_job(session, event.job_id, lock=True)
    source = f"worker:{event.worker or 'unknown'}"
    if job.status == JobStatus.DISPUTED and event.kind == EventKind.COMPLETED and event.result_key:
        # Kept for a won dispute, which then delivers it; nothing is sent meanwhile.
        job.result_key = event.result_key
        job.result_size, job.result_sha256 = event.result_size, event.result_sha256
        lifecycle.record_audit(session, job, "result stored while disputed", source)
        return "stored"
    if job.status not in ACTIVE:
        return "ignored"  # late, duplicated or from an attempt that was superseded
    if event.kind in (EventKind.STARTED, EventKind.PROGRESS):
        if lifecycle.start_processing(session, job, event.progress, event.attempt, source):
            queue_email(session, job, "processing")
        return "progress"
    if event.kind == EventKind.COMPLETED:
        assert event.result_key is not None  # the message's schema requires it
        lifecycle.complete(
            session, job, event.result_key, source, event.result_size, event.result_sha256
        )
        queue_email(session, job, "completed")
        return "completed"
    fail_job(session, job, str(event.error), source)
    return "failed"


def consume_job_events(
    broker: Broker,
    sessions: sessionmaker[Session],
    stop: threading.Event,
    up: threading.Event | None = None,
) -> None:
    """Apply ``smi.job-events`` until ``stop``, the consumer started again whenever it dies
    (``up`` clear meanwhile); any number of gateway processes may run one."""
    broker.keep_consuming(
        EVENTS_QUEUE,
        partial(apply_delivery, sessions),
        prefetch=EVENTS_PREFETCH,
        stop=stop,
        up=up,
    )


def apply_delivery(sessions: sessionmaker[Session], delivery: Delivery) -> None:
    """One event from the queue: applied and acknowledged, dead-lettered, or requeued."""
    try:
        event = JobEvent.from_json(delivery.body)
        with sessions.begin() as session:
            outcome = apply_job_event(session, event)
    except (MessageError, UnknownJobError) as exc:
        log.error("job event sent to the dead-letter queue: %s", exc)
        delivery.dead_letter(str(exc))
        return
    except SQLAlchemyError:
        log.exception("database error; the event goes back to the queue")
        time.sleep(1.0)  # do not spin while the database is away
        delivery.requeue()
        return
    log.info("job event %s: %s", event.kind, outcome, extra={"job_id": event.job_id})
    delivery.ack()
