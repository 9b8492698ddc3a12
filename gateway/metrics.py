"""The gateway's Prometheus metrics, on ``GET /metrics``.

    WEBHOOK_EVENTS.labels(type="checkout.session.completed", outcome="applied").inc()
    body, content_type = render(services)            # what /metrics answers

Two kinds, each where it is true:

- **What happened in this process** (webhook outcomes and latency,
  checkouts started or refused): counters and histograms kept by
  prometheus-client. ``smi-gateway serve --workers N`` runs N processes
  behind one port, and a scrape lands on any of them, so they use the
  client's multiprocess mode: each process writes to files in
  ``PROMETHEUS_MULTIPROC_DIR`` (the serve command makes a fresh folder before
  the processes start) and whichever process is scraped adds them all up.
- **What the shop's records say** (payments and money in, refunds by status
  and money refunded, disputes, jobs by status, the outbox, email, refund and
  notification backlogs and their age, the oldest paid job still waiting):
  read from the database when scraped, by the scraped process. Payments and
  money in are counters from rows that are never deleted, so they only grow,
  and no process counts a payment twice or misses one whose transaction
  rolled back; refunds and disputes are gauges (their status moves).
- **The broker's queues** (messages waiting, consumers attached), asked of the
  broker when scraped; a broker that does not answer is ``smi_broker_up 0``.
- **Storage**: whether it answered this scrape (an object written, read back
  and deleted: ``smi_storage_up``), free bytes where new work writes, and the
  floor under which checkouts and previews are refused (``SMI_MIN_FREE_MB``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.delivery.emails import EMAIL_PREFIX
from gateway.store.tables import (
    Dispute,
    Job,
    Notification,
    OutboxMessage,
    Payment,
    Refund,
    RefundStatus,
    as_utc,
    utcnow,
)
from shared.broker import Broker, BrokerError
from shared.jobs import JobStatus
from shared.topology import ALL_QUEUES

log = logging.getLogger(__name__)

WEBHOOK_EVENTS = Counter(
    "smi_webhook_events",
    "Stripe events received, by type and outcome (applied, no change, duplicate, ignored, "
    "unknown job, error, refused: a bad signature or body)",
    ["type", "outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "smi_webhook_seconds",
    "Time to verify and apply one Stripe event",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHECKOUTS = Counter(
    "smi_checkouts",
    "Checkouts asked for, by outcome (created, or the error type that refused it)",
    ["outcome"],
)


def render(
    sessions: sessionmaker[Session],
    broker: Broker,
    free_bytes: Callable[[], int | None] = lambda: None,
    floor_bytes: int = 0,
    check_storage: Callable[[], None] | None = None,
) -> tuple[bytes, str]:
    """The exposition text for one scrape, and its content type."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (WEBHOOK_EVENTS, WEBHOOK_SECONDS, CHECKOUTS):
            registry.register(collector)
    registry.register(RecordsCollector(sessions))
    registry.register(QueuesCollector(broker))
    registry.register(RoomCollector(free_bytes, floor_bytes, check_storage))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class RoomCollector(Collector):
    """Free bytes where new work writes (none for an object store), and the floor."""

    def __init__(
        self,
        free_bytes: Callable[[], int | None],
        floor_bytes: int,
        check_storage: Callable[[], None] | None = None,
    ) -> None:
        self.free_bytes = free_bytes
        self.floor_bytes = floor_bytes
        self.check_storage = check_storage

    def collect(self) -> Iterable[Any]:
        if self.check_storage is not None:
            try:
                self.check_storage()
                up = 1
            except Exception as exc:  # any failure is "down"; why goes to the log
                log.warning("storage does not answer: %s: %s", type(exc).__name__, exc)
                up = 0
            yield GaugeMetricFamily(
                "smi_storage_up", "Whether storage answered this scrape", value=up
            )
        free = self.free_bytes()
        if free is None:
            return
        yield GaugeMetricFamily(
            "smi_disk_free_bytes", "Free bytes on the disks new work writes to", value=free
        )
        yield GaugeMetricFamily(
            "smi_disk_free_floor_bytes",
            "Under this, checkouts and previews are refused (SMI_MIN_FREE_MB)",
            value=self.floor_bytes,
        )


class RecordsCollector(Collector):
    """Metrics read from the database at scrape time (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterable[Any]:
        # Read whole before any is yielded: a database that fails halfway gives none of them.
        up, families = 1, []
        try:
            with self.sessions() as session:
                families = [*self._money(session), *self._work(session)]
        except SQLAlchemyError as exc:  # the scrape still answers: it says so
            log.warning("the database does not answer the scrape: %s", type(exc).__name__)
            up = 0
        yield GaugeMetricFamily("smi_database_up", "Whether the database answered", value=up)
        yield from families

    def _money(self, session: Session) -> Iterable[Any]:
        payments = CounterMetricFamily(
            "smi_payments", "Payments received, by currency", labels=["currency"]
        )
        paid = CounterMetricFamily(
            "smi_paid_minor_units",
            "Money received (tax included, after discounts), in the currency's smallest unit",
            labels=["currency"],
        )
        rows = session.execute(
            select(Payment.currency, func.count(), func.sum(Payment.amount_cents)).group_by(
                Payment.currency
            )
        )
        for currency, count, total in rows:
            payments.add_metric([currency], count)
            paid.add_metric([currency], total or 0)
        # Gauges: a refund's status moves (pending -> succeeded, or failed later), and
        # a refund that fails after succeeding takes its money out of the total again.
        refunds = GaugeMetricFamily(
            "smi_refunds", "Refund records, by status and origin (ours or Stripe)",
            labels=["status", "origin"],
        )  # fmt: skip
        origin = func.substr(Refund.idempotency_key, 1, 7)
        for status, prefix, count in session.execute(
            select(Refund.status, origin, func.count()).group_by(Refund.status, origin)
        ):
            refunds.add_metric([status, "stripe" if prefix == "stripe-" else "ours"], count)
        refunded = GaugeMetricFamily(
            "smi_refunded_minor_units",
            "Money refunded so far (succeeded refunds), in the currency's smallest unit",
            labels=["currency"],
        )
        for refund_currency, refund_total in session.execute(
            select(Refund.currency, func.sum(Refund.amount_cents))
            .where(Refund.status == RefundStatus.SUCCEEDED)
            .group_by(Refund.currency)
        ):
            refunded.add_metric([refund_currency or "?"], refund_total or 0)
        disputes = GaugeMetricFamily(
            "smi_disputes", "Disputes, by their status now", labels=["status"]
        )
        for status, count in session.execute(
            select(Dispute.status, func.count()).group_by(Dispute.status)
        ):
            disputes.add_metric([status], count)
        yield from (payments, paid, refunds, refunded, disputes)

    def _work(self, session: Session) -> Iterable[Any]:
        now = utcnow()
        jobs = GaugeMetricFamily("smi_jobs", "Jobs by status", labels=["status"])
        counted = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for status in JobStatus:
            jobs.add_metric([status], counted.get(status, 0))
        oldest_paid = session.scalar(
            select(func.min(Job.paid_at)).where(Job.status == JobStatus.PENDING)
        )
        waiting = GaugeMetricFamily(
            "smi_oldest_pending_job_seconds",
            "How long the oldest paid job not yet started has waited (0: none waits)",
        )
        waiting.add_metric([], _age(oldest_paid, now))
        backlog = GaugeMetricFamily(
            "smi_backlog", "Work waiting to be done, by kind", labels=["kind"]
        )
        age = GaugeMetricFamily(
            "smi_backlog_oldest_seconds", "Age of the oldest waiting item, by kind", labels=["kind"]
        )
        unsent = OutboxMessage.published_at.is_(None)
        for kind, where in (
            ("outbox", [unsent, OutboxMessage.kind.not_like(f"{EMAIL_PREFIX}%")]),
            ("email", [unsent, OutboxMessage.kind.like(f"{EMAIL_PREFIX}%")]),
        ):
            count, oldest = session.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(*where)
            ).one()
            backlog.add_metric([kind], count)
            age.add_metric([kind], _age(oldest, now))
        count, oldest = session.execute(
            select(func.count(), func.min(Refund.created_at)).where(
                Refund.status == RefundStatus.PENDING
            )
        ).one()
        backlog.add_metric(["refund"], count)
        age.add_metric(["refund"], _age(oldest, now))
        count, oldest = session.execute(
            select(func.count(), func.min(Notification.created_at)).where(
                Notification.sent_at.is_(None)
            )
        ).one()
        backlog.add_metric(["notification"], count)
        age.add_metric(["notification"], _age(oldest, now))
        yield from (jobs, waiting, backlog, age)


class QueuesCollector(Collector):
    """The broker's queues: messages waiting and consumers attached, asked at scrape time."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("smi_broker_up", "Whether the broker answered this scrape")
        messages = GaugeMetricFamily(
            "smi_queue_messages", "Messages waiting in a queue", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "smi_queue_consumers", "Consumers attached to a queue", labels=["queue"]
        )
        try:
            stats = self.broker.queue_stats([queue.name for queue in ALL_QUEUES])
        except BrokerError as exc:
            log.warning("broker did not answer the metrics scrape: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for name, (waiting, attached) in stats.items():
            messages.add_metric([name], waiting)
            consumers.add_metric([name], attached)
        yield from (up, messages, consumers)


def _age(moment: datetime | None, now: datetime) -> float:
    return max((now - as_utc(moment)).total_seconds(), 0.0) if moment else 0.0
