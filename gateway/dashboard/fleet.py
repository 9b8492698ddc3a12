"""The fleet page: the queues, the workers and what they get done, as ``/metrics`` sees it.

    fleet = read_fleet(services)
    fleet.metric("smi_queue_messages", queue="smi.upscale")     # the same figure Prometheus has
    fleet.workers                                               # per worker: jobs done, last seen

The queue and backlog figures come from the very collectors ``/metrics``
answers with (``gateway.metrics``), read once per page; what each worker
got done comes from the audit trail, where every completion names its
worker (``worker:HOST:PID``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.registry import Collector
from sqlalchemy import select

from gateway.metrics import QueuesCollector, RecordsCollector
from gateway.services import Services
from gateway.store.tables import AuditEntry, Job, as_utc, utcnow
from shared.jobs import JobStatus


@dataclass
class Worker:
    name: str
    done_hour: int = 0
    done_day: int = 0
    last_done_at: datetime | None = None
    busy_now: int = 0  # jobs it started that are still processing


@dataclass
class Fleet:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    workers: list[Worker] = field(default_factory=list)

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the scrape by its name and labels, or ``None`` when it has none."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """Every sample of ``name`` by the value of ``label`` (a queue, a kind, a status)."""
        return {
            dict(labels)[label]: value
            for (sample, labels), value in self.samples.items()
            if sample == name and label in dict(labels)
        }


def read_samples(collectors: Iterable[Collector]) -> dict[Any, float]:
    """Every sample the collectors give, by name and sorted labels."""
    samples: dict[Any, float] = {}
    for collector in collectors:
        for family in collector.collect():
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def read_fleet(services: Services) -> Fleet:
    """What the page shows; blocking (a database read and a question to the broker)."""
    fleet = Fleet(
        read_samples([RecordsCollector(services.sessions), QueuesCollector(services.broker)])
    )
    now = utcnow()
    with services.sessions() as session:
        workers: dict[str, Worker] = {}
        for source, at in session.execute(
            select(AuditEntry.source, AuditEntry.at).where(
                AuditEntry.to_status == JobStatus.COMPLETED,
                AuditEntry.at >= now - timedelta(days=1),
                AuditEntry.source.like("worker:%"),
            )
        ):
            worker = workers.setdefault(source, Worker(source.removeprefix("worker:")))
            moment = as_utc(at)
            worker.done_day += 1
            worker.done_hour += moment >= now - timedelta(hours=1)
            worker.last_done_at = max(worker.last_done_at or moment, moment)
        # Who holds each job being processed: the worker that last moved it there.
        busy = select(Job.id).where(Job.status == JobStatus.PROCESSING).limit(1000)
        holder: dict[str, str] = {}
        for job_id, source in session.execute(
            select(AuditEntry.job_id, AuditEntry.source)
            .where(AuditEntry.job_id.in_(busy), AuditEntry.to_status == JobStatus.PROCESSING)
            .order_by(AuditEntry.id)
        ):
            holder[job_id] = source
        for source in holder.values():
            workers.setdefault(source, Worker(source.removeprefix("worker:"))).busy_now += 1
    fleet.workers = sorted(workers.values(), key=lambda w: (-w.done_day, w.name))
    return fleet
