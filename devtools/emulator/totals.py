"""What a Checkout Session comes to: promotion codes (coupons) and tax, as Stripe computes them.

    coupon = new_coupon({"percent_off": 25})
    code = new_promotion_code({"promotion": {"type": "coupon", "coupon": coupon["id"]},
                               "code": "LAUNCH25"}, coupons)
    totals(1000, "usd", coupon, tax_rate=0.20, tax_behavior="exclusive")
    # Totals(subtotal=1000, discount=250, tax=150, total=900)

Tax is Stripe Tax reduced to one rate per buyer country (``TAX_RATES``,
the standard VAT/consumption rates; 0 where there is no such tax).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from devtools.emulator.errors import StripeError

TAX_RATES = {
    "AT": 0.20, "BE": 0.21, "CH": 0.081, "DE": 0.19, "ES": 0.21, "FR": 0.20, "GB": 0.20,
    "IE": 0.23, "IT": 0.22, "JP": 0.10, "NL": 0.21, "SE": 0.25, "US": 0.0,
}  # fmt: skip


@dataclass(frozen=True)
class Totals:
    subtotal: int
    discount: int
    tax: int
    total: int


def totals(
    subtotal: int,
    currency: str,
    coupon: dict[str, Any] | None,
    tax_rate: float | None,
    tax_behavior: str,
) -> Totals:
    """The session's amounts: discount first, then tax on what is left."""
    discount = 0
    if coupon is not None:
        if coupon.get("percent_off"):
            discount = round(subtotal * float(coupon["percent_off"]) / 100)
        elif coupon.get("amount_off") and coupon.get("currency") == currency:
            discount = min(int(coupon["amount_off"]), subtotal)
    taxable = subtotal - discount
    tax = 0
    if tax_rate:
        if tax_behavior == "inclusive":
            tax = round(taxable * tax_rate / (1 + tax_rate))
        else:
            tax = round(taxable * tax_rate)
    total = taxable + (tax if tax_behavior != "inclusive" else 0)
    return Totals(subtotal, discount, tax, total)


def new_coupon(params: dict[str, Any]) -> dict[str, Any]:
    percent = params.get("percent_off")
    amount = params.get("amount_off")
    if (percent is None) == (amount is None):
        raise StripeError("A coupon needs exactly one of percent_off or amount_off.")
    if percent is not None and not 0 < float(percent) <= 100:
        raise StripeError("percent_off must be between 0 and 100.", param="percent_off")
    if amount is not None and not params.get("currency"):
        raise StripeError("amount_off needs a currency.", param="currency")
    return {
        "id": str(params.get("id") or secrets.token_hex(4)),
        "object": "coupon",
        "amount_off": int(amount) if amount is not None else None,
        "created": int(time.time()),
        "currency": str(params["currency"]).lower() if params.get("currency") else None,
        "duration": params.get("duration") or "once",
        "livemode": False,
        "metadata": dict(params.get("metadata") or {}),
        "name": params.get("name"),
        "percent_off": float(percent) if percent is not None else None,
        "valid": True,
    }


def new_promotion_code(params: dict[str, Any], coupons: dict[str, Any]) -> dict[str, Any]:
    """A customer-facing code for a coupon (both the old ``coupon`` parameter and the
    current ``promotion[coupon]``)."""
    promotion = params.get("promotion") or {}
    coupon_id = promotion.get("coupon") if isinstance(promotion, dict) else None
    coupon_id = coupon_id or params.get("coupon")
    if coupon_id not in coupons:
        raise StripeError(f"No such coupon: '{coupon_id}'", status=404, code="resource_missing")
    return {
        "id": "promo_" + secrets.token_hex(12),
        "object": "promotion_code",
        "active": True,
        "code": str(params.get("code") or secrets.token_hex(4)).upper(),
        "coupon": coupons[coupon_id],
        "created": int(time.time()),
        "livemode": False,
        "metadata": dict(params.get("metadata") or {}),
        "promotion": {"coupon": coupon_id, "type": "coupon"},
    }
