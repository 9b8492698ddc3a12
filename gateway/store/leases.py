"""Claiming rows for work done outside a transaction (a Stripe call, an SMTP send).

    ids = claim_due(sessions, Refund, [Refund.status == RefundStatus.PENDING], lease_s=60)

A claimed row's ``next_attempt_at`` moves ``lease_s`` into the future and the
claim commits at once, so no database lock is held while the slow call runs
and other gateway processes skip the row. If the claimer dies, the lease
runs out and someone else takes the row; the work itself must therefore be
safe to repeat (refunds carry idempotency keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.tables import utcnow


def claim_due(
    sessions: sessionmaker[Session],
    model: Any,
    filters: Sequence[ColumnElement[bool]],
    *,
    lease_s: float,
    limit: int = 20,
) -> list[int]:
    """Ids of up to ``limit`` rows that match ``filters`` and are due, now leased to us."""
    now = utcnow()
    with sessions.begin() as session:
        rows = list(
            session.scalars(
                select(model)
                .where(*filters, or_(model.next_attempt_at.is_(None), model.next_attempt_at <= now))
                .order_by(model.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.next_attempt_at = now + timedelta(seconds=lease_s)
        return [row.id for row in rows]


def backoff_s(base_s: float, attempts: int, cap_s: float = 3600.0) -> float:
    """Exponential backoff: ``base_s``, twice that, four times ... at most ``cap_s``."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), cap_s))
