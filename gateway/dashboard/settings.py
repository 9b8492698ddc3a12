"""The settings page: what the shop runs with, read-only, and never a secret.

    shown = read_settings(config)
    shown.mode, shown.offers, shown.mail, shown.live_gaps

Addresses are shown without their user name and password (a database,
broker or SMTP URL holds them); keys and tokens are shown only as set or
not set. ``live_gaps`` is what ``SMI_STRIPE_MODE=live`` would refuse in the
same settings (``GatewayConfig.live_gaps``), ``advice`` what live mode takes
but a shop should still have.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config import GatewayConfig
from gateway.money.pricing import Quote, quote_price

EXAMPLE_SIDE = 1000  # offers are priced for a 1000x1000 image


@dataclass(frozen=True)
class Offer:
    model: str
    price_per_megapixel: float  # the currency's smallest unit per output megapixel
    example: Quote
    cost_per_megapixel: float | None


@dataclass(frozen=True)
class ShownSettings:
    mode: str
    currency: str
    public_url: str
    offers: list[Offer]
    markup: float
    minimum_cents: int
    storefront_origins: tuple[str, ...]
    mail: str  # "smtp://host:port" or the folder emails are written to
    mail_is_smtp: bool
    mail_from: str
    support_email: str
    database: str
    broker: str
    storage: str
    seller_channels: tuple[str, ...]
    retention_days: float
    download_hours: float
    support_refund_limit: int
    session_hours: float
    idle_minutes: float
    live_gaps: tuple[str, ...]
    advice: tuple[str, ...]  # advice keys (catalogue ``dashboard.advice.KEY``)


def without_credentials(url: str) -> str:
    """``scheme://host:port/path`` of ``url``: no user, password or query."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    if parts.scheme.startswith("sqlite"):
        return f"{parts.scheme}://{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def read_settings(config: GatewayConfig) -> ShownSettings:
    pricing = config.pricing
    offers = [
        Offer(
            model,
            pricing.price_for(model),
            quote_price(EXAMPLE_SIDE, EXAMPLE_SIDE, pricing, model),
            pricing.cost_per_megapixel(model),
        )
        for model in pricing.models
    ]
    advice = []
    if not config.metrics_token:
        advice.append("metrics")
    if not (config.seller.email or config.seller.webhook_url):
        advice.append("notifications")
    if not config.storefront_origins:
        advice.append("origins")
    if config.database_url.startswith("sqlite"):
        advice.append("database")
    if not config.dashboard.support_refund_limit:
        advice.append("support_limit")
    smtp = config.mail.smtp_url
    return ShownSettings(
        mode=config.stripe.mode,
        currency=pricing.currency,
        public_url=config.public_url,
        offers=offers,
        markup=pricing.markup,
        minimum_cents=pricing.minimum_cents,
        storefront_origins=config.storefront_origins,
        mail=without_credentials(smtp) if smtp else str(config.mail.folder),
        mail_is_smtp=bool(smtp),
        mail_from=config.mail.sender,
        support_email=config.mail.support_email,
        database=without_credentials(config.database_url),
        broker=without_credentials(config.broker_url),
        storage=without_credentials(config.storage_url),
        seller_channels=tuple(
            name
            for name, on in (("email", config.seller.email), ("webhook", config.seller.webhook_url))
            if on
        ),
        retention_days=config.recovery.result_retention_days,
        download_hours=config.download_ttl_s / 3600,
        support_refund_limit=config.dashboard.support_refund_limit,
        session_hours=config.dashboard.session_hours,
        idle_minutes=config.dashboard.idle_minutes,
        live_gaps=config.live_gaps,
        advice=tuple(advice),
    )
