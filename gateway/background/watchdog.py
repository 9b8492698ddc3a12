"""The watchdog: paid jobs that nobody is working on are published again, then refunded.

    Watchdog(sessions, config.recovery).check()      # every SMI_WATCHDOG_INTERVAL_S

A job is stalled when it is ``pending`` (paid, queued) for longer than
``pending_timeout_s`` since its last change, or ``processing`` with no
worker event for ``heartbeat_timeout_s``. A stalled job is published again
(a new outbox message, attempt n+1) until it has been published
``max_job_attempts`` times; then it fails and is refunded. Workers are
idempotent by job id, so a job that was only slow costs a second look,
never a second charge.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import RecoveryConfig
from gateway.money.refunds import fail_job
from gateway.store.lifecycle import queue_again
from gateway.store.tables import Job, utcnow
from shared.jobs import JobStatus

log = logging.getLogger(__name__)


class Watchdog:
    """Finds stalled jobs and re-publishes or fails them."""

    def __init__(self, sessions: sessionmaker[Session], config: RecoveryConfig) -> None:
        self.sessions = sessions
        self.config = config

    def check(self) -> int:
        """One pass; returns how many stalled jobs it acted on."""
        now = utcnow()
        pending_before = now - timedelta(seconds=self.config.pending_timeout_s)
        heartbeat_before = now - timedelta(seconds=self.config.heartbeat_timeout_s)
        with self.sessions.begin() as session:
            stalled = list(
                session.scalars(
                    select(Job)
                    .where(
                        or_(
                            and_(Job.status == JobStatus.PENDING, Job.updated_at < pending_before),
                            and_(
                                Job.status == JobStatus.PROCESSING,
                                or_(
                                    Job.heartbeat_at < heartbeat_before,
                                    and_(
                                        Job.heartbeat_at.is_(None),
                                        Job.updated_at < heartbeat_before,
                                    ),
                                ),
                            ),
                        )
                    )
                    .order_by(Job.updated_at)
                    .limit(100)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in stalled:
                self._recover(session, job)
            return len(stalled)

    def _recover(self, session: Session, job: Job) -> None:
        context = {"job_id": job.id, "status": job.status, "attempts": job.attempts}
        if job.attempts >= self.config.max_job_attempts:
            log.error("job stalled after every attempt; failing it", extra=context)
            fail_job(
                session,
                job,
                f"not processed after {job.attempts} attempts (no worker finished it)",
                "watchdog",
            )
            return
        log.warning("job stalled; publishing it again", extra=context)
        reason = f"stalled in {job.status}; published again (attempt {job.attempts + 1})"
        queue_again(session, job, reason, "watchdog")
