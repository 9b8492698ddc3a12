"""What an attack on the gateway's email found, each kept shut by a test.

Message ids: every seller email of a kind had the same malformed
``Message-ID``. The seller's email: a line break in a buyer's address became
lines of its own. The gateway runs in-process with its background work driven by hand,
against the Stripe emulator through the SDK, on SQLite and PostgreSQL, with
a real SMTP server on loopback (``docs/RELIABILITY.md``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import parseaddr

import pytest
from sqlalchemy import select, update
from test_recovery import Loop, hand_driven

from gateway.delivery.mailer import Mailer
from gateway.delivery.seller import SellerNotifier, notify_seller
from gateway.store.tables import Notification, OutboxMessage
from servers import MailSink, wait_for
from shared.messages import EventKind
from shared.storage import Storage

CARD = "4242424242424242"
# A msg-id as RFC 5322 writes it: dot-atom-text "@" dot-atom-text, in angle brackets.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID = re.compile(rf"<{ATEXT}(\.{ATEXT})*@{ATEXT}(\.{ATEXT})*>")


@pytest.fixture
def loop(database_url, tmp_path) -> Iterator[Loop]:
    with hand_driven(database_url, tmp_path, SMI_SELLER_EMAIL="seller@shop.test") as hand:
        yield hand


def buy(loop: Loop, language: str = "en", email: str | None = None) -> str:
    """A paid job, bought from a page in ``language`` (with ``email`` on Stripe's page)."""
    body = loop.stack.checkout(language=language).json()
    form = {"email": email} if email else {}
    assert loop.stack.pay(body["checkout_url"], CARD, **form)["outcome"] == "paid"
    wait_for(lambda: loop.stack.status(body["job_id"])["status"] != "awaiting_payment")
    return str(body["job_id"])


def complete(loop: Loop, job_id: str) -> bytes:
    """The worker stores the job's result and says so; the result's bytes."""
    result = f"\x89PNG result of {job_id}".encode()
    Storage(loop.stack.config.storage_url).put(f"jobs/{job_id}/result.png", result)
    loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    return result


def valid_id(message: EmailMessage) -> str:
    """The message's ``Message-ID``, checked as the email package and RFC 5322 read it."""
    header = message["Message-ID"]
    assert header is not None and not header.defects, (str(header), header.defects)
    value = str(header)
    assert MSG_ID.fullmatch(value), value
    assert parseaddr(value)[1] == value[1:-1]
    assert value.endswith("@localhost>")  # the sender's domain (SMI_MAIL_FROM's default)
    return value


def notify(loop: Loop, sink: MailSink) -> int:
    config = loop.stack.config
    mail = dataclasses.replace(config.mail, smtp_url=sink.url)
    seller = dataclasses.replace(config.seller, backoff_s=0)
    return SellerNotifier(loop.sessions, seller, Mailer(mail), mail.sender).send_due()


def test_every_message_has_a_valid_id_of_its_own_kept_when_its_row_is_sent_again(loop):
    one, two = buy(loop), buy(loop)
    for job_id in (one, two):
        complete(loop, job_id)
    with MailSink() as sink:
        assert notify(loop, sink) == 2  # two sales: the seller gets two emails
        sales = sink.of_kind("seller-sale")
        assert len(sales) == 2 and valid_id(sales[0]) != valid_id(sales[1])

        relay = loop.email_relay(sink.url)
        while relay.send_due():
            pass
        customer = [m for m in sink.messages if not m["X-SMI-Email"].startswith("seller-")]
        assert len(customer) == 4  # two confirmations, two completions
        ids = [valid_id(m) for m in customer + sales]
        assert len(set(ids)) == len(ids), ids

        # Each kind of row sent again, as after a crash between sending and marking it
        # sent: the very same message, with the very same id.
        with loop.sessions.begin() as session:
            session.execute(
                update(Notification)
                .where(Notification.job_id == one, Notification.channel == "email")
                .values(sent_at=None, next_attempt_at=None)
            )
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.job_id == one, OutboxMessage.kind == "email:completed")
                .values(published_at=None, next_attempt_at=None)
            )
        before = len(sink.messages)
        assert notify(loop, sink) == 1
        assert relay.send_due() == 1
        resent = sink.messages[before:]
        assert len(resent) == 2
        for message in resent:
            (original,) = [
                m
                for m in customer + sales
                if (m["X-SMI-Email"], m["X-SMI-Job"])
                == (message["X-SMI-Email"], message["X-SMI-Job"])
            ]
            assert valid_id(message) == valid_id(original)


def test_line_breaks_in_notification_values_add_no_line_or_header_to_the_seller_s_email(loop):
    """A buyer's address with CRLF (from Stripe's page) and values with other breaks."""
    evil = "buyer@example.com\r\nBcc: x@evil.example\r\n\r\nYour refund: https://evil.example"
    job_id = buy(loop, email=evil)
    with loop.sessions.begin() as session:
        notify_seller(
            session,
            "dispute_opened",
            "dispute:crafted",
            "job_x\r\nBcc: y@evil.example",
            reason="fraudulent\nRefund now: https://evil.example\u2028Reply-To: z@evil.example",
            customer_email="a@b.example\x85Cc: w@evil.example\x00",
        )
    with MailSink() as sink:
        notify(loop, sink)  # this session queued the webhook's copy too: marked unsent
        (sale,) = sink.of_kind("seller-sale")
        (dispute,) = sink.of_kind("seller-dispute_opened")
    for message in (sale, dispute):
        for name in ("Bcc", "Cc", "Reply-To"):
            assert message[name] is None, name
        assert message["To"] == "seller@shop.test"
        text = message.get_body(("plain",)).get_content()
        lines = text.splitlines()  # as a reader splits them: CR, LF, U+0085, U+2028 ...
        assert not any(re.match(r"\s*(Bcc|Cc|Reply-To|Your refund|Refund now)\b", x) for x in lines)
    sale_text = sale.get_body(("plain",)).get_content()
    assert (
        "customer_email: buyer@example.com\\r\\nBcc: x@evil.example\\r\\n\\r\\nYour refund: "
        "https://evil.example" in sale_text
    )
    assert job_id in sale["Subject"]
    dispute_text = dispute.get_body(("plain",)).get_content()
    assert "reason: fraudulent\\nRefund now: https://evil.example\\u2028Reply-To" in dispute_text
    assert "customer_email: a@b.example\\x85Cc: w@evil.example\\x00" in dispute_text
    assert dispute["Subject"] == (
        "[Sell My Images] ACTION NEEDED: a payment is disputed: job_x\\r\\nBcc: y@evil.example"
    )
    assert dispute["X-SMI-Job"] == "job_x\\r\\nBcc: y@evil.example"
    with loop.sessions() as session:  # every one sent, none stuck
        rows = session.scalars(select(Notification).where(Notification.channel == "email"))
        assert all(row.sent_at for row in rows)
