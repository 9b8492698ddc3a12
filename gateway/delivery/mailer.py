"""Sending the queued customer emails: over SMTP, or as ``.eml`` files in a folder.

    mailer = Mailer(config.mail)             # SMI_SMTP_URL, else SMI_MAIL_DIR
    EmailRelay(sessions, mailer, links).send_due()

The relay claims due ``email:*`` outbox rows (see ``gateway.store.leases``),
renders each from the job as it is now, sends it, and marks it sent. A
failed send is retried with backoff up to ``MAX_SEND_ATTEMPTS`` times. A
crash between sending and marking can send one email twice (with the same
``Message-ID``); nothing can make it be sent zero times.

It also resolves lost-link requests (``link_requests``): the address is
looked up here, after the buyer was answered, and gets one email listing
every download link (``gateway.delivery.emails.links_to_send``), retried
like the others, or nothing.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy.orm import Session, sessionmaker

from gateway.config import GatewayConfig, MailConfig
from gateway.delivery.emails import (
    EMAIL_PREFIX,
    EmailSettings,
    Link,
    forget_link_requests,
    links_to_send,
    render_email,
    render_links_email,
)
from gateway.delivery.links import DownloadLinks
from gateway.store.leases import backoff_s, claim_due
from gateway.store.lifecycle import get_job
from gateway.store.tables import LinkRequest, LinkRequestState, OutboxMessage, utcnow

log = logging.getLogger(__name__)

MAX_SEND_ATTEMPTS = 8
SEND_BACKOFF_S = 5.0
SMTP_TIMEOUT_S = 30.0
SENT, RETRY, GAVE_UP = "sent", "retry", "gave up"
FORGET_EVERY_S = 60.0


class Mailer:
    """Delivers an ``EmailMessage`` to SMTP (``smtp://``, ``smtps://``) or to a folder."""

    def __init__(self, config: MailConfig) -> None:
        self.config = config

    def send(self, message: EmailMessage) -> str:
        """Send it, or raise ``OSError``/``smtplib.SMTPException``; returns where it went
        (the mail server, without credentials, or the file written): what the log says."""
        if self.config.smtp_url:
            self._send_smtp(message, self.config.smtp_url)
            parts = urlsplit(self.config.smtp_url)
            return f"{parts.scheme}://{parts.hostname}:{parts.port or 25}"
        return str(self._write_file(message, self.config.folder))

    @staticmethod
    def _send_smtp(message: EmailMessage, url: str) -> None:
        parts = urlsplit(url)
        options = parse_qs(parts.query)
        host = parts.hostname or "localhost"
        if parts.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host,
                parts.port or 465,
                timeout=SMTP_TIMEOUT_S,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(host, parts.port or 25, timeout=SMTP_TIMEOUT_S)
        with client:
            if options.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"):
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)

    @staticmethod
    def _write_file(message: EmailMessage, folder: Path) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        about = [message["X-SMI-Job"], message["X-SMI-Email"]]  # a links email has no one job
        name = "-".join([stamp, *(str(part) for part in about if part)]) + ".eml"
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.part"  # mail readers never see half a message
        partial.write_bytes(bytes(message))
        partial.replace(folder / name)
        return folder / name


class EmailRelay:
    """Sends due ``email:*`` outbox rows; any number of gateway processes may run one."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        mailer: Mailer,
        links: DownloadLinks,
        settings: EmailSettings,
    ) -> None:
        self.sessions = sessions
        self.mailer = mailer
        self.links = links
        self.settings = settings
        self._forgotten_at = -FORGET_EVERY_S  # lost-link requests done with, deleted now and then

    @classmethod
    def for_config(
        cls, sessions: sessionmaker[Session], config: GatewayConfig, links: DownloadLinks
    ) -> EmailRelay:
        settings = EmailSettings(
            config.mail.sender,
            config.mail.support_email,
            config.recovery.result_retention_days,
        )
        return cls(sessions, Mailer(config.mail), links, settings)

    def send_due(self) -> int:
        """Send every due email once, lost-link emails too; returns how many were tried."""
        return self._send_outbox() + self._send_links()

    def _send_outbox(self) -> int:
        claimed = claim_due(
            self.sessions,
            OutboxMessage,
            [
                OutboxMessage.kind.startswith(EMAIL_PREFIX),
                OutboxMessage.published_at.is_(None),
                OutboxMessage.publish_attempts < MAX_SEND_ATTEMPTS,
            ],
            lease_s=self.mailer.config.lease_s,
        )
        for row_id in claimed:
            try:
                self._send(row_id)
            except Exception as exc:  # one row's surprise must not hold up the others
                log.exception("email could not be handled; given up", extra={"row": row_id})
                self._mark(row_id, error=f"{type(exc).__name__}: {exc}", outcome=GAVE_UP)
        return len(claimed)

    def _send(self, row_id: int) -> None:
        with self.sessions() as session:
            row = session.get_one(OutboxMessage, row_id)
            job = get_job(session, row.job_id)
        kind = json.loads(row.body)["email"]
        context = {"job_id": job.id, "email": kind}
        if not job.customer_email:
            log.warning("no address to email", extra=context)
            self._mark(row_id, error="the customer left no email address", outcome=GAVE_UP)
            return
        extra = {}
        if kind == "completed":
            token, expires = self.links.issue(job.id)
            extra = {
                "download_url": self.links.url(token),
                "download_expires": expires,
            }
        try:
            message = render_email(job, kind, self.settings, attempt=row.attempt, **extra)
        except ValueError as exc:  # an address or header no mail server would take
            log.error("email cannot be made; given up: %s", exc, extra=context)
            self._mark(row_id, error=f"cannot be sent: {exc}", outcome=GAVE_UP)
            return
        try:
            went_to = self.mailer.send(message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("email not sent, will retry: %s", exc, extra=context)
            self._mark(row_id, error=str(exc), outcome=RETRY)
            return
        log.info("email sent to %s", went_to, extra=context)
        self._mark(row_id, outcome=SENT)

    def _mark(self, row_id: int, *, outcome: str, error: str | None = None) -> None:
        """Count the attempt; sent, to be tried again later, or given up (kept for admins)."""
        with self.sessions.begin() as session:
            row = session.get_one(OutboxMessage, row_id)
            row.publish_attempts += 1
            row.last_error = error[:500] if error else None
            if outcome == SENT:
                row.published_at = utcnow()
                row.next_attempt_at = None
            elif outcome == GAVE_UP or row.publish_attempts >= MAX_SEND_ATTEMPTS:
                row.publish_attempts = max(row.publish_attempts, MAX_SEND_ATTEMPTS)
                row.next_attempt_at = None
            else:
                delay = backoff_s(SEND_BACKOFF_S, row.publish_attempts)
                row.next_attempt_at = utcnow() + timedelta(seconds=delay)

    def _send_links(self) -> int:
        if time.monotonic() - self._forgotten_at > FORGET_EVERY_S:
            with self.sessions.begin() as session:
                forget_link_requests(session)
            self._forgotten_at = time.monotonic()
        claimed = claim_due(
            self.sessions,
            LinkRequest,
            [
                LinkRequest.state.in_((LinkRequestState.NEW, LinkRequestState.SENDING)),
                LinkRequest.attempts < MAX_SEND_ATTEMPTS,
            ],
            lease_s=self.mailer.config.lease_s,
        )
        for row_id in claimed:
            try:
                self._send_link_email(row_id)
            except Exception as exc:  # the database away a moment: asked-for mail is not lost
                log.exception("lost-link request could not be handled; will retry")
                self._mark_links(row_id, error=f"{type(exc).__name__}: {exc}", outcome=RETRY)
        return len(claimed)

    def _send_link_email(self, row_id: int) -> None:
        with self.sessions.begin() as session:
            request = session.get(LinkRequest, row_id)
            if request is None:  # erased meanwhile
                return
            nonce = request.nonce
            jobs = links_to_send(session, request)
        if not jobs:
            return  # nobody's address, or its email of the period went already
        links = []
        expires = None
        for job in jobs:
            token, expires = self.links.issue(job.id)
            links.append(Link(job, self.links.url(token)))
        assert expires is not None
        context = {"email": "links", "jobs": len(jobs)}
        try:
            message = render_links_email(links, expires, self.settings, nonce)
        except ValueError as exc:
            log.error("lost-link email cannot be made; given up: %s", exc, extra=context)
            self._mark_links(row_id, error=f"cannot be sent: {exc}", outcome=GAVE_UP)
            return
        try:
            went_to = self.mailer.send(message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("lost-link email not sent, will retry: %s", exc, extra=context)
            self._mark_links(row_id, error=str(exc), outcome=RETRY)
            return
        log.info("lost-link email sent to %s", went_to, extra=context)
        self._mark_links(row_id, outcome=SENT)

    def _mark_links(self, row_id: int, *, outcome: str, error: str | None = None) -> None:
        with self.sessions.begin() as session:
            row = session.get(LinkRequest, row_id)
            if row is None:
                return
            row.attempts += 1
            row.last_error = error[:500] if error else None
            row.next_attempt_at = None
            if outcome == SENT:
                row.state = LinkRequestState.SENT
                row.sent_at = utcnow()
            elif outcome == GAVE_UP or row.attempts >= MAX_SEND_ATTEMPTS:
                row.state = LinkRequestState.GAVE_UP
            else:
                delay = backoff_s(SEND_BACKOFF_S, row.attempts)
                row.next_attempt_at = utcnow() + timedelta(seconds=delay)
