"""The overview: the last 30 days of the shop in figures, and what needs a person now.

    overview = read_overview(session, config)
    overview.periods["7d"].margin          # revenue - refunds - lost disputes - GPU cost
    overview.days[-1].p95_s                # today's 95th percentile, paid to delivered
    overview.attention.refunds_failed      # jobs a person must refund

Every figure is one grouped query over an indexed time column (payments,
succeeded refunds, disputes, finished jobs) in the shop's currency, by UTC
day as the revenue report counts them; today, 7 and 30 days are sums of the
same days. The GPU cost (``SMI_GPU_COST_PER_HOUR`` with ``SMI_BENCH_FILES``)
is that of each paid job's output, as the admin's job list prices it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, or_, select
from sqlalchemy.orm import Session

from gateway.config import GatewayConfig
from gateway.delivery.mailer import MAX_SEND_ATTEMPTS
from gateway.store.orders import evidence_deadlines
from gateway.store.tables import (
    Dispute,
    Job,
    Notification,
    OutboxMessage,
    Payment,
    ReconciliationCheck,
    Refund,
    RefundStatus,
    as_utc,
    utcnow,
)
from shared.jobs import JobStatus
from shared.models import MODELS, scale_of

DAYS = 30
PERIODS = {"today": 1, "7d": 7, "30d": 30}
CLOSED_DISPUTES = ("won", "lost", "warning_closed", "charge_refunded")
ATTENTION_ROWS = 20
REFUNDING_TOO_LONG = timedelta(hours=1)


@dataclass
class Totals:
    """Money and counts of one day or period, in the shop currency's smallest unit."""

    sales: int = 0
    revenue: int = 0  # what Stripe took (after discounts, tax included)
    refunds: int = 0
    refunded: int = 0
    disputes: int = 0  # opened
    disputed: int = 0  # lost: the bank took it back
    cost: int | None = None  # GPU cost of the jobs paid, where it is known
    jobs_done: int = 0

    @property
    def net(self) -> int:
        return self.revenue - self.refunded - self.disputed

    @property
    def margin(self) -> int | None:
        return None if self.cost is None else self.net - self.cost

    def add(self, other: Totals) -> None:
        for name in (
            "sales",
            "revenue",
            "refunds",
            "refunded",
            "disputes",
            "disputed",
            "jobs_done",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.cost is not None:
            self.cost = (self.cost or 0) + other.cost


_COUNTED = ("sales", "revenue", "refunds", "refunded", "disputes", "disputed", "jobs_done")


@dataclass
class Day:
    day: date
    totals: Totals = field(default_factory=Totals)
    p50_s: float | None = None  # paid to delivered, of the jobs completed that day
    p95_s: float | None = None


@dataclass
class Attention:
    """What a person must look at now; each item links to its order."""

    refunds_failed: list[Job] = field(default_factory=list)
    disputes: list[dict[str, Any]] = field(default_factory=list)  # open, deadline first
    stuck: list[tuple[Job, str]] = field(default_factory=list)  # the job, why it is stuck
    emails_given_up: list[OutboxMessage] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    reconciled_at: datetime | None = None  # the last check from the dashboard
    reconciled_by: str | None = None

    @property
    def count(self) -> int:
        return (
            len(self.refunds_failed)
            + len(self.disputes)
            + len(self.stuck)
            + len(self.emails_given_up)
            + len(self.mismatches)
        )


@dataclass
class Overview:
    currency: str
    days: list[Day]  # oldest first, today last
    periods: dict[str, Totals]
    attention: Attention
    costed: bool  # whether GPU cost (and so margin) is known


def read_overview(session: Session, config: GatewayConfig, now: datetime | None = None) -> Overview:
    """The figures and the attention list (see the module docstring)."""
    now = now or utcnow()
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=DAYS - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    currency = config.pricing.currency
    days = {first + timedelta(days=n): Day(first + timedelta(days=n)) for n in range(DAYS)}
    dialect = session.get_bind().dialect.name
    costed = any(config.pricing.cost_per_megapixel(m) is not None for m in config.pricing.models)

    def on(day: Any) -> Totals:
        return days[_as_date(day)].totals

    paid_on = _day(Payment.created_at, dialect)
    for day, count, total in session.execute(
        select(paid_on, func.count(), func.sum(Payment.amount_cents))
        .where(Payment.created_at >= since, Payment.currency == currency)
        .group_by(paid_on)
    ):
        on(day).sales, on(day).revenue = count, int(total or 0)
    refunded_on = _day(Refund.updated_at, dialect)
    for day, count, total in session.execute(
        select(refunded_on, func.count(), func.sum(Refund.amount_cents))
        .where(
            Refund.status == RefundStatus.SUCCEEDED,
            Refund.updated_at >= since,
            Refund.currency == currency,
        )
        .group_by(refunded_on)
    ):
        on(day).refunds, on(day).refunded = count, int(total or 0)
    for dispute in session.scalars(
        select(Dispute).where(
            or_(Dispute.created_at >= since, Dispute.closed_at >= since),
            Dispute.currency == currency,
        )
    ):
        opened = as_utc(dispute.created_at).date()
        if opened in days:
            days[opened].totals.disputes += 1
        closed = as_utc(dispute.closed_at or dispute.created_at).date()
        if dispute.status == "lost" and closed in days:
            days[closed].totals.disputed += dispute.amount_cents
    if costed:
        _add_costs(session, config, days, since, dialect)
    _add_job_times(session, days, since, dialect)

    ordered = [days[key] for key in sorted(days)]
    periods = {}
    for name, length in PERIODS.items():
        total = Totals(cost=0 if costed else None)
        for day in ordered[-length:]:
            total.add(day.totals)
        periods[name] = total
    return Overview(currency, ordered, periods, read_attention(session, config, now), costed)


def _add_costs(
    session: Session, config: GatewayConfig, days: dict[date, Day], since: datetime, dialect: str
) -> None:
    """The GPU cost of each day's paid jobs: their output megapixels at their model's cost
    (summed per day and model, then rounded up)."""
    for day in days.values():
        day.totals.cost = 0
    paid_on = _day(Job.paid_at, dialect)
    for day, model, pixels in session.execute(
        select(paid_on, Job.model, func.sum(Job.width * Job.height))
        .where(Job.paid_at >= since, Job.currency == config.pricing.currency)
        .group_by(paid_on, Job.model)
    ):
        per_megapixel = config.pricing.cost_per_megapixel(model)
        if per_megapixel is None or model not in MODELS:
            continue
        megapixels = Decimal(int(pixels or 0) * scale_of(model) ** 2) / Decimal(1_000_000)
        cost = (megapixels * Decimal(str(per_megapixel))).to_integral_value(ROUND_CEILING)
        totals = days[_as_date(day)].totals
        totals.cost = (totals.cost or 0) + int(cost)


def _add_job_times(session: Session, days: dict[date, Day], since: datetime, dialect: str) -> None:
    """p50 and p95 of paid-to-delivered per day of delivery, and how many were delivered."""
    done = (Job.status == JobStatus.COMPLETED, Job.finished_at >= since, Job.paid_at.is_not(None))
    if dialect == "postgresql":
        seconds = func.extract("epoch", Job.finished_at - Job.paid_at)
        finished_on = _day(Job.finished_at, dialect)
        for day, count, p50, p95 in session.execute(
            select(
                finished_on,
                func.count(),
                func.percentile_cont(0.5).within_group(seconds),
                func.percentile_cont(0.95).within_group(seconds),
            )
            .where(*done)
            .group_by(finished_on)
        ):
            target = days[_as_date(day)]
            target.totals.jobs_done, target.p50_s, target.p95_s = count, float(p50), float(p95)
        return
    by_day: dict[date, list[float]] = defaultdict(list)
    for finished, paid in session.execute(select(Job.finished_at, Job.paid_at).where(*done)):
        if finished is not None and paid is not None:
            delay = (as_utc(finished) - as_utc(paid)).total_seconds()
            by_day[as_utc(finished).date()].append(delay)
    for day, delays in by_day.items():
        if day in days:
            days[day].totals.jobs_done = len(delays)
            days[day].p50_s, days[day].p95_s = _percentile(delays, 0.5), _percentile(delays, 0.95)


def _percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between ranks, as PostgreSQL's ``percentile_cont``."""
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_attention(session: Session, config: GatewayConfig, now: datetime) -> Attention:
    """Failed refunds, open disputes with their deadline, stuck jobs, emails given up and
    reconciliation mismatches: each needs a person."""
    attention = Attention()
    attention.refunds_failed = list(
        session.scalars(
            select(Job)
            .where(Job.status == JobStatus.REFUND_FAILED)
            .order_by(Job.updated_at)
            .limit(ATTENTION_ROWS)
        )
    )
    open_disputes = list(
        session.scalars(
            select(Dispute)
            .where(Dispute.status.not_in(CLOSED_DISPUTES))
            .order_by(Dispute.created_at)
            .limit(ATTENTION_ROWS)
        )
    )
    deadlines = evidence_deadlines(session, [d.job_id for d in open_disputes])
    attention.disputes = sorted(
        ({"dispute": d, "due_by": deadlines.get(d.id), "job_id": d.job_id} for d in open_disputes),
        key=lambda item: item["due_by"] or datetime.max.replace(tzinfo=UTC),
    )
    recovery = config.recovery
    for status, since, why in (
        (JobStatus.PENDING, now - timedelta(seconds=recovery.pending_timeout_s), "pending"),
        (JobStatus.PROCESSING, now - timedelta(seconds=recovery.heartbeat_timeout_s), "silent"),
        (JobStatus.REFUNDING, now - REFUNDING_TOO_LONG, "refunding"),
    ):
        moment = Job.updated_at if status != JobStatus.PROCESSING else Job.heartbeat_at
        for job in session.scalars(
            select(Job)
            .where(Job.status == status, func.coalesce(moment, Job.updated_at) < since)
            .order_by(Job.updated_at)
            .limit(ATTENTION_ROWS)
        ):
            attention.stuck.append((job, why))
    attention.emails_given_up = list(
        session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.kind.like("email:%"),
                OutboxMessage.published_at.is_(None),
                OutboxMessage.publish_attempts >= MAX_SEND_ATTEMPTS,
                OutboxMessage.created_at >= now - timedelta(days=DAYS),
            )
            .order_by(OutboxMessage.id.desc())
            .limit(ATTENTION_ROWS)
        )
    )
    _add_mismatches(session, attention, now)
    return attention


def _add_mismatches(session: Session, attention: Attention, now: datetime) -> None:
    """The last check asked for from the dashboard, and those the background reconciler
    reported to the seller since (two passes in a row) that it did not list."""
    check = session.scalars(
        select(ReconciliationCheck).order_by(ReconciliationCheck.id.desc()).limit(1)
    ).first()
    seen: set[str] = set()
    after = now - timedelta(days=7)
    if check is not None:
        attention.reconciled_at, attention.reconciled_by = check.checked_at, check.checked_by
        for mismatch in json.loads(check.report).get("mismatches", []):
            attention.mismatches.append(mismatch)
            seen.add(f"{mismatch['kind']}:{mismatch['stripe_id'] or mismatch['job_id']}")
        after = max(after, as_utc(check.checked_at))
    notified = session.scalars(
        select(Notification)
        .where(Notification.kind == "reconciliation_mismatch", Notification.created_at >= after)
        .order_by(Notification.id.desc())
        .limit(ATTENTION_ROWS)
    )
    for row in notified:
        body = json.loads(row.body)
        key = f"{body.get('mismatch')}:{body.get('stripe_id') or body.get('job_id')}"
        if key in seen:
            continue  # both channels' copies, or one the last check already listed
        seen.add(key)
        attention.mismatches.append(
            {
                "kind": body.get("mismatch"),
                "stripe_id": body.get("stripe_id"),
                "job_id": body.get("job_id"),
                "amount_cents": body.get("amount_cents"),
                "detail": body.get("detail"),
            }
        )


def _day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC day of a stored time, as the database writes a date."""
    if dialect == "postgresql":
        return func.date(func.timezone(literal_column("'UTC'"), column))
    return func.date(column)  # SQLite keeps UTC times as text


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
