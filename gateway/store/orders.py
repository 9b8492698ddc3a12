"""Finding orders: what the seller types into the dashboard's search, read as what it is.

    page = search_orders(session, OrderQuery(text="buyer@example.com", status="completed"))
    page.orders, page.older            # 50 jobs newest first, the cursor of the next 50
    deadlines = evidence_deadlines(session, ["job_..."])   # {dispute id: due_by}

The text is taken for what it looks like, so each kind is one indexed lookup
(fast with hundreds of thousands of jobs): an address (``@``: the buyer's,
whatever its case), a job id (``job_``), a Checkout Session (``cs_``), a
payment intent (``pi_``), a charge (``ch_``, ``py_``), a refund (``re_``),
a dispute (``dp_``) or a day (``2026-11-26``, UTC). Anything else matches
part of a job id, address or image address (a scan, still bounded by the
page). Pages are keyset-paged on (created_at, id): the next page costs what
the first one does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, literal, or_, select, tuple_
from sqlalchemy.orm import Session

from gateway.store.tables import (
    Dispute,
    Job,
    Payment,
    Refund,
    RefundStatus,
    WebhookEvent,
    as_utc,
)

PAGE_SIZE = 50
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_BY_PREFIX = {
    "job_": "job",
    "cs_": "session",
    "pi_": "payment",
    "ch_": "charge",
    "py_": "charge",
    "re_": "refund",
    "dp_": "dispute",
}


@dataclass(frozen=True)
class OrderQuery:
    """A search of the orders page; every part optional."""

    text: str = ""
    status: str | None = None
    model: str | None = None
    since: date | None = None  # created on or after this day (UTC)
    until: date | None = None  # created on or before this day
    older_than: str | None = None  # a page's ``older`` cursor
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class OrderPage:
    orders: list[Job]
    older: str | None  # the cursor of the next page, None on the last one
    matched_as: str  # what the text was taken for: email, job, session, ..., day, text, ""


def matched_as(text: str) -> str:
    """What ``text`` is searched as (see the module docstring)."""
    text = text.strip()
    if not text:
        return ""
    if _DAY.fullmatch(text):
        return "day"
    if "@" in text:
        return "email"
    for prefix, kind in _BY_PREFIX.items():
        if text.startswith(prefix):
            return kind
    return "text"


def search_orders(session: Session, query: OrderQuery) -> OrderPage:
    """One page of the jobs ``query`` finds, newest first."""
    text = query.text.strip()
    kind = matched_as(text)
    statement = _matching(select(Job), kind, text)
    if query.status:
        statement = statement.where(Job.status == query.status)
    if query.model:
        statement = statement.where(Job.model == query.model)
    if query.since:
        statement = statement.where(Job.created_at >= _midnight(query.since))
    if query.until:
        statement = statement.where(Job.created_at < _midnight(query.until + timedelta(days=1)))
    cursor = _parse_cursor(query.older_than)
    if cursor is not None:
        # A row comparison: PostgreSQL starts its index scan at the cursor (typed binds, so
        # SQLite compares the time as it stores it).
        moment, job_id = cursor
        statement = statement.where(
            tuple_(Job.created_at, Job.id)
            < tuple_(literal(moment, Job.created_at.type), literal(job_id, Job.id.type))
        )
    statement = statement.order_by(Job.created_at.desc(), Job.id.desc()).limit(query.limit + 1)
    found = list(session.scalars(statement))
    older = None
    if len(found) > query.limit:
        found = found[: query.limit]
        last = found[-1]
        moment = as_utc(last.created_at).astimezone(UTC).replace(tzinfo=None)
        older = f"{moment.isoformat()}~{last.id}"
    return OrderPage(found, older, kind)


def _matching(statement: Select[Any], kind: str, text: str) -> Select[Any]:
    if kind == "day":
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return statement.where(Job.id == text)  # not a real day: matches nothing
        return statement.where(
            Job.created_at >= _midnight(day), Job.created_at < _midnight(day + timedelta(days=1))
        )
    if kind == "email":
        return statement.where(func.lower(Job.customer_email) == text.lower())
    if kind == "job":
        return statement.where(Job.id == text)
    if kind == "session":
        return statement.where(Job.stripe_session_id == text)
    if kind == "payment":
        return statement.where(Job.stripe_payment_intent_id == text)
    if kind == "charge":
        return statement.where(
            Job.id.in_(select(Payment.job_id).where(Payment.stripe_charge_id == text))
        )
    if kind == "refund":
        return statement.where(
            Job.id.in_(select(Refund.job_id).where(Refund.stripe_refund_id == text))
        )
    if kind == "dispute":
        return statement.where(Job.id.in_(select(Dispute.job_id).where(Dispute.id == text)))
    if kind == "text":
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return statement.where(
            or_(
                Job.id.like(pattern, escape="\\"),
                Job.customer_email.ilike(pattern, escape="\\"),
                Job.image_url.like(pattern, escape="\\"),
            )
        )
    return statement


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _parse_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """``(created_at, id)`` of an ``older`` cursor; ``None`` for none or one that is not."""
    if not cursor or "~" not in cursor:
        return None
    moment, _, job_id = cursor.partition("~")
    try:
        return datetime.fromisoformat(moment).replace(tzinfo=UTC), job_id
    except ValueError:
        return None


def evidence_deadlines(session: Session, job_ids: list[str]) -> dict[str, datetime]:
    """When the evidence of each dispute of these jobs is due, by dispute id, from the
    dispute events Stripe sent (``evidence_details.due_by``); the latest event wins."""
    if not job_ids:
        return {}
    events = session.scalars(
        select(WebhookEvent)
        .where(WebhookEvent.job_id.in_(job_ids), WebhookEvent.type.like("charge.dispute.%"))
        .order_by(WebhookEvent.received_at)
    )
    deadlines: dict[str, datetime] = {}
    for event in events:
        try:
            dispute = json.loads(event.payload or "{}")["data"]["object"]
            due = (dispute.get("evidence_details") or {}).get("due_by")
            if due:
                deadlines[str(dispute["id"])] = datetime.fromtimestamp(int(due), UTC)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # an event without the details says nothing about the deadline
    return deadlines


def left_to_refund(session: Session, job: Job) -> tuple[int, str]:
    """What a refund of the whole job would send back now, and in which currency: its
    payment less the refunds that went through (a free order's price: nothing was paid)."""
    payment = None
    if job.stripe_payment_intent_id:
        payment = session.scalars(
            select(Payment).where(Payment.stripe_payment_intent_id == job.stripe_payment_intent_id)
        ).first()
    if payment is None:
        return (0 if job.paid_at is not None else job.amount_cents), job.currency
    back = session.scalar(
        select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(
            Refund.job_id == job.id, Refund.status == RefundStatus.SUCCEEDED
        )
    )
    return payment.amount_cents - int(back or 0), payment.currency
