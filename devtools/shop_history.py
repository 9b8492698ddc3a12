"""A shop's past, written straight into its database: for the dashboard's benchmark and
screenshots, never for a real shop.

    made = write_history(engine, jobs=100_000, days=180)
    made.emails[0], made.job_ids[-1]                 # what a search can look for

Jobs are spread over ``days`` (more of them lately, as a shop that grows),
bought by a pool of customers (some addresses written in capitals), with
the rows the real path leaves: the job, its payment, its audit trail
(created, paid, processing by a named worker, completed), its emails, and
for some a refund (succeeded, or failed), a dispute with its Stripe event
(the evidence deadline), or no payment at all (expired). A few jobs are
still queued or processing. Rows go in by thousands per statement.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from gateway.store.tables import (
    AuditEntry,
    Dispute,
    Job,
    OutboxMessage,
    Payment,
    Refund,
    WebhookEvent,
    utcnow,
)

MODELS = (
    ("RealESRGAN_x4plus", 0.8),
    ("RealESRGAN_x4plus_anime_6B", 0.15),
    ("RealESRGAN_x2plus", 0.05),
)
WORKERS = ("gpu-a:11", "gpu-b:12", "gpu-c:13")
CHUNK = 5000


@dataclass
class History:
    job_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)


def write_history(
    engine: Engine,
    jobs: int,
    days: int = 180,
    currency: str = "usd",
    now: datetime | None = None,
    seed: int = 7,
    customers: int | None = None,
) -> History:
    """Write ``jobs`` past orders (see the module docstring); returns what was made."""
    rng = random.Random(seed)
    now = now or utcnow()
    pool = [f"buyer{n}@example.com" for n in range(customers or max(jobs // 3, 1))]
    made = History()
    rows: dict[Any, list[dict[str, Any]]] = {
        table: [] for table in (Job, Payment, AuditEntry, OutboxMessage, Refund, Dispute)
    }
    rows[WebhookEvent] = []

    def flush(final: bool = False) -> None:
        if not final and len(rows[Job]) < CHUNK:
            return
        with engine.begin() as connection:
            for table, pending in rows.items():
                if pending:
                    connection.execute(insert(table), pending)
                    pending.clear()

    for n in range(jobs):
        # Growth: the newest days get more orders than the oldest.
        age = days * (1 - rng.random() ** 0.6)
        created = now - timedelta(days=age, seconds=rng.randint(0, 600))
        job_id = f"job_h{n:07d}{rng.getrandbits(40):010x}"
        email = rng.choice(pool)
        if rng.random() < 0.05:
            email = email.upper()
        model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        side = rng.choice((320, 480, 640, 800, 1000, 1200))
        amount = max(50, side * side * 16 * 3 // 1_000_000)
        status, fate = _fate(rng, now - created)
        paid = created + timedelta(seconds=rng.randint(20, 180)) if fate != "unpaid" else None
        delay = rng.lognormvariate(3.6, 0.6)  # paid to delivered: about 40 s, a long tail
        finished = (
            paid + timedelta(seconds=delay) if paid and fate not in ("queued", "busy") else None
        )
        if finished and finished > now:
            finished, status, fate = None, "processing", "busy"
        session_id, intent = f"cs_h{n:07d}", f"pi_h{n:07d}"
        rows[Job].append(
            {
                "id": job_id,
                "status": status,
                "image_url": f"https://shop.example/photos/{n % 997}.jpg",
                "source_key": f"sources/{n % 997:064x}.jpg",
                "result_key": f"jobs/{job_id}/result.png" if finished else None,
                "width": side,
                "height": side * 3 // 4,
                "amount_cents": amount,
                "currency": currency,
                "language": rng.choice(("en", "en", "en", "fr", "de", "es", "ja")),
                "model": model,
                "stripe_session_id": session_id,
                "stripe_payment_intent_id": intent if paid else None,
                "customer_email": email if paid else None,
                "customer_message": "",
                "progress": 1.0 if finished else 0.0,
                "attempts": 1 if paid else 0,
                "created_at": created,
                "updated_at": finished or paid or created,
                "paid_at": paid,
                "finished_at": finished,
                "heartbeat_at": finished,
            }
        )
        made.job_ids.append(job_id)
        made.emails.append(email)
        made.sessions.append(session_id)
        trail: list[tuple[str | None, str, datetime, str, str]] = [
            (None, "awaiting_payment", created, "checkout created", "checkout")
        ]
        if paid:
            rows[Payment].append(
                {
                    "job_id": job_id,
                    "stripe_payment_intent_id": intent,
                    "stripe_session_id": session_id,
                    "amount_cents": amount,
                    "currency": currency,
                    "created_at": paid,
                    "stripe_charge_id": f"ch_h{n:07d}",
                    "tax_cents": 0,
                    "discount_cents": 0,
                }
            )
            trail.append(("awaiting_payment", "pending", paid, "paid", f"stripe:evt_h{n}"))
            _email(rows, job_id, "payment_confirmation", paid)
            worker = f"worker:{rng.choice(WORKERS)}"
            if fate != "queued":
                started = paid + timedelta(seconds=min(delay / 4, 30))
                trail.append(("pending", "processing", started, "started", worker))
            if finished:
                trail.append(("processing", "completed", finished, "completed", worker))
                _email(rows, job_id, "completed", finished)
            if fate in ("refunded", "refund_failed"):
                back = (finished or paid) + timedelta(hours=rng.uniform(1, 48))
                back = min(back, now)
                trail.append(("completed", "refunding", back, "customer asked", "admin"))
                trail.append(("refunding", status, back, "refund", "refunder"))
                rows[Refund].append(
                    {
                        "job_id": job_id,
                        "idempotency_key": f"refund-{job_id}-1",
                        "reason": "customer asked",
                        "status": "succeeded" if fate == "refunded" else "failed",
                        "stripe_refund_id": f"re_h{n:07d}" if fate == "refunded" else None,
                        "amount_cents": amount,
                        "currency": currency,
                        "attempts": 1 if fate == "refunded" else 6,
                        "last_error": None if fate == "refunded" else "card_declined",
                        "created_at": back,
                        "updated_at": back,
                    }
                )
                if fate == "refunded":
                    _email(rows, job_id, "refunded", back)
            if fate == "disputed":
                opened = min((finished or paid) + timedelta(days=rng.uniform(1, 10)), now)
                trail.append(("completed", "disputed", opened, "dispute opened", "stripe"))
                _dispute(rows, job_id, n, amount, currency, opened)
        for before, after, at, reason, source in trail:
            rows[AuditEntry].append(
                {
                    "job_id": job_id,
                    "from_status": before,
                    "to_status": after,
                    "reason": reason,
                    "source": source,
                    "at": at,
                }
            )
        flush()
    flush(final=True)
    return made


def _fate(rng: random.Random, age: timedelta) -> tuple[str, str]:
    """The job's status now and how it got there."""
    if age < timedelta(minutes=10):
        roll = rng.random()
        if roll < 0.3:
            return "pending", "queued"
        if roll < 0.6:
            return "processing", "busy"
    roll = rng.random()
    if roll < 0.06:
        return ("expired" if age > timedelta(hours=1) else "awaiting_payment"), "unpaid"
    if roll < 0.095:
        return "refunded", "refunded"
    if roll < 0.097:
        return "refund_failed", "refund_failed"
    if roll < 0.099:
        return "disputed", "disputed"
    return "completed", "completed"


def _email(rows: dict[Any, list[dict[str, Any]]], job_id: str, kind: str, at: datetime) -> None:
    rows[OutboxMessage].append(
        {
            "job_id": job_id,
            "kind": f"email:{kind}",
            "attempt": 1,
            "body": json.dumps({"job_id": job_id, "email": kind}),
            "created_at": at,
            "published_at": at + timedelta(seconds=2),
            "publish_attempts": 1,
        }
    )


def _dispute(
    rows: dict[Any, list[dict[str, Any]]],
    job_id: str,
    n: int,
    amount: int,
    currency: str,
    opened: datetime,
) -> None:
    dispute_id = f"dp_h{n:07d}"
    due = opened + timedelta(days=7)
    rows[Dispute].append(
        {
            "id": dispute_id,
            "job_id": job_id,
            "stripe_charge_id": f"ch_h{n:07d}",
            "amount_cents": amount,
            "currency": currency,
            "reason": "fraudulent",
            "status": "needs_response",
            "job_status_before": "completed",
            "created_at": opened,
        }
    )
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "currency": currency,
        "charge": f"ch_h{n:07d}",
        "reason": "fraudulent",
        "status": "needs_response",
        "evidence_details": {"due_by": int(due.timestamp()), "has_evidence": False},
    }
    event = {"id": f"evt_hd{n}", "type": "charge.dispute.created", "data": {"object": dispute}}
    rows[WebhookEvent].append(
        {
            "event_id": event["id"],
            "type": event["type"],
            "job_id": job_id,
            "received_at": opened,
            "payload": json.dumps(event),
            "outcome": "applied",
            "deliveries": 1,
            "last_received_at": opened,
        }
    )
