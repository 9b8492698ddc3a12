"""The gateway's tables (SQLAlchemy 2), the same on SQLite and PostgreSQL.

The gateway is the only writer. Unique keys carry the exactly-once rules:
a Stripe event id is processed once (``webhook_events``), a job has one
outbox message per kind (``outbox``), one refund per idempotency key
(``refunds``), one payment per payment intent (``payments``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# What no text column stores: PostgreSQL refuses NUL, and UTF-8 has no lone surrogates
# (JSON's "\ud800" escape makes one). Percent-decoding replaces bad UTF-8, never yields these.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives them back without a zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    def __repr__(self) -> str:
        """Every column and its value: what an assertion or a log about a row needs to show."""
        loaded = vars(self)  # never a query from a repr (the row may be detached or expired)
        fields = ", ".join(
            f"{a.key}={loaded[a.key]!r}" for a in self.__mapper__.column_attrs if a.key in loaded
        )
        return f"{type(self).__name__}({fields})"


class Job(Base):
    """One image bought once: from checkout to delivery or refund."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    image_url: Mapped[str] = mapped_column(Text)
    return_url: Mapped[str | None] = mapped_column(Text)
    source_key: Mapped[str] = mapped_column(String(255))
    result_key: Mapped[str | None] = mapped_column(String(255))
    # What the worker stored (its completion event): checked against the object when served.
    result_size: Mapped[int | None] = mapped_column(BigInteger)
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    model: Mapped[str] = mapped_column(
        String(64), default="RealESRGAN_x4plus", server_default="RealESRGAN_x4plus"
    )
    # When retention deleted the stored images (``gateway.background.retention``).
    source_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stripe_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of the buyer's key (``gateway.money.checkout.buyer_key``): handed only to the
    # browser that started the checkout, it opens the download on the shop's page.
    buyer_key_hash: Mapped[str | None] = mapped_column(String(64))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    customer_email: Mapped[str | None] = mapped_column(String(320))
    customer_message: Mapped[str] = mapped_column(Text, default="")
    decline_code: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_reason: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """One status change (or refused change) of a job, and why."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(255), default="")  # event id, admin, watchdog
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EventOutcome(StrEnum):
    """What a received Stripe event did (``webhook_events.outcome``)."""

    APPLIED = "applied"  # it changed our records
    NO_CHANGE = "no change"  # it was ours to handle, and there was nothing left to do
    IGNORED = "ignored"  # not a type we act on, or not about a job of ours (``detail`` says)
    UNKNOWN_JOB = "unknown job"  # names a job id we do not have
    ERROR = "error"  # failed; rolled back, so the next delivery (or a replay) tries again


class WebhookEvent(Base):
    """Every Stripe event received, with its payload and what it did.

    The id is the once-only key: an event whose outcome is anything but
    ``error`` never takes effect again, except by an admin's replay.
    """

    __tablename__ = "webhook_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    payload: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(
        String(32), default=EventOutcome.APPLIED, server_default="applied"
    )
    detail: Mapped[str | None] = mapped_column(Text)
    deliveries: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Payment(Base):
    """A successful charge, linked to its job."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    stripe_payment_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_session_id: Mapped[str] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(Integer)  # what the buyer paid, tax included
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    tax_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    discount_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Dispute(Base):
    """A chargeback the buyer's bank opened on a job's payment, and how it ended."""

    __tablename__ = "disputes"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's dp_ id
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(32))  # Stripe's: needs_response, won, lost ...
    # What the job was when the dispute opened: a won dispute goes back to it.
    job_status_before: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """One message to the seller (by email or signed webhook), sent once, retried until then."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    key: Mapped[str] = mapped_column(String(255), unique=True)  # what makes it once-only
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    kind: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxMessage(Base):
    """A message committed with the state change that caused it, published later."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("job_id", "kind", "attempt", name="uq_outbox_job_kind_attempt"),
        Index("ix_outbox_unpublished", "published_at", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    kind: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Emails are claimed for a while before sending; a crashed sender's claim runs out.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LinkRequestState(StrEnum):
    """Where one lost-link request is (``link_requests.state``)."""

    NEW = "new"  # asked for; nobody has looked at the address yet
    SENDING = "sending"  # this period's email for the address: being sent, retried on failure
    SENT = "sent"
    GAVE_UP = "gave up"


class LinkRequest(Base):
    """A buyer's ``POST /api/links``: written the same way for every address, resolved later.

    The answer writes this row and nothing else, so it costs the same whether
    the address is known or not; the email relay then looks the address up and
    sends (at most one email per address and period) or deletes the row.
    """

    __tablename__ = "link_requests"
    __table_args__ = (
        Index("ix_link_requests_due", "state", "next_attempt_at"),
        Index("ix_link_requests_address", "address", "decided_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    address: Mapped[str] = mapped_column(String(320))  # as asked, stripped and lower-cased
    # Random: the email's Message-ID, the same on every retry of this row and no other's.
    nonce: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=LinkRequestState.NEW)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When it became the address's email of the period (``SENDING``).
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Source(Base):
    """A seller's image, stored once by its content's sha256 for every job that bought it.

    The row is what checkouts and retention lock (``lifecycle.hold_source``):
    a source is deleted only while no job still needs it, and a checkout that
    shares it writes it again after its own job is committed.
    """

    __tablename__ = "sources"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateBucket(Base):
    """A rate limit's token bucket shared by every gateway process (PostgreSQL only:
    ``gateway.http.limits.DatabaseBuckets``); a row whose bucket has refilled is deleted."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    stamp: Mapped[float] = mapped_column(Float)  # the database's clock, epoch seconds
    full_at: Mapped[float] = mapped_column(Float, index=True)


class RefundStatus(StrEnum):
    """Where one refund is: waiting for (another) try, done at Stripe, or given up."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Not needed after all: the charge was refunded at Stripe, or is disputed.
    CANCELED = "canceled"


class Refund(Base):
    """One refund of a job, keyed so that retries can never refund twice."""

    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))  # a RefundStatus
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), index=True)
    amount_cents: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class SellerRole(StrEnum):
    """What a dashboard account may do (``gateway.store.accounts.PERMISSIONS``)."""

    OWNER = "owner"  # everything
    SUPPORT = "support"  # find orders, resend links, retry; small refunds; no erasure, settings


class SellerAccount(Base):
    """A person who signs in to the seller's dashboard; the password is an argon2id hash."""

    __tablename__ = "seller_accounts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stripped and lower-cased
    role: Mapped[str] = mapped_column(String(16))  # a SellerRole
    password_hash: Mapped[str] = mapped_column(String(255))
    # A one-time password (from ``smi-admin users add`` or ``reset``): the first sign-in
    # must choose a password of the account's own before anything else.
    password_is_temporary: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SellerSession(Base):
    """One sign-in: the cookie holds a random token, the row only its SHA-256."""

    __tablename__ = "seller_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    account_id: Mapped[int] = mapped_column(
        ForeignKey("seller_accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # whatever happens
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")


class SignInFailure(Base):
    """Failed sign-ins of one account (``account:EMAIL``) or one client address
    (``address:IP``) within a window; past the limit, the key is locked until a time."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReconciliationCheck(Base):
    """A reconciliation someone asked for from the dashboard, and what it found (JSON)."""

    __tablename__ = "reconciliation_checks"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    checked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    checked_by: Mapped[str] = mapped_column(String(255))
    report: Mapped[str] = mapped_column(Text)


# What the dashboard searches and sums on (migration 0011): orders newest first, by status,
# by the buyer's address whatever its case; the overview's days of payments, refunds, paid
# and finished jobs; the fleet's completions of the last day.
Index("ix_jobs_created_at", Job.created_at, Job.id)
Index("ix_jobs_status_created_at", Job.status, Job.created_at, Job.id)
Index("ix_jobs_customer_email_lower", func.lower(Job.customer_email))
# On PostgreSQL the overview's three carry what it sums: read from the index alone.
Index("ix_jobs_paid_at", Job.paid_at, postgresql_include=["currency", "model", "width", "height"])
Index("ix_jobs_finished_at", Job.finished_at, postgresql_include=["status", "paid_at"])
Index("ix_payments_created_at", Payment.created_at, postgresql_include=["currency", "amount_cents"])
Index("ix_refunds_status_updated_at", Refund.status, Refund.updated_at)
Index("ix_audit_to_status_at", AuditEntry.to_status, AuditEntry.at)
