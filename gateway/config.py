"""The gateway's configuration: one frozen object built from ``SMI_*`` variables.

    >>> config = GatewayConfig.from_env({"SMI_STRIPE_TEST_SECRET_KEY": "sk_test_1",
    ...                                  "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_1"})
    >>> config.stripe.mode, config.stripe.secret_key
    ('test', 'sk_test_1')

``from_env`` checks everything at once and raises ``ConfigError`` listing
every problem, so a misconfigured deployment fails at start-up with the
whole list rather than one complaint per restart. ``stripe`` holds only the
keys for the selected mode (test or live).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from gateway.currencies import CurrencyError, check_currency, minimum_charge
from shared.broker import default_broker_url
from shared.env import ConfigError, EnvReader
from shared.models import DEFAULT_MODEL, MODELS
from shared.settings import SETTINGS
from shared.storage import default_storage_url

STRIPE_MINIMUM_CENTS = 50  # Stripe refuses smaller USD charges


@dataclass(frozen=True)
class StripeConfig:
    """The keys for the selected Stripe mode (the spec's ``get_stripe_config``)."""

    mode: Literal["test", "live"]
    secret_key: str
    webhook_secret: str
    api_base: str | None  # the emulator's address; None means Stripe itself


@dataclass(frozen=True)
class PricingConfig:
    """Output megapixels x price x markup, in the currency's smallest unit (Stripe's amounts:
    cents, yen, fils); never below ``minimum_cents`` of it."""

    price_per_megapixel_cents: float
    markup: float
    currency: str
    minimum_cents: int = STRIPE_MINIMUM_CENTS
    # The models buyers may choose, the first one the default; a price per megapixel
    # of a model's output may differ from ``price_per_megapixel_cents``.
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    model_prices: tuple[tuple[str, float], ...] = ()
    # What a GPU hour costs (smallest currency unit) and each model's measured GPU seconds
    # per output megapixel (from smi-bench --json): prices never fall below that cost.
    gpu_cost_per_hour: float | None = None
    seconds_per_megapixel: tuple[tuple[str, float], ...] = ()

    def cost_per_megapixel(self, model: str) -> float | None:
        """What one output megapixel of ``model`` costs us, if the cost is known."""
        seconds = dict(self.seconds_per_megapixel).get(model)
        if self.gpu_cost_per_hour is None or seconds is None:
            return None
        return seconds * self.gpu_cost_per_hour / 3600

    def price_for(self, model: str) -> float:
        """Price per output megapixel of ``model``, in the currency's smallest unit; never
        below its cost (the markup then applies to both)."""
        price = dict(self.model_prices).get(model, self.price_per_megapixel_cents)
        return max(price, self.cost_per_megapixel(model) or 0.0)


@dataclass(frozen=True)
class MailConfig:
    """Where customer emails go: an SMTP server, or ``.eml`` files in a folder."""

    smtp_url: str | None  # smtp://user:pass@host:port, smtps://..., ?starttls=true
    folder: Path
    sender: str
    support_email: str
    lease_s: float = 120.0  # an email claimed by a process that died is tried again after this


@dataclass(frozen=True)
class RecoveryConfig:
    """How long the gateway waits before it re-publishes, fails or refunds."""

    pending_timeout_s: float  # paid, not started
    heartbeat_timeout_s: float  # processing, no event
    watchdog_interval_s: float
    max_job_attempts: int  # publications of one job before it fails and is refunded
    refund_max_attempts: int
    refund_backoff_s: float
    refund_lease_s: float  # a claimed refund left by a process that died is retried after this
    stripe_catch_up_s: float  # how often Stripe's events are listed for ones never delivered
    result_retention_days: float = 30.0  # results (and paid sources) are deleted after this
    retention_interval_s: float = 300.0


@dataclass(frozen=True)
class PreviewConfig:
    """Free previews: how big, how often, how long they are kept, how long a page waits."""

    size: int = 128  # side of the input square, in pixels
    per_client_per_minute: float = 10.0
    burst: int = 5
    global_per_minute: float = 300.0
    keep_s: float = 3600.0  # previews and their sources are deleted after this
    wait_s: float = 30.0  # the page says "unavailable right now" after this
    squares_per_image: int = 6  # distinct squares of one image kept at once (disk bound)


@dataclass(frozen=True)
class CheckoutLimitsConfig:
    """How fast checkouts may start, per client address and for everyone together."""

    per_client_per_minute: float = 20.0
    burst: int = 5
    global_per_minute: float = 600.0


@dataclass(frozen=True)
class CheckoutOptions:
    """Stripe Checkout options a seller turns on; each is passed to every session when set."""

    allow_promotion_codes: bool = False  # SMI_ALLOW_PROMOTION_CODES
    automatic_tax: bool = False  # SMI_AUTOMATIC_TAX (Stripe Tax computes it)
    tax_behavior: Literal["exclusive", "inclusive"] = "exclusive"  # SMI_TAX_BEHAVIOR
    invoice_creation: bool = False  # SMI_INVOICE_CREATION: Stripe emails a receipt/invoice PDF
    collect_billing_address: bool = False  # SMI_COLLECT_BILLING_ADDRESS


@dataclass(frozen=True)
class SellerConfig:
    """Where the seller hears of sales, refunds, failed refunds, disputes and mismatches."""

    email: str | None = None  # SMI_SELLER_EMAIL
    webhook_url: str | None = None  # SMI_SELLER_WEBHOOK_URL, signed with webhook_secret
    webhook_secret: str | None = None  # SMI_SELLER_WEBHOOK_SECRET
    reconcile_interval_s: float = 3600.0  # how often Stripe and our records are compared
    max_attempts: int = 10  # a notification that still fails after these is given up (logged)
    backoff_s: float = 5.0


@dataclass(frozen=True)
class DashboardConfig:
    """The seller's dashboard: who may do what, how long a sign-in lasts, when it locks."""

    # The most a support account may refund at once, in the shop currency's smallest unit
    # (SMI_SUPPORT_REFUND_LIMIT); owners have no limit.
    support_refund_limit: int = 0
    session_hours: float = 12.0  # a session ends this long after sign-in, whatever happens
    idle_minutes: float = 30.0  # ... or after this long without a request
    max_failures: int = 5  # failed sign-ins of one account before it is locked
    max_failures_per_address: int = 20  # failed sign-ins from one client address
    lockout_minutes: float = 15.0  # the window failures are counted in, and the lock


# What the examples put where a secret goes; a live gateway refuses to start on one
# (every setting declared a secret in shared/settings.py).
PLACEHOLDER = re.compile(r"replace[-_]?me", re.IGNORECASE)


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs, validated."""

    stripe: StripeConfig
    pricing: PricingConfig
    database_url: str
    broker_url: str
    storage_url: str
    public_url: str
    source_hosts: tuple[str, ...]
    data_dir: Path
    checkout_expires_minutes: int
    max_source_bytes: int
    max_source_pixels: int
    fetch_timeout_s: float
    background_in_process: bool
    mail: MailConfig
    recovery: RecoveryConfig
    admin_token: str | None
    download_secret: str
    download_ttl_s: int
    # Secrets links were signed with before the last rotation: still accepted (their
    # links' lifetime at most), never used to sign (SMI_DOWNLOAD_SECRET_PREVIOUS).
    download_previous_secrets: tuple[str, ...] = ()
    # Where storage can presign (S3): ``presigned`` answers a download with a redirect to a
    # short-lived address at the store itself, ``stream`` sends the bytes through the
    # gateway (SMI_DOWNLOAD_REDIRECT); the address's lifetime (SMI_DOWNLOAD_PRESIGNED_TTL_S).
    download_redirect: str = "presigned"
    download_presigned_ttl_s: int = 300
    storefront_origins: tuple[str, ...] = ()
    # No new checkout or preview while the disk holds less (SMI_MIN_FREE_MB).
    min_free_bytes: int = 500 * 2**20
    # Proxies whose X-Forwarded-For is believed (SMI_TRUSTED_PROXIES); none by default.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    # Bearer token of GET /metrics (SMI_METRICS_TOKEN); unset: /metrics is closed.
    metrics_token: str | None = None
    checkout_limits: CheckoutLimitsConfig = CheckoutLimitsConfig()
    previews: PreviewConfig = PreviewConfig()
    checkout_options: CheckoutOptions = CheckoutOptions()
    seller: SellerConfig = SellerConfig()
    dashboard: DashboardConfig = DashboardConfig()
    # In test mode: what SMI_STRIPE_MODE=live would refuse in these settings (the dashboard's
    # settings page lists it); empty in live mode, which starts only without any.
    live_gaps: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GatewayConfig:
        """Build and validate the configuration; ``ConfigError`` lists every problem."""
        env = EnvReader(environ)
        data_dir = Path(env.text("DATA_DIR"))
        mode = env.text("STRIPE_MODE")
        if mode not in ("test", "live"):
            env.problem(f"SMI_STRIPE_MODE must be test or live, not {mode!r}")
            mode = "test"
        prefix = f"STRIPE_{mode.upper()}"
        secret_key = env.text(f"{prefix}_SECRET_KEY")
        webhook_secret = env.text(f"{prefix}_WEBHOOK_SECRET")
        api_base = env.text("STRIPE_API_BASE") or None
        public_url = env.text("PUBLIC_URL").rstrip("/")

        key_prefixes = (f"sk_{mode}_", f"rk_{mode}_")
        if not secret_key:
            env.problem(f"SMI_{prefix}_SECRET_KEY is required in {mode} mode")
        elif not secret_key.startswith(key_prefixes):
            env.problem(
                f"SMI_{prefix}_SECRET_KEY must start with {' or '.join(key_prefixes)} "
                f"in {mode} mode"
            )
        if not webhook_secret:
            env.problem(f"SMI_{prefix}_WEBHOOK_SECRET is required and may not be empty")
        if mode == "live":
            if api_base:
                env.problem("SMI_STRIPE_API_BASE (an emulator) is refused in live mode")
            if not public_url.startswith("https://"):
                env.problem("SMI_PUBLIC_URL must be https:// in live mode")
        if api_base and not _is_http_url(api_base):
            env.problem(f"SMI_STRIPE_API_BASE must be an http(s) URL, not {api_base!r}")
        if not _is_http_url(public_url):
            env.problem(f"SMI_PUBLIC_URL must be an http(s) URL, not {public_url!r}")

        source_hosts = tuple(host.lower() for host in env.items("SOURCE_HOSTS"))
        for host in source_hosts:
            if "/" in host or "@" in host:
                env.problem(f"SMI_SOURCE_HOSTS holds 'host' or 'host:port' entries, not {host!r}")

        smtp_url = env.text("SMTP_URL")
        if smtp_url and urlsplit(smtp_url).scheme not in ("smtp", "smtps"):
            env.problem(f"SMI_SMTP_URL must be smtp:// or smtps://, not {smtp_url!r}")
        if mode == "live" and not smtp_url:
            env.problem(
                "SMI_SMTP_URL is required in live mode: without it emails are only written "
                "as files (SMI_MAIL_DIR) and no customer receives one"
            )
        if mode == "live" and not env.text("DOWNLOAD_SECRET"):
            env.problem(
                "SMI_DOWNLOAD_SECRET is required in live mode: download links signed with a "
                "secret of their own outlive a rotated Stripe key"
            )
        if mode == "live":
            # The examples' secrets (deploy/env.example, the example Secret) are public:
            # a live shop started on one would sign links anyone can forge.
            for setting in SETTINGS.values():
                if setting.secret and PLACEHOLDER.search(env.text(setting.name)):
                    env.problem(
                        f"{setting.variable} still holds the example's placeholder: set your own"
                    )
        admin_token = env.text("ADMIN_TOKEN")
        if admin_token and len(admin_token) < 16:
            env.problem("SMI_ADMIN_TOKEN must be at least 16 characters")
        metrics_token = env.text("METRICS_TOKEN")
        if metrics_token and len(metrics_token) < 16:
            env.problem("SMI_METRICS_TOKEN must be at least 16 characters")
        # Download links are signed with their own secret; without one, a key
        # derived from the Stripe secret (never the secret itself) signs them.
        download_secret = (
            env.text("DOWNLOAD_SECRET")
            or hmac.new(secret_key.encode(), b"smi-download-links", hashlib.sha256).hexdigest()
        )
        download_redirect = env.text("DOWNLOAD_REDIRECT").lower()
        if download_redirect not in ("presigned", "stream"):
            env.problem(
                f"SMI_DOWNLOAD_REDIRECT must be presigned or stream, not {download_redirect!r}"
            )
            download_redirect = "presigned"

        storefront_origins = tuple(origin.rstrip("/") for origin in env.items("STOREFRONT_ORIGINS"))
        for origin in storefront_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                env.problem(
                    f"SMI_STOREFRONT_ORIGINS takes origins (https://shop.example), not {origin!r}"
                )

        trusted_proxies: list[IPv4Network | IPv6Network] = []
        for entry in env.items("TRUSTED_PROXIES"):
            try:
                trusted_proxies.append(ip_network(entry, strict=False))
            except ValueError:
                env.problem(
                    "SMI_TRUSTED_PROXIES takes addresses or networks (10.0.0.0/8, ::1), "
                    f"not {entry!r}"
                )

        currency = env.text("CURRENCY").lower()
        known = True
        try:
            check_currency(currency)
        except CurrencyError as exc:
            env.problem(f"SMI_CURRENCY: {exc}")
            known = False
        # Stripe's minimum for the currency; where it converts instead, the operator says.
        minimum = minimum_charge(currency)
        given = env.optional_integer("MINIMUM_CHARGE")
        if given is not None:
            minimum = given
        elif env.text("MINIMUM_CHARGE"):
            pass  # unreadable: a problem already
        elif minimum is None and known:
            env.problem(
                f"SMI_MINIMUM_CHARGE: Stripe has no fixed minimum charge in {currency.upper()}; "
                "set the smallest amount to charge, in its minor units"
            )
        offered = env.items("OFFER_MODELS")
        for name in offered:
            if name not in MODELS:
                env.problem(
                    f"SMI_OFFER_MODELS: unknown model {name!r} (known: {', '.join(MODELS)})"
                )
        model_prices: list[tuple[str, float]] = []
        for entry in env.items("MODEL_PRICES"):
            name, _, value = entry.partition("=")
            try:
                price = float(value)
            except ValueError:
                price = -1.0
            if name.strip() not in offered or price < 0:
                env.problem(
                    "SMI_MODEL_PRICES takes MODEL=PRICE_PER_MEGAPIXEL pairs of offered models, "
                    f"not {entry!r}"
                )
                continue
            model_prices.append((name.strip(), price))
        gpu_cost = env.optional_number("GPU_COST_PER_HOUR")
        measured = _bench_figures(env, env.items("BENCH_FILES"))
        if gpu_cost is not None:
            for name in offered:
                if name not in dict(measured):
                    env.problem(
                        f"SMI_GPU_COST_PER_HOUR needs a smi-bench --json figure for {name} "
                        "(SMI_BENCH_FILES)"
                    )
        pricing = PricingConfig(
            price_per_megapixel_cents=env.number("PRICE_PER_MEGAPIXEL_CENTS"),
            markup=env.number("MARKUP"),
            currency=currency,
            minimum_cents=minimum or STRIPE_MINIMUM_CENTS,
            models=offered or (DEFAULT_MODEL,),
            model_prices=tuple(model_prices),
            gpu_cost_per_hour=gpu_cost,
            seconds_per_megapixel=measured,
        )

        tax_behavior = env.text("TAX_BEHAVIOR").lower()
        if tax_behavior not in ("exclusive", "inclusive"):
            env.problem(f"SMI_TAX_BEHAVIOR must be exclusive or inclusive, not {tax_behavior!r}")
        seller_webhook = env.text("SELLER_WEBHOOK_URL") or None
        seller_secret = env.text("SELLER_WEBHOOK_SECRET") or None
        if seller_webhook and urlsplit(seller_webhook).scheme not in ("http", "https"):
            env.problem(f"SMI_SELLER_WEBHOOK_URL must be an http(s) URL, not {seller_webhook!r}")
        if seller_webhook and (not seller_secret or len(seller_secret) < 16):
            env.problem(
                "SMI_SELLER_WEBHOOK_SECRET (at least 16 characters) is required with "
                "SMI_SELLER_WEBHOOK_URL: the seller checks each notification's signature with it"
            )
        seller_email = env.text("SELLER_EMAIL") or None
        if seller_email and "@" not in seller_email:
            env.problem(f"SMI_SELLER_EMAIL must be an email address, not {seller_email!r}")

        config = cls(
            stripe=StripeConfig(mode, secret_key, webhook_secret, api_base),  # type: ignore[arg-type]
            pricing=pricing,
            database_url=env.text("DATABASE_URL", f"sqlite:///{data_dir / 'gateway.sqlite3'}"),
            broker_url=env.text("BROKER_URL", default_broker_url(data_dir)),
            storage_url=env.text("STORAGE_URL", default_storage_url(data_dir)),
            public_url=public_url,
            source_hosts=source_hosts,
            data_dir=data_dir,
            # Stripe accepts 30 minutes to 24 hours.
            checkout_expires_minutes=env.integer("CHECKOUT_EXPIRES_MINUTES"),
            max_source_bytes=env.integer("MAX_SOURCE_BYTES"),
            max_source_pixels=env.integer("MAX_SOURCE_PIXELS"),
            fetch_timeout_s=env.number("FETCH_TIMEOUT_S"),
            background_in_process=env.flag("BACKGROUND_IN_PROCESS"),
            mail=MailConfig(
                smtp_url=smtp_url or None,
                folder=Path(env.text("MAIL_DIR", str(data_dir / "mail"))),
                sender=env.text("MAIL_FROM"),
                support_email=env.text("SUPPORT_EMAIL"),
                lease_s=env.number("EMAIL_LEASE_S"),
            ),
            recovery=RecoveryConfig(
                pending_timeout_s=env.number("PENDING_TIMEOUT_S"),
                heartbeat_timeout_s=env.number("HEARTBEAT_TIMEOUT_S"),
                watchdog_interval_s=env.number("WATCHDOG_INTERVAL_S"),
                max_job_attempts=env.integer("MAX_JOB_ATTEMPTS"),
                refund_max_attempts=env.integer("REFUND_MAX_ATTEMPTS"),
                refund_backoff_s=env.number("REFUND_BACKOFF_S"),
                refund_lease_s=env.number("REFUND_LEASE_S"),
                stripe_catch_up_s=env.number("STRIPE_CATCH_UP_S"),
                result_retention_days=env.number("RESULT_RETENTION_DAYS"),
                retention_interval_s=env.number("RETENTION_INTERVAL_S"),
            ),
            admin_token=admin_token or None,
            download_secret=download_secret,
            download_previous_secrets=env.items("DOWNLOAD_SECRET_PREVIOUS"),
            download_ttl_s=int(env.number("DOWNLOAD_TTL_HOURS") * 3600),
            download_redirect=download_redirect,
            download_presigned_ttl_s=env.integer("DOWNLOAD_PRESIGNED_TTL_S"),
            storefront_origins=storefront_origins,
            trusted_proxies=tuple(trusted_proxies),
            min_free_bytes=int(env.number("MIN_FREE_MB") * 2**20),
            metrics_token=metrics_token or None,
            checkout_limits=CheckoutLimitsConfig(
                per_client_per_minute=env.number("CHECKOUT_PER_CLIENT_PER_MINUTE"),
                burst=env.integer("CHECKOUT_BURST"),
                global_per_minute=env.number("CHECKOUT_GLOBAL_PER_MINUTE"),
            ),
            previews=PreviewConfig(
                size=env.integer("PREVIEW_SIZE"),
                per_client_per_minute=env.number("PREVIEW_PER_CLIENT_PER_MINUTE"),
                burst=env.integer("PREVIEW_BURST"),
                global_per_minute=env.number("PREVIEW_GLOBAL_PER_MINUTE"),
                keep_s=env.number("PREVIEW_KEEP_S"),
                wait_s=env.number("PREVIEW_WAIT_S"),
                squares_per_image=env.integer("PREVIEW_SQUARES_PER_IMAGE"),
            ),
            checkout_options=CheckoutOptions(
                allow_promotion_codes=env.flag("ALLOW_PROMOTION_CODES"),
                automatic_tax=env.flag("AUTOMATIC_TAX"),
                tax_behavior="inclusive" if tax_behavior == "inclusive" else "exclusive",
                invoice_creation=env.flag("INVOICE_CREATION"),
                collect_billing_address=env.flag("COLLECT_BILLING_ADDRESS"),
            ),
            seller=SellerConfig(
                email=seller_email,
                webhook_url=seller_webhook,
                webhook_secret=seller_secret,
                reconcile_interval_s=env.number("RECONCILE_INTERVAL_S"),
                max_attempts=env.integer("SELLER_NOTIFY_MAX_ATTEMPTS"),
                backoff_s=env.number("SELLER_NOTIFY_BACKOFF_S"),
            ),
            dashboard=DashboardConfig(
                support_refund_limit=env.integer("SUPPORT_REFUND_LIMIT"),
                session_hours=env.number("DASHBOARD_SESSION_HOURS"),
                idle_minutes=env.number("DASHBOARD_IDLE_MINUTES"),
                max_failures=env.integer("SIGN_IN_MAX_FAILURES"),
                max_failures_per_address=env.integer("SIGN_IN_MAX_FAILURES_PER_ADDRESS"),
                lockout_minutes=env.number("SIGN_IN_LOCKOUT_MINUTES"),
            ),
        )
        if env.problems:
            raise ConfigError(env.problems)
        if mode == "test":
            config = replace(config, live_gaps=_live_gaps(environ))
        return config


def _live_gaps(environ: Mapping[str, str]) -> tuple[str, ...]:
    """What the same settings would lack in live mode: the problems it would refuse."""
    try:
        GatewayConfig.from_env({**environ, "SMI_STRIPE_MODE": "live"})
    except ConfigError as exc:
        return tuple(exc.problems)
    return ()


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _bench_figures(env: EnvReader, paths: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """Seconds per output megapixel of each model, from ``smi-bench --json`` reports."""
    figures: dict[str, float] = {}
    for raw in paths:
        try:
            report = json.loads(Path(raw.strip()).read_text())
            model, rate = str(report["model"]), float(report["input_megapixels_per_s"])
            scale = MODELS[model].scale
        except (OSError, ValueError, KeyError, TypeError) as exc:
            env.problem(f"SMI_BENCH_FILES: {raw.strip()} is not a smi-bench --json report ({exc})")
            continue
        if rate <= 0:
            env.problem(f"SMI_BENCH_FILES: {raw.strip()} reports no throughput")
            continue
        figures[model] = 1.0 / (rate * scale * scale)
    return tuple(figures.items())
