"""Prices, computed on the server from an image's real dimensions.

    >>> quote = quote_price(2000, 2000, PricingConfig(2.0, 1.5, "usd"))
    >>> quote.amount_cents, quote.description
    (192, '2000x2000 → 8000x8000 pixels')

The browser never sends a price: it names an image, the gateway measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from gateway.config import PricingConfig
from gateway.currencies import round_to_currency
from gateway.store.tables import Job
from shared.models import DEFAULT_MODEL, scale_of


@dataclass(frozen=True)
class Quote:
    """What an upscale of one image with one model costs."""

    model: str
    scale: int
    width: int
    height: int
    output_width: int
    output_height: int
    amount_cents: int
    currency: str

    @property
    def description(self) -> str:
        """The Checkout line item's description, e.g. ``2000x2000 → 8000x8000 pixels``."""
        return f"{self.width}x{self.height} → {self.output_width}x{self.output_height} pixels"


def output_megapixels(width: int, height: int, model: str) -> Decimal:
    """Megapixels ``model`` makes of a ``width`` x ``height`` image: what is priced and costed."""
    scale = scale_of(model)
    return Decimal(width * scale * height * scale) / Decimal(1_000_000)


def quote_price(
    width: int, height: int, pricing: PricingConfig, model: str = DEFAULT_MODEL
) -> Quote:
    """Output megapixels x price per megapixel x markup, rounded up to an amount Stripe takes
    in the currency (a whole cent, yen, or ten fils). Never below the minimum charge;
    ``ValueError`` for an empty image.
    """
    if width < 1 or height < 1:
        raise ValueError(f"an image has a positive size, not {width}x{height}")
    scale = scale_of(model)
    amount = (
        output_megapixels(width, height, model)
        * Decimal(str(pricing.price_for(model)))
        * Decimal(str(pricing.markup))
    )
    currency = pricing.currency
    return Quote(
        model=model,
        scale=scale,
        width=width,
        height=height,
        output_width=width * scale,
        output_height=height * scale,
        amount_cents=round_to_currency(max(amount, Decimal(pricing.minimum_cents)), currency),
        currency=currency,
    )


def margin_of(job: Job, pricing: PricingConfig) -> dict[str, int]:
    """The GPU cost of a job's output and what is left of its price, where the cost is known."""
    per_megapixel = pricing.cost_per_megapixel(job.model)
    if per_megapixel is None:
        return {}
    megapixels = output_megapixels(job.width, job.height, job.model)
    cost = int((megapixels * Decimal(str(per_megapixel))).to_integral_value(rounding=ROUND_CEILING))
    return {"cost_cents": cost, "margin_cents": job.amount_cents - cost}
