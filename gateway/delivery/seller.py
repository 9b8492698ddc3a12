"""Telling the seller: sales, refunds, failed refunds, disputes, reconciliation mismatches.

    notify_seller(session, "sale", f"sale:{job.id}", job_id=job.id, amount_cents=250, ...)
    SellerNotifier(sessions, config.seller, Mailer(config.mail), sender).send_due()

A notification is queued in the transaction of the change it reports, once
per key and channel (the ``notifications`` table's unique key), so a
duplicate event never tells the seller twice. The notifier sends each to
``SMI_SELLER_EMAIL`` and/or ``SMI_SELLER_WEBHOOK_URL``; a channel that is
not configured marks its copy done unsent. A failed send is retried with
backoff; after ``max_attempts`` it is given up and logged as an error.

The webhook is a JSON ``POST`` signed like Stripe's own: header
``SMI-Signature: t=UNIX_TIME,v1=HEX`` where ``HEX`` is HMAC-SHA256 of
``"{t}.{body}"`` with ``SMI_SELLER_WEBHOOK_SECRET``; ``SMI-Notification-Id``
is the same on every retry, for the receiver to drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, cast

import httpx
from sqlalchemy import Table, bindparam
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import SellerConfig
from gateway.currencies import format_money
from gateway.delivery.emails import message_id
from gateway.delivery.mailer import Mailer
from gateway.store.database import insert_into
from gateway.store.leases import backoff_s, claim_due
from gateway.store.tables import Notification, utcnow

log = logging.getLogger(__name__)

CHANNELS = ("email", "webhook")
# ``session.info`` key: the channels this process is configured for (absent: all of them).
SELLER_CHANNELS = "seller_channels"
# What each notification is called in the seller's email subject.
TITLES = {
    "sale": "Sale",
    "refund": "Refund",
    "refund_failed": "ACTION NEEDED: a refund failed",
    "dispute_opened": "ACTION NEEDED: a payment is disputed",
    "dispute_closed": "Dispute closed",
    "reconciliation_mismatch": "ACTION NEEDED: Stripe and our records disagree",
}
WEBHOOK_TIMEOUT_S = 10.0
LEASE_S = 60.0


class SellerWebhookError(Exception):
    """Raised when the seller's webhook endpoint answers anything but 2xx."""


def seller_channels(config: SellerConfig) -> tuple[str, ...]:
    """The channels ``config`` sends to."""
    return tuple(
        channel for channel, on in (("email", config.email), ("webhook", config.webhook_url)) if on
    )


def notify_seller(
    session: Session, kind: str, key: str, job_id: str | None = None, **details: Any
) -> bool:
    """Queue a notification of ``kind`` on each channel, unless that channel's with ``key``
    was queued before.

    Call it in the transaction of the change it reports (with the job locked,
    when there is one). Only the channels the process sends to are queued
    (``session.info``; all when it does not say). Returns whether any was queued now.
    """
    if kind not in TITLES:
        raise ValueError(f"unknown seller notification {kind!r}")
    channels = session.info.get(SELLER_CHANNELS, CHANNELS)
    if not channels:
        return False  # the seller listens nowhere: nothing to keep
    body = json.dumps(
        {"id": key, "type": kind, "created": int(time.time()), "job_id": job_id, **details},
        sort_keys=True,
    )
    rows = [
        {
            "key": f"{channel}:{key}",
            "channel": channel,
            "kind": kind,
            "job_id": job_id,
            "body": body,
            "attempts": 0,
            "next_attempt_at": utcnow(),
        }
        for channel in CHANNELS
        if channel in channels
    ]
    if not rows:
        return False
    # One statement: a key queued before (by this change, or one that came again) stays.
    return bool(session.execute(_queue_once(session), rows).all())


_NOTIFICATIONS = cast(Table, Notification.__table__)
_QUEUE_ONCE: dict[str, Any] = {}  # by dialect; built once, SQLAlchemy caches it compiled


def _queue_once(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect not in _QUEUE_ONCE:
        _QUEUE_ONCE[dialect] = (
            insert_into(session, _NOTIFICATIONS)
            .values({name: bindparam(name) for name in _NOTIFICATION_FIELDS})
            .on_conflict_do_nothing(index_elements=[_NOTIFICATIONS.c.key])
            .returning(_NOTIFICATIONS.c.id)
        )
    return _QUEUE_ONCE[dialect]


_NOTIFICATION_FIELDS = ("key", "channel", "kind", "job_id", "body", "attempts", "next_attempt_at")


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``SMI-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def one_line(value: object) -> str:
    """``value`` as text that cannot start a line or a header: every control, format or
    separator character (CR, LF, NUL, U+2028 ...) written as its escape (``\\r``)."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in str(value)
    )


def seller_email(body: dict[str, Any], sender: str, to: str) -> EmailMessage:
    """The plain-text email that tells the seller what ``body`` says.

    Values come from buyers and Stripe (an address, a reason): each is shown on
    its one line (``one_line``), so none adds a line to the body or a header.
    The ``Message-ID`` names the notification (its key and creation time):
    the same on every retry of it, another for every other notification.
    """
    kind = str(body["type"])
    amount = ""
    if isinstance(body.get("amount_cents"), int) and body.get("currency"):
        amount = format_money(body["amount_cents"], str(body["currency"]))
    subject = f"[Sell My Images] {TITLES[kind]}"
    if body.get("job_id"):
        subject += f": {body['job_id']}"
    if amount:
        subject += f" ({amount})"
    lines = [f"{TITLES[kind]}.", ""]
    lines += [
        f"{one_line(name)}: {one_line(value)}"
        for name, value in sorted(body.items())
        if value not in (None, "")
    ]
    lines += ["", "Details: smi-admin show JOB_ID, or the admin API's /admin/jobs/JOB_ID."]
    message = EmailMessage()
    message["Subject"] = one_line(subject)
    message["From"] = sender
    message["To"] = to
    message["Message-ID"] = message_id(sender, f"seller-{kind}", body["id"], body.get("created"))
    message["X-SMI-Job"] = one_line(body.get("job_id") or "")
    message["X-SMI-Email"] = f"seller-{kind}"
    message.set_content("\n".join(lines) + "\n")
    return message


class SellerNotifier:
    """Sends due notifications; any number of gateway processes may run one."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: SellerConfig,
        mailer: Mailer,
        sender: str,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.mailer = mailer
        self.sender = sender

    def send_due(self) -> int:
        """Try every due notification once; returns how many were tried."""
        claimed = claim_due(
            self.sessions,
            Notification,
            [Notification.sent_at.is_(None), Notification.attempts < self.config.max_attempts],
            lease_s=LEASE_S,
        )
        for row_id in claimed:
            self._send(row_id)
        return len(claimed)

    def _send(self, row_id: int) -> None:
        with self.sessions() as session:
            row = session.get_one(Notification, row_id)
            channel, body = row.channel, row.body
        context = {"notification": row.key, "job_id": row.job_id}
        try:
            if channel == "email":
                if not self.config.email:
                    self._done(row_id, "no SMI_SELLER_EMAIL; not sent")
                    return
                went_to = self.mailer.send(
                    seller_email(json.loads(body), self.sender, self.config.email)
                )
                context["sent_to"] = went_to
            else:
                if not self.config.webhook_url or not self.config.webhook_secret:
                    self._done(row_id, "no SMI_SELLER_WEBHOOK_URL; not sent")
                    return
                self._post(row.key, body.encode())
        except (OSError, smtplib.SMTPException, httpx.HTTPError, SellerWebhookError) as exc:
            self._retry_later(row_id, f"{type(exc).__name__}: {exc}", context)
            return
        log.info("seller notified", extra={**context, "channel": channel})
        self._done(row_id, None)

    def _post(self, key: str, body: bytes) -> None:
        assert self.config.webhook_url and self.config.webhook_secret
        headers = {
            "Content-Type": "application/json",
            "SMI-Signature": sign(body, self.config.webhook_secret, int(time.time())),
            "SMI-Notification-Id": key.removeprefix("webhook:"),
        }
        response = httpx.post(
            self.config.webhook_url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S
        )
        if not 200 <= response.status_code < 300:
            raise SellerWebhookError(f"the seller's endpoint answered {response.status_code}")

    def _done(self, row_id: int, note: str | None) -> None:
        with self.sessions.begin() as session:
            row = session.get_one(Notification, row_id)
            row.attempts += 1
            row.sent_at = utcnow()
            row.next_attempt_at = None
            row.last_error = note

    def _retry_later(self, row_id: int, error: str, context: dict[str, Any]) -> None:
        with self.sessions.begin() as session:
            row = session.get_one(Notification, row_id)
            row.attempts += 1
            row.last_error = error[:500]
            if row.attempts >= self.config.max_attempts:  # never claimed again
                row.next_attempt_at = None
                log.error("seller notification given up: %s", error, extra=context)
                return
            delay = backoff_s(self.config.backoff_s, row.attempts)
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        log.warning("seller notification not sent, will retry: %s", error, extra=context)
