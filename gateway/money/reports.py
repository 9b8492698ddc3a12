"""The revenue and refund report: per day and currency, from our own records.

rows = revenue_by_day(session, since=date(2026, 11, 1))
text = as_csv(rows)
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.currencies import format_money
from gateway.store.tables import Dispute, Payment, Refund, RefundStatus


@dataclass
class DayTotals:
    day: str
    currency: str
    payments: int = 0
    gross_cents: int = 0
    refunds: int = 0
    refunded_cents: int = 0
    net_cents: int = 0
    tax_cents: int = 0  # collected for the tax authorities, inside gross
    discount_cents: int = 0  # promotion codes: taken off before gross
    disputed_cents: int = 0  # lost disputes: the bank took it back


def revenue_by_day(
    session: Session, since: date | None = None, until: date | None = None
) -> list[DayTotals]:
    """Payments (what Stripe took: after discounts, tax included), completed refunds and
    lost disputes per day (UTC) and currency, oldest first."""
    totals: dict[tuple[str, str], DayTotals] = {}

    def row(at: datetime, currency: str) -> DayTotals | None:
        day = at.date()
        if (since and day < since) or (until and day > until):
            return None
        key = (day.isoformat(), currency)
        if key not in totals:
            totals[key] = DayTotals(day=key[0], currency=currency)
        return totals[key]

    for payment in session.scalars(select(Payment)):
        if (day := row(payment.created_at, payment.currency)) is not None:
            day.payments += 1
            day.gross_cents += payment.amount_cents
            day.tax_cents += payment.tax_cents
            day.discount_cents += payment.discount_cents
    for refund in session.scalars(select(Refund).where(Refund.status == RefundStatus.SUCCEEDED)):
        if (day := row(refund.updated_at, refund.currency or "usd")) is not None:
            day.refunds += 1
            day.refunded_cents += refund.amount_cents or 0
    for dispute in session.scalars(select(Dispute).where(Dispute.status == "lost")):
        if (day := row(dispute.closed_at or dispute.created_at, dispute.currency)) is not None:
            day.disputed_cents += dispute.amount_cents
    for day in totals.values():
        day.net_cents = day.gross_cents - day.refunded_cents - day.disputed_cents
    return [totals[key] for key in sorted(totals)]


DISPLAYED = ("gross", "refunded", "net", "tax", "discount", "disputed")


def as_csv(rows: list[DayTotals]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*(f.name for f in fields(DayTotals)), *DISPLAYED])
    writer.writeheader()
    for item in rows:
        writer.writerow(_with_display(item))
    return out.getvalue()


def as_json(rows: list[DayTotals]) -> list[dict[str, object]]:
    return [_with_display(item) for item in rows]


def _with_display(item: DayTotals) -> dict[str, object]:
    """The row, its amounts (minor units: cents, yen, fils) also as people read them."""
    row: dict[str, object] = asdict(item)
    for name in DISPLAYED:
        row[name] = format_money(int(row[f"{name}_cents"]), item.currency)  # type: ignore[call-overload]
    return row
