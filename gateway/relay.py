"""The outbox relay: publishes committed outbox messages to the broker, then marks them sent.

A paid job and its message are committed together (see ``fulfil_checkout``);
this relay is the only thing that talks to the broker on the gateway's
side. While the broker is down, messages wait in the table and the relay
keeps retrying with backoff: jobs are delayed, never lost. A crash between
publishing and marking sends a message twice, which workers tolerate
(they are idempotent by job id); it can never send it zero times.

Runs inside the gateway process (a thread) or standalone (``smi-gateway relay``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from kombu import Connection
from kombu.exceptions import OperationalError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.fulfilment import UPSCALE_KIND
from gateway.loops import Periodic
from gateway.tables import OutboxMessage, utcnow
from shared.topology import (
    JOBS_EXCHANGE,
    UPSCALE_QUEUE,
    UPSCALE_ROUTING_KEY,
    connect,
    publish_json,
)

log = logging.getLogger(__name__)

BROKER_ERRORS: tuple[type[BaseException], ...] = (OSError, OperationalError)


class OutboxRelay:
    """Moves ``upscale`` messages from the outbox table to the jobs exchange."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker_url: str,
        *,
        batch_size: int = 100,
        poll_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.broker_url = broker_url
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self._connection: Connection | None = None

    def publish_pending(self) -> int:
        """Publish one batch; returns how many were published. Broker errors propagate."""
        with self.sessions.begin() as session:
            rows = list(
                session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None), OutboxMessage.kind == UPSCALE_KIND)
                    .order_by(OutboxMessage.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)  # several relays share the work
                )
            )
            if not rows:
                return 0
            producer = self._producer()
            for row in rows:
                row.publish_attempts += 1
                publish_json(
                    producer,
                    row.body,
                    exchange=JOBS_EXCHANGE,
                    routing_key=UPSCALE_ROUTING_KEY,
                    queue=UPSCALE_QUEUE,
                    message_id=f"{row.job_id}:{row.kind}:{row.attempt}",
                    headers={"job_id": row.job_id},
                )
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

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set."""
        self.periodic().run(stop)
        self._forget_connection()

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; set the returned event to stop it."""
        return self.periodic().start()

    def _on_error(self, exc: Exception) -> None:
        self._forget_connection()
        if isinstance(exc, BROKER_ERRORS):
            self._record_error(exc)

    def _producer(self) -> Any:
        if self._connection is None:
            self._connection = connect(self.broker_url)
            self._connection.ensure_connection(max_retries=1)
        return self._connection.Producer()

    def _forget_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                self._connection.release()
            self._connection = None

    def _record_error(self, exc: BaseException) -> None:
        with self.sessions.begin() as session:
            for row in session.scalars(
                select(OutboxMessage).where(OutboxMessage.published_at.is_(None)).limit(100)
            ):
                row.last_error = str(exc)[:500]
