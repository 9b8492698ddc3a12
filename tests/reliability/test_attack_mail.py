"""What an attack on the gateway's email found, each kept shut by a test.

The seller's email: a line break in a buyer's address became lines of its
own. The gateway runs in-process with its background work driven by hand,
against the Stripe emulator through the SDK, on SQLite and PostgreSQL, with
a real SMTP server on loopback (``docs/RELIABILITY.md``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from test_recovery import Loop, hand_driven

from gateway.delivery.mailer import Mailer
from gateway.delivery.seller import SellerNotifier, notify_seller
from gateway.store.tables import Notification
from servers import MailSink, wait_for

CARD = "4242424242424242"


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


def notify(loop: Loop, sink: MailSink) -> int:
    config = loop.stack.config
    mail = dataclasses.replace(config.mail, smtp_url=sink.url)
    seller = dataclasses.replace(config.seller, backoff_s=0)
    return SellerNotifier(loop.sessions, seller, Mailer(mail), mail.sender).send_due()


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
