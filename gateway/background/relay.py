"""The outbox relay: publishes committed outbox messages to the broker, then marks them sent.

A paid job and its message are committed together (see ``fulfil_checkout``);
this relay is the only thing that publishes jobs on the gateway's side.
While the broker is down, messages wait in the table (each row says why in
``last_error``) and the relay keeps retrying with backoff: jobs are
delayed, never lost. A crash between publishing and marking sends a
message twice, which workers tolerate (they are idempotent by job id); it
can never send it zero times.

Runs as a thread of each gateway process, or of ``smi-gateway background``.
"""

from __future__ import annotations

import logging

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.background.loops import Periodic
from gateway.store.lifecycle import UPSCALE_KIND
from gateway.store.tables import OutboxMessage, utcnow
from shared.broker import Broker, BrokerError
from shared.failpoints import failpoint
from shared.topology import UPSCALE_QUEUE

log = logging.getLogger(__name__)


class OutboxRelay:
    """Moves ``upscale`` messages from the outbox table to the jobs exchange."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker: Broker,
        *,
        batch_size: int = 100,
        poll_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s

    def publish_pending(self) -> int:
        """Publish one batch; returns how many were published. ``BrokerError`` propagates."""
        with self.sessions.begin() as session:
            rows = list(
                session.scalars(
                    self._unpublished()
                    .order_by(OutboxMessage.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)  # several relays share the work
                )
            )
            for row in rows:
                row.publish_attempts += 1
                self.broker.publish(
                    UPSCALE_QUEUE,
                    row.body,
                    message_id=f"{row.job_id}:{row.kind}:{row.attempt}",
                    headers={"job_id": row.job_id},
                )
                failpoint("relay.published")
                row.published_at = utcnow()
                row.last_error = None
                log.info("published", extra={"job_id": row.job_id, "kind": row.kind})
            return len(rows)

    def periodic(self) -> Periodic:
        """The relay as a loop that backs off while the broker is away."""
        return Periodic(
            "outbox-relay",
            self.publish_pending,
            interval_s=self.poll_s,
            max_backoff_s=self.max_backoff_s,
            on_error=self._on_error,
        )

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, BrokerError):
            self._record_error(exc)

    def _record_error(self, exc: BrokerError) -> None:
        """Say on each waiting job message why it waits (the batch's own update rolled back)."""
        with self.sessions.begin() as session:
            for row in session.scalars(self._unpublished().limit(self.batch_size)):
                row.publish_attempts += 1
                row.last_error = str(exc)[:500]

    @staticmethod
    def _unpublished() -> Select[OutboxMessage]:
        return select(OutboxMessage).where(
            OutboxMessage.published_at.is_(None), OutboxMessage.kind == UPSCALE_KIND
        )
