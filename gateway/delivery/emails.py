"""Customer emails: queued with the state change that causes them, rendered from templates.

    queue_email(session, job, "completed")        # inside the transaction that completes the job
    message = render_email(job, "completed", settings, attempt=1, **context)
    request_links(session, address)               # POST /api/links: one row, whoever asks

Each kind is queued at most once per job (the outbox's unique key, checked
first so the caller's transaction goes on), so duplicate events never send
a second copy. Templates live in ``gateway/templates/emails/``: ``KIND.txt``
and ``KIND.html``, both extending a base that carries the support contact.
Their words come from the buyer's language catalogue (``gateway.languages``),
amounts and dates are written as that language writes them.

A buyer who lost their links asks with an address (``request_links``): the
answer writes one ``link_requests`` row, the same for every address, and
nothing else. The email relay resolves it later (``links_to_send``): one
email listing every completed job of the address, at most once per
``RESEND_EVERY``, or nothing at all.

Every message has a ``Message-ID`` of its own (``message_id``): the same when
one queued row is sent again after a crash, never the same for two rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from functools import partial
from typing import Any, cast

from babel.dates import format_date, format_time
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from gateway.currencies import format_money
from gateway.languages import choose, translate
from gateway.store.lifecycle import add_outbox_message
from gateway.store.tables import (
    Job,
    LinkRequest,
    LinkRequestState,
    OutboxMessage,
    as_utc,
    utcnow,
)
from shared.jobs import JobStatus
from shared.models import scale_of

EMAIL_PREFIX = "email:"
KINDS = ("payment_confirmation", "processing", "completed", "refunded", "refund_failed")
LINKS = "links"  # the lost-link email: every completed job of one address

# A domain as RFC 5322 lets a msg-id's right part be written (a dot-atom).
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9_-]+")
DEFAULT_ID_DOMAIN = "sell-my-images.invalid"


def message_id(sender: str, label: str, *identity: object) -> str:
    """A ``Message-ID`` for the message that ``identity`` names (a queued row's unique key).

    The same identity gives the same id (a row sent again after a crash is
    recognisably the same message); another gives another. The right part
    is the sender's domain when it has one a msg-id may carry.
    """
    digest = hashlib.sha256("\x1f".join(map(str, identity)).encode()).hexdigest()[:32]
    left = _NOT_ATEXT.sub("-", label).strip("-") or "smi"
    domain = parseaddr(sender)[1].rpartition("@")[2].strip().rstrip(".")
    if not _DOMAIN.fullmatch(domain):
        domain = DEFAULT_ID_DOMAIN
    return f"<{left}.{digest}@{domain}>"


MAX_ADDRESS_LENGTH = 320  # the column's width, and RFC 5321's 64 + 1 + 255
_NOT_IN_AN_ADDRESS = re.compile("[\x00-\x20\x7f\ufffd]")


def usable_email(value: object) -> str | None:
    """An address Stripe gave (the buyer typed it there) if mail can be sent to it and the
    database can keep it; else ``None``: the order goes on, and no email is sent."""
    if not isinstance(value, str):
        return None
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(address) > MAX_ADDRESS_LENGTH
        or _NOT_IN_AN_ADDRESS.search(address)
    ):
        return None
    return address


def email_kind(kind: str) -> str:
    """The outbox kind for an email kind (``completed`` -> ``email:completed``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown email {kind!r}")
    return EMAIL_PREFIX + kind


def email_row(job_id: str, kind: str) -> tuple[str, str]:
    """The outbox kind and body that queue one email of ``kind`` about a job."""
    return email_kind(kind), json.dumps({"job_id": job_id, "email": kind})


def queue_email(session: Session, job: Job, kind: str) -> bool:
    """Queue one email about ``job`` unless it was queued before; call with the job locked."""
    outbox_kind, body = email_row(job.id, kind)
    already = session.scalar(
        select(OutboxMessage.id).where(
            OutboxMessage.job_id == job.id, OutboxMessage.kind == outbox_kind
        )
    )
    if already is not None:
        return False
    add_outbox_message(session, job, outbox_kind, body)
    return True


def queue_email_again(session: Session, job: Job, kind: str) -> int:
    """Queue one more email of ``kind`` about ``job`` (a seller's "send the link again"): a
    row of the next attempt, so a message of its own, with a fresh link. Returns the
    attempt. Call with the job locked."""
    outbox_kind, body = email_row(job.id, kind)
    last = session.scalar(
        select(func.max(OutboxMessage.attempt)).where(
            OutboxMessage.job_id == job.id, OutboxMessage.kind == outbox_kind
        )
    )
    attempt = (last or 0) + 1
    add_outbox_message(session, job, outbox_kind, body, attempt=attempt)
    return attempt


@dataclass(frozen=True)
class EmailSettings:
    sender: str
    support_email: str
    result_retention_days: float | None = None  # the completion email says until when


_TEMPLATES = Environment(
    loader=PackageLoader("gateway", "templates/emails"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def _when(moment: datetime, language: str) -> str:
    """A moment as ``language`` writes a date and a time, in UTC."""
    return (
        f"{format_date(moment, 'medium', locale=language)} "
        f"{format_time(moment, 'short', tzinfo=UTC, locale=language)} UTC"
    )


def render_email(
    job: Job, kind: str, settings: EmailSettings, *, attempt: int = 1, **context: Any
) -> EmailMessage:
    """The plain-text and HTML email of ``kind`` about ``job``, addressed to its customer;
    ``attempt`` is its outbox row's (the row's key names the message)."""
    if not job.customer_email:
        raise ValueError(f"job {job.id} has no customer email address")
    language = choose(job.language)
    scale = scale_of(job.model)
    expires = context.pop("download_expires", None)

    def when(moment: datetime) -> str:
        return _when(moment, language)

    kept_until = None
    if settings.result_retention_days and job.finished_at:
        kept_until = when(as_utc(job.finished_at) + timedelta(days=settings.result_retention_days))
    values = {
        "job": job,
        "language": language,
        "t": partial(translate, language),
        "scale": scale,
        "amount": format_money(job.amount_cents, job.currency, language),
        "support_email": settings.support_email,
        "size_in": f"{job.width}×{job.height}",
        "size_out": f"{job.width * scale}×{job.height * scale}",
        "download_url": None,
        "download_expires": when(expires) if expires else None,
        "kept_until": kept_until,
        **context,
    }
    message = EmailMessage()
    message["Subject"] = translate(language, f"email.subject.{kind}", scale=scale)
    message["From"] = settings.sender
    message["To"] = job.customer_email
    message["Reply-To"] = settings.support_email
    # One id per outbox row: a resend after a crash is recognisably the same message.
    message["Message-ID"] = message_id(settings.sender, kind, job.id, kind, attempt)
    message["X-SMI-Job"] = job.id
    message["X-SMI-Email"] = kind
    message.set_content(_TEMPLATES.get_template(f"{kind}.txt").render(values))
    message.add_alternative(_TEMPLATES.get_template(f"{kind}.html").render(values), subtype="html")
    return message


RESEND_EVERY = timedelta(minutes=10)


def request_links(session: Session, address: str) -> None:
    """Ask for the lost-link email of ``address``: one row, written the same way whether or
    not the address has bought anything (the answer must not tell), and nothing read.

    The row is committed before the buyer is answered, so a process that dies
    right after answering loses nothing: the email relay of any process
    resolves it (``links_to_send``).
    """
    session.add(
        LinkRequest(
            address=address.strip().lower(),
            nonce=secrets.token_hex(16),
            state=LinkRequestState.NEW,
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )


def links_to_send(session: Session, request: LinkRequest) -> list[Job]:
    """The jobs whose links ``request`` sends, newest first; none when it sends nothing.

    Call in a transaction with the request claimed. A new request becomes its
    address's email of the period unless the address has no completed job
    left (not deleted), or another request already is (sending or sent within
    ``RESEND_EVERY``): then the request is deleted, and nothing tells.
    """
    jobs = list(
        session.scalars(
            select(Job)
            .where(
                func.lower(Job.customer_email) == request.address,
                Job.status == JobStatus.COMPLETED,
                Job.result_deleted_at.is_(None),
            )
            .order_by(Job.created_at.desc(), Job.id)
            # Locked: two requests for one address resolved at once by two processes
            # take turns, and the second sees the first's decision.
            .with_for_update()
        )
    )
    if request.state == LinkRequestState.NEW:
        already = session.scalar(
            select(LinkRequest.id)
            .where(
                LinkRequest.address == request.address,
                LinkRequest.id != request.id,
                LinkRequest.state.in_((LinkRequestState.SENDING, LinkRequestState.SENT)),
                LinkRequest.decided_at >= utcnow() - RESEND_EVERY,
            )
            .limit(1)
        )
        if jobs and already is None:
            request.state = LinkRequestState.SENDING
            request.decided_at = utcnow()
        else:
            jobs = []
    if not jobs:
        session.delete(request)  # an address of nobody is not kept
    return jobs


def forget_link_requests(session: Session, address: str | None = None) -> int:
    """Delete the requests that no longer hold anything back: those done before the current
    period, or every one of ``address`` (erasing a customer). Returns how many."""
    if address is not None:
        where = LinkRequest.address == address.strip().lower()
    else:
        where = LinkRequest.state.in_((LinkRequestState.SENT, LinkRequestState.GAVE_UP)) & (
            func.coalesce(LinkRequest.decided_at, LinkRequest.created_at) < utcnow() - RESEND_EVERY
        )
    done = cast(CursorResult[Any], session.execute(delete(LinkRequest).where(where)))
    return done.rowcount


@dataclass(frozen=True)
class Link:
    job: Job
    url: str


def render_links_email(
    links: list[Link], expires: datetime, settings: EmailSettings, nonce: str
) -> EmailMessage:
    """The one email that lists every link of a lost-link request, in the newest job's
    language, to the address that job was bought with; ``nonce`` is the request's."""
    if not links or not links[0].job.customer_email:
        raise ValueError("no job with an address to send links to")
    newest = links[0].job
    language = choose(newest.language)
    orders = []
    for link in links:
        scale = scale_of(link.job.model)
        orders.append(
            {
                "id": link.job.id,
                "url": link.url,
                "size_in": f"{link.job.width}×{link.job.height}",
                "size_out": f"{link.job.width * scale}×{link.job.height * scale}",
                "amount": format_money(link.job.amount_cents, link.job.currency, language),
            }
        )
    values = {
        "language": language,
        "t": partial(translate, language),
        "support_email": settings.support_email,
        "orders": orders,
        "download_expires": _when(expires, language),
    }
    message = EmailMessage()
    message["Subject"] = translate(language, f"email.subject.{LINKS}")
    message["From"] = settings.sender
    message["To"] = newest.customer_email
    message["Reply-To"] = settings.support_email
    message["Message-ID"] = message_id(settings.sender, LINKS, LINKS, nonce)
    message["X-SMI-Email"] = LINKS
    message.set_content(_TEMPLATES.get_template(f"{LINKS}.txt").render(values))
    message.add_alternative(_TEMPLATES.get_template(f"{LINKS}.html").render(values), subtype="html")
    return message
