"""Customer emails: queued with the state change that causes them, rendered from templates.

    queue_email(session, job, "completed")        # inside the transaction that completes the job
    message = render_email(job, "completed", context)

Each kind is queued at most once per job (the outbox's unique key, checked
first so the caller's transaction goes on), so duplicate events never send
a second copy. Templates live in ``gateway/templates/emails/``: ``KIND.txt``
and ``KIND.html``, both extending a base that carries the support contact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.lifecycle import add_outbox_message
from gateway.store.tables import Job, OutboxMessage

EMAIL_PREFIX = "email:"
SUBJECTS = {
    "payment_confirmation": "Payment received: your 4x image is on its way",
    "processing": "We are upscaling your image",
    "completed": "Your 4x image is ready to download",
    "refunded": "Your payment has been refunded",
}


def email_kind(kind: str) -> str:
    """The outbox kind for an email kind (``completed`` -> ``email:completed``)."""
    if kind not in SUBJECTS:
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


@dataclass(frozen=True)
class EmailSettings:
    sender: str
    support_email: str


_TEMPLATES = Environment(
    loader=PackageLoader("gateway", "templates/emails"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def render_email(job: Job, kind: str, settings: EmailSettings, **context: Any) -> EmailMessage:
    """The plain-text and HTML email of ``kind`` about ``job``, addressed to its customer."""
    if not job.customer_email:
        raise ValueError(f"job {job.id} has no customer email address")
    values = {
        "job": job,
        "amount": format_amount(job.amount_cents, job.currency),
        "support_email": settings.support_email,
        "size_in": f"{job.width}x{job.height}",
        "size_out": f"{job.width * 4}x{job.height * 4}",
        "download_url": None,
        "download_expires": None,
        **context,
    }
    message = EmailMessage()
    message["Subject"] = SUBJECTS[kind]
    message["From"] = settings.sender
    message["To"] = job.customer_email
    message["Reply-To"] = settings.support_email
    # One id per job and kind: a resend after a crash is recognisably the same message.
    message["Message-ID"] = f"<{job.id}.{kind}@sell-my-images>"
    message["X-SMI-Job"] = job.id
    message["X-SMI-Email"] = kind
    message.set_content(_TEMPLATES.get_template(f"{kind}.txt").render(values))
    message.add_alternative(_TEMPLATES.get_template(f"{kind}.html").render(values), subtype="html")
    return message


def format_amount(cents: int, currency: str) -> str:
    """``1234, "usd"`` -> ``"12.34 USD"``."""
    return f"{cents / 100:.2f} {currency.upper()}"
