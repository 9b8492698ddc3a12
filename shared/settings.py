"""Every ``SMI_*`` setting, declared once: its name, type, default and meaning.

    >>> SETTINGS["PENDING_TIMEOUT_S"].default
    900
    >>> SETTINGS["PENDING_TIMEOUT_S"].readers
    ('gateway',)

``shared.env.EnvReader`` reads a setting through its declaration (the
default, the bounds), and refuses a name that has none; the README's
configuration table is written from this list (``python
scripts/settings_table.py``) and ``tests/test_settings.py`` fails when the
two, or the code and the list, drift apart. A new setting is one entry here,
in the group it belongs to, then the table written again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from shared.models import DEFAULT_MODEL

PREFIX = "SMI_"

Kind = Literal["text", "number", "integer", "flag", "list", "url", "secret"]
Default = str | float | bool | None

GATEWAY = ("gateway",)
WORKER = ("worker",)
BOTH = ("gateway", "worker")


@dataclass(frozen=True)
class Setting:
    """One ``SMI_*`` variable.

    ``default`` is what the code uses when the variable is unset or empty
    (``None``: nothing, or a value worked out at start, which ``shown``
    describes); ``shown`` is the default as the README puts it, where the
    value alone would not say enough. ``minimum`` and ``maximum`` bound a
    number. ``readers`` are the processes and commands that read it.
    """

    name: str
    kind: Kind
    default: Default
    meaning: str
    readers: tuple[str, ...] = GATEWAY
    shown: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    group: str = ""

    @property
    def variable(self) -> str:
        return PREFIX + self.name

    @property
    def secret(self) -> bool:
        """Refused in live mode while it holds an example's placeholder."""
        return self.kind == "secret"

    def default_text(self) -> str:
        """The default as the README's table shows it."""
        if self.shown is not None:
            return self.shown
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return f"`{str(self.default).lower()}`"
        if isinstance(self.default, float | int):
            return f"`{self.default:g}`"
        return f"`{self.default}`"


def _group(title: str, *settings: Setting) -> tuple[Setting, ...]:
    return tuple(replace(setting, group=title) for setting in settings)


_DECLARED: tuple[Setting, ...] = (
    *_group(
        "Stripe",
        Setting("STRIPE_MODE", "text", "test", "`test` or `live`: picks the matching keys"),
        Setting(
            "STRIPE_TEST_SECRET_KEY",
            "secret",
            None,
            "secret key of test mode, `sk_test_...` (or a restricted `rk_test_...`)",
            shown="required in test mode",
        ),
        Setting(
            "STRIPE_TEST_WEBHOOK_SECRET",
            "secret",
            None,
            "signing secret of the webhook endpoint in test mode; never empty",
            shown="required in test mode",
        ),
        Setting(
            "STRIPE_LIVE_SECRET_KEY",
            "secret",
            None,
            "secret key of live mode, `sk_live_...` (or `rk_live_...`; test keys are refused)",
            shown="required in live mode",
        ),
        Setting(
            "STRIPE_LIVE_WEBHOOK_SECRET",
            "secret",
            None,
            "signing secret of the webhook endpoint in live mode; never empty",
            shown="required in live mode",
        ),
        Setting(
            "STRIPE_API_BASE",
            "url",
            None,
            "the Stripe emulator's address (the demo, the tests); refused in live mode",
            shown="Stripe itself",
        ),
        Setting(
            "STRIPE_CATCH_UP_S",
            "number",
            60,
            "how often Stripe's event list is read for events whose webhook never came "
            "(applied once, like a webhook)",
            minimum=1,
        ),
    ),
    *_group(
        "Where things are",
        Setting(
            "PUBLIC_URL",
            "url",
            "http://127.0.0.1:8000",
            "the gateway's own address, in links and Stripe's return addresses (https in "
            "live mode)",
        ),
        Setting(
            "DATA_DIR",
            "text",
            "var",
            "where the embedded defaults (database, broker, storage, mail) live",
            readers=BOTH,
        ),
        Setting(
            "DATABASE_URL",
            "secret",
            None,
            "SQLAlchemy URL, SQLite or PostgreSQL",
            shown="`sqlite:///` `gateway.sqlite3` in `SMI_DATA_DIR`",
        ),
        Setting(
            "BROKER_URL",
            "text",
            None,
            "`amqp://...` (RabbitMQ) or `filesystem://FOLDER`",
            readers=BOTH,
            shown="`filesystem://` `broker/` in `SMI_DATA_DIR`",
        ),
        Setting(
            "STORAGE_URL",
            "text",
            None,
            "any fsspec URL: a local folder, or `s3://bucket/prefix` (s3fs, the `s3` extra: "
            "AWS, MinIO, any S3-compatible store, its address in `FSSPEC_S3_ENDPOINT_URL`, "
            "keys in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`); docs/OPERATIONS.md, "
            '"Storage and downloads"',
            readers=BOTH,
            shown="`file://` `storage/` in `SMI_DATA_DIR`",
        ),
        Setting(
            "GATEWAY_PORT",
            "integer",
            8000,
            "the port `smi-gateway serve` listens on without `--port`, and the one the "
            "gateway image's health check asks",
            readers=("smi-gateway",),
            minimum=1,
            maximum=65535,
        ),
        Setting(
            "BACKGROUND_IN_PROCESS",
            "flag",
            True,
            "run relay, job events, emails, refunds and watchdog inside each gateway process "
            "(else in `smi-gateway background`)",
        ),
        Setting(
            "TRUSTED_PROXIES",
            "list",
            None,
            "comma-separated addresses or networks (`10.0.0.0/8`, `::1`) of the load balancers "
            "in front of the gateway: only a connection from one of them has its "
            "`X-Forwarded-For` believed (the nearest address in it that is not a proxy is the "
            "client the rate limits count); an IPv6 client counts as its /64",
            shown="none: the connection's own address",
        ),
        Setting(
            "STOREFRONT_ORIGINS",
            "list",
            None,
            "comma-separated origins whose pages may call the gateway (CORS) and that "
            "customers may be sent back to after paying",
        ),
    ),
    *_group(
        "Images, prices and checkout",
        Setting(
            "SOURCE_HOSTS",
            "list",
            None,
            "comma-separated `host` or `host:port` the images sold may come from",
        ),
        Setting(
            "CURRENCY",
            "text",
            "usd",
            "the shop's currency (ISO 4217, any Stripe takes)",
        ),
        Setting(
            "PRICE_PER_MEGAPIXEL_CENTS",
            "number",
            2,
            "price of one megapixel of the output image, in the currency's smallest unit "
            "(cents; yen for JPY; fils for KWD)",
            minimum=0,
        ),
        Setting("MARKUP", "number", 1.5, "the price above is multiplied by this", minimum=1),
        Setting(
            "MINIMUM_CHARGE",
            "integer",
            None,
            "smallest amount charged, in the currency's smallest unit; required only where "
            "Stripe has no fixed minimum (it converts)",
            shown="Stripe's minimum for the currency (`50` cents, `¥50`, `£0.30`, …)",
            minimum=1,
        ),
        Setting(
            "OFFER_MODELS",
            "list",
            DEFAULT_MODEL,
            "models buyers choose from, the first the default (`shared/models.py` lists them "
            "with their scale: `RealESRGAN_x4plus` photo 4x, `RealESRGAN_x4plus_anime_6B` "
            "illustration 4x, `RealESRGAN_x2plus` photo 2x, …); every worker needs their "
            "weights (2x: its own, or the 4x model's, resized)",
        ),
        Setting(
            "MODEL_PRICES",
            "list",
            None,
            "a model's own price per output megapixel: `RealESRGAN_x2plus=3,…`",
            shown="`SMI_PRICE_PER_MEGAPIXEL_CENTS`",
        ),
        Setting(
            "GPU_COST_PER_HOUR",
            "number",
            None,
            "what a GPU hour costs, in the currency's smallest unit: a model's price per "
            "megapixel is never below its measured cost (`SMI_BENCH_FILES`), and the admin's "
            "job list shows each job's cost and margin",
            minimum=0,
        ),
        Setting(
            "BENCH_FILES",
            "list",
            None,
            "`smi-bench --json` reports of the offered models, for `SMI_GPU_COST_PER_HOUR`",
        ),
        Setting(
            "CHECKOUT_EXPIRES_MINUTES",
            "integer",
            60,
            "Checkout Session lifetime, 30 to 1440",
            minimum=30,
            maximum=24 * 60,
        ),
        Setting(
            "CHECKOUT_PER_CLIENT_PER_MINUTE",
            "number",
            20,
            "checkouts one client address may start per minute, after a burst: for the whole "
            "fleet on PostgreSQL (buckets shared in the database), per gateway process on "
            "SQLite; past it 429 with `Retry-After` (lost-link requests have buckets of "
            "their own, of the same sizes)",
            minimum=0.1,
        ),
        Setting(
            "CHECKOUT_BURST",
            "integer",
            5,
            "checkouts one client address may start at once",
            minimum=1,
        ),
        Setting(
            "CHECKOUT_GLOBAL_PER_MINUTE",
            "number",
            600,
            "checkouts everyone together may start per minute",
            minimum=0.1,
        ),
        Setting(
            "MAX_SOURCE_BYTES",
            "integer",
            50 * 2**20,
            "the largest image sold, in bytes after decompression",
            shown="`52428800` (50 MiB)",
            minimum=1,
        ),
        Setting(
            "MAX_SOURCE_PIXELS",
            "integer",
            4096 * 4096,
            "the most pixels an image sold may decode to; the workers read it too (give them "
            "the same value)",
            readers=BOTH,
            shown="`16777216` (4096x4096)",
            minimum=1,
        ),
        Setting(
            "FETCH_TIMEOUT_S",
            "number",
            20,
            "seconds for the whole fetch of an image sold",
            minimum=0.1,
        ),
        Setting(
            "MIN_FREE_MB",
            "number",
            500,
            "under this much free space on the disk stored images (a `file://` storage "
            "folder) or the data folder go to, new checkouts and previews answer 503 "
            "`storage_full` with `Retry-After`; `smi_disk_free_bytes` and the "
            "`SMIDiskNearlyFull` alert warn at twice it",
            minimum=0,
        ),
        Setting(
            "ALLOW_PROMOTION_CODES",
            "flag",
            False,
            "Checkout takes the promotion codes made in Stripe; what is recorded and refunded "
            "is what Stripe took",
        ),
        Setting(
            "AUTOMATIC_TAX",
            "flag",
            False,
            "Stripe Tax computes tax from the buyer's address; it is recorded beside each "
            "payment and reported",
        ),
        Setting(
            "TAX_BEHAVIOR",
            "text",
            "exclusive",
            "the price is `exclusive` of tax (tax added) or `inclusive` of it",
        ),
        Setting(
            "INVOICE_CREATION",
            "flag",
            False,
            "Stripe makes and emails an invoice/receipt PDF for each payment",
        ),
        Setting("COLLECT_BILLING_ADDRESS", "flag", False, "Checkout asks for the billing address"),
    ),
    *_group(
        "Email",
        Setting(
            "SMTP_URL",
            "secret",
            None,
            "`smtp://[user:pass@]host:port[?starttls=true]` or `smtps://...`; required in live "
            "mode (without it emails are only files, and the log says so)",
            shown="none: `.eml` files in `SMI_MAIL_DIR`",
        ),
        Setting(
            "MAIL_DIR",
            "text",
            None,
            "where emails are written without SMTP",
            shown="`mail/` in `SMI_DATA_DIR`",
        ),
        Setting("MAIL_FROM", "text", "Sell My Images <noreply@localhost>", "the emails' sender"),
        Setting(
            "SUPPORT_EMAIL",
            "text",
            "support@example.com",
            "the support contact every email gives",
        ),
        Setting(
            "EMAIL_LEASE_S",
            "number",
            120,
            "an email claimed by a process that died is tried again after this",
            minimum=1,
        ),
    ),
    *_group(
        "The seller",
        Setting(
            "SELLER_EMAIL",
            "text",
            None,
            "the seller hears of each sale, refund, failed refund, dispute and reconciliation "
            "mismatch by email",
        ),
        Setting(
            "SELLER_WEBHOOK_URL",
            "url",
            None,
            'the same as a JSON `POST`, signed `SMI-Signature: t=T,v1=HMAC-SHA256("T.body")` '
            "with `SMI_SELLER_WEBHOOK_SECRET`, retried with backoff; `SMI-Notification-Id` "
            "repeats on retries",
        ),
        Setting(
            "SELLER_WEBHOOK_SECRET",
            "secret",
            None,
            "signs the seller's notifications (16+ characters); required with "
            "`SMI_SELLER_WEBHOOK_URL`",
        ),
        Setting(
            "SELLER_NOTIFY_MAX_ATTEMPTS",
            "integer",
            10,
            "tries of one notification before it is given up (logged as an error)",
            minimum=1,
        ),
        Setting(
            "SELLER_NOTIFY_BACKOFF_S",
            "number",
            5,
            "wait before a notification's second try, doubled after each",
            minimum=0,
        ),
        Setting(
            "RECONCILE_INTERVAL_S",
            "number",
            3600,
            "how often Stripe is reconciled with our records; a mismatch two passes in a row "
            "is sent to the seller once",
            minimum=1,
        ),
    ),
    *_group(
        "Admin, metrics and the seller's dashboard",
        Setting(
            "ADMIN_TOKEN",
            "secret",
            None,
            "bearer token of the admin API (16+ characters), which `smi-admin` sends too; "
            "unset: admin API closed",
            readers=("gateway", "smi-admin"),
        ),
        Setting(
            "ADMIN_URL",
            "url",
            "http://127.0.0.1:8000",
            "the gateway `smi-admin` talks to (`--url` overrides it)",
            readers=("smi-admin",),
        ),
        Setting(
            "METRICS_TOKEN",
            "secret",
            None,
            "bearer token of the gateway's `/metrics` (16+ characters), which Prometheus sends "
            "(`deploy/prometheus/prometheus.yml`): the figures include revenue, refunds and "
            "disputes; unset: `/metrics` closed (401)",
        ),
        Setting(
            "SUPPORT_REFUND_LIMIT",
            "integer",
            0,
            "the largest refund a support account of the seller's dashboard may make, in the "
            "currency's smallest unit (owners have none)",
            shown="`0`: support refunds nothing",
            minimum=0,
        ),
        Setting(
            "DASHBOARD_SESSION_HOURS",
            "number",
            12,
            "a dashboard sign-in ends this long after it was made",
            minimum=0.01,
            maximum=720,
        ),
        Setting(
            "DASHBOARD_IDLE_MINUTES",
            "number",
            30,
            "... or after this long without a request",
            minimum=1,
        ),
        Setting(
            "SIGN_IN_MAX_FAILURES",
            "integer",
            5,
            "failed dashboard sign-ins of one account, within `SMI_SIGN_IN_LOCKOUT_MINUTES`, "
            "that lock it for as long, for every gateway of the fleet",
            minimum=1,
        ),
        Setting(
            "SIGN_IN_MAX_FAILURES_PER_ADDRESS",
            "integer",
            20,
            "the same for one client address (`SMI_TRUSTED_PROXIES` says whose "
            "`X-Forwarded-For` counts)",
            minimum=1,
        ),
        Setting(
            "SIGN_IN_LOCKOUT_MINUTES",
            "number",
            15,
            "the window failed sign-ins are counted in, and how long a lock lasts",
            minimum=1,
        ),
    ),
    *_group(
        "Downloads",
        Setting(
            "DOWNLOAD_SECRET",
            "secret",
            None,
            "signs download links; required in live mode",
            shown="test mode: derived from the Stripe key",
        ),
        Setting(
            "DOWNLOAD_SECRET_PREVIOUS",
            "secret",
            None,
            "secrets used before the last rotation, comma-separated: links they signed still "
            "open until they expire, nothing new is signed with them (docs/OPERATIONS.md)",
        ),
        Setting(
            "DOWNLOAD_TTL_HOURS",
            "number",
            7 * 24,
            "a download link's lifetime",
            minimum=0.01,
        ),
        Setting(
            "DOWNLOAD_REDIRECT",
            "text",
            "presigned",
            "where storage can presign (S3): `presigned` answers a download with a `302` to a "
            "short-lived address at the store (the bytes never pass through the gateway; the "
            "store must be reachable by buyers), `stream` sends them through the gateway (a "
            "store buyers cannot reach); other storage always streams",
        ),
        Setting(
            "DOWNLOAD_PRESIGNED_TTL_S",
            "integer",
            300,
            "lifetime of a presigned download address, 10 to 3600 s (a transfer under way "
            "outlives it; a resume after it goes through the link again, which signs a new one)",
            minimum=10,
            maximum=3600,
        ),
    ),
    *_group(
        "Recovery and retention",
        Setting(
            "PENDING_TIMEOUT_S",
            "number",
            900,
            "a job paid but not started after this is published again",
            minimum=1,
        ),
        Setting(
            "HEARTBEAT_TIMEOUT_S",
            "number",
            180,
            "a job processing without a worker event for this long is published again",
            minimum=1,
        ),
        Setting(
            "MAX_JOB_ATTEMPTS",
            "integer",
            3,
            "publications of one job before a stalled job is failed and refunded",
            minimum=1,
            maximum=20,
        ),
        Setting(
            "WATCHDOG_INTERVAL_S",
            "number",
            30,
            "how often stalled jobs are looked for",
            minimum=0.1,
        ),
        Setting(
            "REFUND_MAX_ATTEMPTS",
            "integer",
            6,
            "refund tries against Stripe before `refund_failed`",
            minimum=1,
            maximum=50,
        ),
        Setting(
            "REFUND_BACKOFF_S",
            "number",
            10,
            "wait before a refund's second try, doubled after each",
            minimum=0,
        ),
        Setting(
            "REFUND_LEASE_S",
            "number",
            120,
            "a refund claimed by a process that died is tried again after this (same "
            "idempotency key: never twice)",
            minimum=1,
        ),
        Setting(
            "RESULT_RETENTION_DAYS",
            "number",
            30,
            "results (and their sources) are deleted this long after completion or refund, "
            "the completion email says until when; sources of checkouts never paid go when "
            "they expire",
            minimum=0,
        ),
        Setting(
            "RETENTION_INTERVAL_S",
            "number",
            300,
            "how often retention runs",
            minimum=1,
        ),
    ),
    *_group(
        "Previews",
        Setting(
            "PREVIEW_SIZE",
            "integer",
            128,
            "side of a preview's square, in input pixels (16 to 512)",
            minimum=16,
            maximum=512,
        ),
        Setting(
            "PREVIEW_WAIT_S",
            "number",
            30,
            "how long a page waits for a preview before it says it is unavailable",
            minimum=1,
        ),
        Setting(
            "PREVIEW_KEEP_S",
            "number",
            3600,
            "how long previews and their sources are kept",
            minimum=60,
        ),
        Setting(
            "PREVIEW_SQUARES_PER_IMAGE",
            "integer",
            6,
            "distinct preview squares one image keeps at a time; another is answered 429 "
            "until retention makes room",
            minimum=1,
        ),
        Setting(
            "PREVIEW_PER_CLIENT_PER_MINUTE",
            "number",
            10,
            "previews one client address may ask for per minute, after a burst",
            minimum=0.1,
        ),
        Setting(
            "PREVIEW_BURST",
            "integer",
            5,
            "previews one client address may ask for at once",
            minimum=1,
        ),
        Setting(
            "PREVIEW_GLOBAL_PER_MINUTE",
            "number",
            300,
            "previews everyone together may ask for per minute",
            minimum=0.1,
        ),
    ),
    *_group(
        "The worker",
        Setting(
            "WORKER_DEVICE",
            "text",
            None,
            "the device the worker upscales on (`cuda`, `cuda:1`, `cpu`)",
            readers=WORKER,
            shown="`cuda` if present, else `cpu`",
        ),
        Setting(
            "WORKER_PRECISION",
            "text",
            "auto",
            "the precision of paid jobs: `auto`, `fp32`, `fp16` or `bf16` (`fp32` for "
            "deliveries with `RealESRGANer`'s pixels to the level; *bf16 on the CPU*); "
            "`auto` is fp16 on CUDA and, on the CPU, bf16 where it pays, else fp32",
            readers=WORKER,
        ),
        Setting(
            "WORKER_PREVIEW_PRECISION",
            "text",
            "auto",
            "the precision of free previews, the same values (`auto` keeps previews fast "
            "where paid jobs are set to `fp32`)",
            readers=WORKER,
        ),
        Setting(
            "WORKER_TILE",
            "text",
            "auto",
            "tile side in pixels (`0`: the whole image at once)",
            readers=WORKER,
            shown="`auto`: CUDA sized from free memory at start, CPU 512",
        ),
        Setting(
            "WORKER_OVERLAP",
            "integer",
            32,
            "context around each tile, in pixels",
            readers=WORKER,
            minimum=0,
        ),
        Setting(
            "WORKER_BATCH",
            "integer",
            0,
            "windows per call of the network",
            readers=WORKER,
            shown="`0`: 1, on CUDA with a set tile what fits",
            minimum=0,
        ),
        Setting(
            "WORKER_LANES",
            "integer",
            0,
            "CPU only: batches at once, each on its share of the cores (each holds its own "
            "activations)",
            readers=WORKER,
            shown="`0`: 2 on the CPU",
            minimum=0,
        ),
        Setting(
            "WORKER_COMPILE",
            "flag",
            False,
            "`torch.compile` the network, compiled at start before the first job",
            readers=WORKER,
        ),
        Setting(
            "WORKER_PIPELINE",
            "flag",
            True,
            "overlap jobs: decode the next and encode the last while the device runs one",
            readers=WORKER,
        ),
        Setting(
            "WORKER_MAX_ATTEMPTS",
            "integer",
            3,
            "tries of a job hitting a retryable error in one worker",
            readers=WORKER,
            minimum=1,
            maximum=20,
        ),
        Setting(
            "WORKER_RETRY_BACKOFF_S",
            "number",
            2,
            "wait before such a job's second try, doubled after each",
            readers=WORKER,
            minimum=0,
        ),
        Setting(
            "WORKER_HEARTBEAT_S",
            "number",
            15,
            "how often a worker says it still holds a job",
            readers=WORKER,
            minimum=0.1,
        ),
        Setting(
            "WORKER_PROGRESS_INTERVAL_S",
            "number",
            1,
            "how often a worker reports a job's progress",
            readers=WORKER,
            minimum=0,
        ),
        Setting(
            "WORKER_NAME",
            "text",
            None,
            "the worker's name in its events and logs",
            readers=WORKER,
            shown="`host:pid`",
        ),
        Setting(
            "WORKER_BROKER_HEARTBEAT_S",
            "number",
            30,
            "AMQP heartbeats on the worker's consuming connections: a worker cut off from the "
            "network loses its jobs to the others after about two (`0`: none; they then wait "
            "for the watchdog)",
            readers=WORKER,
            minimum=0,
        ),
        Setting(
            "WORKER_METRICS_PORT",
            "integer",
            None,
            "the worker's `/metrics`, `/healthz` and `/readyz` (broker, storage, model loaded, "
            "preview consumer running) on this port",
            readers=WORKER,
            shown="not served",
            minimum=0,
            maximum=65535,
        ),
        Setting(
            "WORKER_STALL_S",
            "number",
            600,
            "`/healthz` answers 503 once the worker's job loop has not moved for this long: no "
            "tile, stage or job finished while it holds a job, no wait for messages while it "
            "holds none (a hung GPU or read); keep it above the longest single tile",
            readers=WORKER,
            minimum=1,
        ),
        Setting(
            "MODELS_DIR",
            "text",
            None,
            "a folder holding a model manifest of one's own (`manifest.toml`, the shape of "
            "`shared/models.toml`), for trying a model before it is sold: the gateway sells "
            "what `shared/models.toml` lists",
            readers=("worker", "smi-upscale", "smi-models", "smi-bench"),
            shown="`shared/models.toml`",
        ),
        Setting(
            "WEIGHTS_DIR",
            "text",
            None,
            "the folder of the weight files",
            readers=("worker", "smi-upscale", "smi-models", "smi-bench"),
            shown="`weights/` in `SMI_MODELS_DIR`, else the project's `models/weights/`",
        ),
    ),
    *_group(
        "Logs, tools and tests",
        Setting(
            "LOG_FORMAT",
            "text",
            None,
            "`json` (one object per line, with `job_id`, `event_id`, `worker`, `error_type` "
            "where they exist) or `text`",
            readers=BOTH,
            shown="`json`, `text` on a terminal",
        ),
        Setting(
            "SAMPLES_DIR",
            "text",
            None,
            "the photos the demo shop sells",
            readers=("smi-demo",),
            shown="the project's `samples/`",
        ),
        Setting(
            "RELEASE",
            "text",
            None,
            "the images' tag (`make images`, `deploy/compose.yaml`)",
            readers=("make images", "compose"),
            shown="the version in `pyproject.toml`",
        ),
        Setting(
            "FAILPOINTS",
            "list",
            None,
            "for fault tests only: names of points (`shared/failpoints.py`) where the process "
            "kills itself",
            readers=BOTH,
        ),
    ),
)

SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _DECLARED}
assert len(SETTINGS) == len(_DECLARED), "a setting is declared twice"


class UndeclaredSettingError(KeyError):
    """Code read an ``SMI_*`` variable that ``shared/settings.py`` does not declare."""


def declared(name: str) -> Setting:
    """The declaration of ``name`` (without ``SMI_``)."""
    try:
        return SETTINGS[name.removeprefix(PREFIX)]
    except KeyError:
        raise UndeclaredSettingError(
            f"{PREFIX}{name} is not declared in shared/settings.py"
        ) from None


def read(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of a declared setting as text, its declared default when unset or empty
    (``""`` where it has none), for code outside a configuration object (``smi-admin``,
    the logs, the demo shop)."""
    setting = declared(name)
    value = (os.environ if environ is None else environ).get(setting.variable, "").strip()
    if value:
        return value
    return "" if setting.default is None else str(setting.default)


def markdown_table() -> str:
    """The README's configuration table, one row per setting, under its group."""
    lines: list[str] = []
    group = None
    for setting in _DECLARED:
        if setting.group != group:
            group = setting.group
            lines += ["", f"**{group}**", "", "| variable | meaning | default | read by |"]
            lines.append("|---|---|---|---|")
        readers = ", ".join(setting.readers)
        name = f"`{setting.variable}`" + (" *secret*" if setting.secret else "")
        lines.append(f"| {name} | {setting.meaning} | {setting.default_text()} | {readers} |")
    return "\n".join(lines[1:]) + "\n"
