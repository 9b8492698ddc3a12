"""After payment: job events, refunds, the watchdog, emails, downloads and the admin API.

The gateway runs in-process with its background threads off, so each part
(event handling, ``Refunder``, ``Watchdog``, ``EmailRelay``) is driven step
by step against SQLite and PostgreSQL, the Stripe emulator through the SDK,
and an SMTP server on loopback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from test_gateway_app import Stack, start_stack

from gateway.background.catch_up import StripeCatchUp
from gateway.background.job_events import apply_job_event
from gateway.background.retention import Retention
from gateway.background.watchdog import Watchdog
from gateway.delivery.emails import EmailSettings
from gateway.delivery.links import DownloadLinks
from gateway.delivery.mailer import EmailRelay, Mailer
from gateway.errors import DownloadExpiredError, DownloadForbiddenError
from gateway.money.payments import Payments
from gateway.money.refunds import Refunder
from gateway.store.lifecycle import audit_trail, expire
from gateway.store.tables import AuditEntry, Job, OutboxMessage, Refund, utcnow
from servers import MailSink, free_port, wait_for
from shared.messages import EventKind, JobEvent, UpscaleRequest
from shared.storage import Storage

TOKEN = "admin-token-0123456789abcdef"
BIN = Path(sys.executable).parent


@dataclass
class Loop:
    """A gateway with its background work driven by hand."""

    stack: Stack
    sessions: object

    def buy(self, card: str = "4242424242424242", **form: str) -> str:
        body = self.stack.checkout().json()
        assert self.stack.pay(body["checkout_url"], card, **form)["outcome"] == "paid"
        wait_for(lambda: self.stack.status(body["job_id"])["status"] != "awaiting_payment")
        return str(body["job_id"])

    def event(self, job_id: str, kind: EventKind, **fields) -> str:
        event = JobEvent(job_id, kind, f"{job_id}:{kind}:{time.monotonic_ns()}", **fields)
        with self.sessions.begin() as session:
            return apply_job_event(session, event)

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            return session.get_one(Job, job_id)

    def audit(self, job_id: str) -> list[AuditEntry]:
        with self.sessions() as session:
            return audit_trail(session, job_id)

    def refunds(self, job_id: str) -> list[Refund]:
        with self.sessions() as session:
            return list(session.scalars(select(Refund).where(Refund.job_id == job_id)))

    def outbox(self, job_id: str) -> list[str]:
        with self.sessions() as session:
            rows = session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id))
            return sorted(f"{row.kind}:{row.attempt}" for row in rows)

    def refunder(self, **changes) -> Refunder:
        recovery = dataclasses.replace(self.stack.config.recovery, **changes)
        return Refunder(self.sessions, Payments(self.stack.config.stripe), recovery)

    def email_relay(self, smtp_url: str | None = None) -> EmailRelay:
        config = self.stack.config
        links = DownloadLinks(config.download_secret, config.public_url, config.download_ttl_s)
        mail = dataclasses.replace(config.mail, smtp_url=smtp_url)
        settings = EmailSettings(mail.sender, mail.support_email)
        return EmailRelay(self.sessions, Mailer(mail), links, settings)

    def admin(self, method: str, path: str, token: str | None = TOKEN, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(
            method, f"{self.stack.gateway}{path}", headers=headers, timeout=30, **kw
        )


@contextmanager
def hand_driven(database_url: str, tmp_path: Path, **extra: str) -> Iterator[Loop]:
    """A gateway whose background work the test drives by hand (``Loop``)."""
    settings = {
        "SMI_BACKGROUND_IN_PROCESS": "false",
        "SMI_ADMIN_TOKEN": TOKEN,
        "SMI_REFUND_BACKOFF_S": "0",
        "SMI_MAIL_DIR": str(tmp_path / "mail"),
        **extra,
    }
    with start_stack(database_url, tmp_path, **settings) as stack:
        yield Loop(stack, stack.sessions())


@pytest.fixture
def loop(database_url, tmp_path) -> Iterator[Loop]:
    with hand_driven(database_url, tmp_path) as hand:
        yield hand


def test_worker_events_drive_the_job_and_queue_each_email_once(loop):
    job_id = loop.buy()
    assert loop.event(job_id, EventKind.STARTED, progress=0.0) == "progress"
    assert loop.event(job_id, EventKind.PROGRESS, progress=0.5) == "progress"
    assert loop.event(job_id, EventKind.STARTED, progress=0.0) == "progress"  # again: no reset
    status = loop.stack.status(job_id)
    assert status["status"] == "processing" and status["progress"] == 0.5
    result = {"result_key": f"jobs/{job_id}/result.png", "progress": 1.0}
    assert loop.event(job_id, EventKind.COMPLETED, **result) == "completed"
    assert loop.event(job_id, EventKind.COMPLETED, **result) == "ignored"
    assert loop.event(job_id, EventKind.PROGRESS, progress=0.7) == "ignored"  # late
    assert loop.event(job_id, EventKind.FAILED, error="late failure") == "ignored"
    assert loop.job(job_id).status == "completed" and not loop.refunds(job_id)
    assert loop.outbox(job_id) == [
        "email:completed:1",
        "email:payment_confirmation:1",
        "email:processing:1",
        "upscale:1",
    ]


def test_three_simultaneous_failure_events_refund_once(loop):
    job_id = loop.buy()
    loop.event(job_id, EventKind.STARTED, progress=0.0)
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken"))

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["failed", "ignored", "ignored"]
    assert loop.job(job_id).status == "refunding"
    (refund,) = loop.refunds(job_id)
    assert refund.idempotency_key == f"refund-{job_id}-1" and refund.status == "pending"

    assert loop.refunder().refund_due() == 1
    assert loop.refunder().refund_due() == 0
    job = loop.job(job_id)
    assert job.status == "refunded" and "refunded" in job.customer_message
    stripe_refunds = loop.stack.stripe.v1.refunds.list(
        {"payment_intent": job.stripe_payment_intent_id}
    ).data
    assert len(stripe_refunds) == 1
    assert stripe_refunds[0].metadata.to_dict() == {
        "job_id": job_id,
        "refund_key": f"refund-{job_id}-1",
        "failure_reason": "CorruptImageError: broken",
    }
    assert loop.refunds(job_id)[0].stripe_refund_id == stripe_refunds[0].id
    assert "email:refunded:1" in loop.outbox(job_id)


def test_stripe_outages_are_retried_and_a_refused_refund_goes_to_admins(loop):
    job_id = loop.buy()
    loop.event(job_id, EventKind.FAILED, error="OutOfMemoryError: (after 3 tries)")
    loop.stack.faults.error_rate = 1.0  # every Stripe call answers 500
    refunder = loop.refunder(refund_max_attempts=2)
    assert refunder.refund_due() == 1
    (refund,) = loop.refunds(job_id)
    assert refund.status == "pending" and refund.attempts == 1 and refund.last_error
    assert loop.job(job_id).status == "refunding"
    assert refunder.refund_due() == 1  # second and last try
    assert loop.job(job_id).status == "refund_failed"
    assert loop.refunds(job_id)[0].status == "failed"
    trail = loop.admin("GET", f"/admin/jobs/{job_id}").json()["audit"]
    assert [e["reason"].startswith("refund attempt") for e in trail].count(True) == 2

    # An admin retries the refund once Stripe is back: a new round, one refund.
    loop.stack.faults.error_rate = 0.0
    response = loop.admin("POST", f"/admin/jobs/{job_id}/refund", json={"reason": "retry"})
    assert response.status_code == 202, response.text
    assert loop.refunder().refund_due() == 1
    assert loop.job(job_id).status == "refunded"
    keys = sorted(r.idempotency_key for r in loop.refunds(job_id))
    assert keys == [f"refund-{job_id}-1", f"refund-{job_id}-2"]
    intent = loop.job(job_id).stripe_payment_intent_id
    assert len(loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data) == 1


def test_a_refund_stripe_refuses_fails_at_once(loop):
    job_id = loop.buy()
    with loop.sessions.begin() as session:  # a payment intent Stripe does not know
        session.execute(
            update(Job).where(Job.id == job_id).values(stripe_payment_intent_id="pi_unknown")
        )
    loop.event(job_id, EventKind.FAILED, error="UnknownModelError: x")
    loop.refunder().refund_due()
    assert loop.job(job_id).status == "refund_failed"
    (refund,) = loop.refunds(job_id)
    assert refund.attempts == 1 and "pi_unknown" in refund.last_error


def test_the_watchdog_republishes_stalled_jobs_then_refunds_them(loop):
    job_id = loop.buy()
    watchdog = Watchdog(loop.sessions, loop.stack.config.recovery)
    assert watchdog.check() == 0  # just paid: not stalled

    def age(seconds: float, **values) -> None:
        with loop.sessions.begin() as session:
            at = utcnow() - timedelta(seconds=seconds)
            session.execute(update(Job).where(Job.id == job_id).values(updated_at=at, **values))

    age(3600)  # paid an hour ago, never started
    assert watchdog.check() == 1
    assert loop.outbox(job_id).count("upscale:2") == 1
    loop.event(job_id, EventKind.STARTED, progress=0.1)
    age(3600, heartbeat_at=utcnow() - timedelta(seconds=3600))  # its worker went silent
    assert watchdog.check() == 1
    assert loop.job(job_id).status == "pending" and "upscale:3" in loop.outbox(job_id)
    with loop.sessions() as session:
        bodies = session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.kind == "upscale")
        ).all()
    assert sorted(UpscaleRequest.from_json(b).attempt for b in bodies) == [1, 2, 3]
    age(3600)  # three publications and still nothing: fail and refund
    assert watchdog.check() == 1
    job = loop.job(job_id)
    assert job.status == "refunding" and "3 attempts" in job.failure_reason
    loop.refunder().refund_due()
    assert loop.job(job_id).status == "refunded"


def test_emails_go_to_smtp_with_retries_and_each_once(loop, caplog):
    job_id = loop.buy()
    down = loop.email_relay(f"smtp://127.0.0.1:{free_port()}")
    assert down.send_due() == 1  # the confirmation: SMTP refuses the connection
    with loop.sessions() as session:
        row = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "email:payment_confirmation")
        ).one()
        assert row.published_at is None and row.publish_attempts == 1 and row.last_error
    with loop.sessions.begin() as session:  # skip the backoff
        session.execute(update(OutboxMessage).values(next_attempt_at=None))
    with MailSink() as sink, caplog.at_level(logging.INFO, logger="gateway.delivery.mailer"):
        up = loop.email_relay(sink.url)
        loop.event(job_id, EventKind.STARTED, progress=0.0)
        loop.event(
            job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png", progress=1.0
        )
        assert up.send_due() == 3
        assert up.send_due() == 0
    server = sink.url.split("@")[-1].removeprefix("smtp://")  # the server, never credentials
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("email sent")]
    assert sent == [f"email sent to smtp://{server}"] * 3
    kinds = sorted(m["X-SMI-Email"] for m in sink.messages)
    assert kinds == ["completed", "payment_confirmation", "processing"]
    completed = sink.of_kind("completed")[0]
    assert completed["Reply-To"] == "support@example.com"
    link = f"{loop.stack.config.public_url}/downloads/"
    assert link in completed.get_body(("plain",)).get_content()


def test_an_email_that_cannot_be_made_is_given_up_and_the_others_go(loop):
    """An address with a line break cannot be sent: recorded once, never retried, not blocking."""
    bad, good = loop.buy(), loop.buy()
    with loop.sessions.begin() as session:
        session.get_one(Job, bad).customer_email = "buyer@example.com\r\nBcc: all@example.com"
    with MailSink() as sink:
        relay = loop.email_relay(sink.url)
        assert relay.send_due() == 2
        assert relay.send_due() == 0  # the bad one is not tried again
    assert [m["X-SMI-Job"] for m in sink.messages] == [good]
    with loop.sessions() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == bad)).all()
        (email,) = [r for r in row if r.kind.startswith("email:")]
        assert email.published_at is None and "cannot be sent" in (email.last_error or "")
    details = loop.admin("GET", f"/admin/jobs/{bad}").json()  # an admin sees why
    assert any("cannot be sent" in (m["last_error"] or "") for m in details["outbox"])


def test_without_smtp_emails_are_written_as_eml_files(loop, tmp_path, caplog):
    loop.buy()
    with caplog.at_level(logging.INFO, logger="gateway.delivery.mailer"):
        assert loop.email_relay(None).send_due() == 1
    (path,) = (tmp_path / "mail").glob("*.eml")
    # The log says where it went: a file, not a customer's inbox.
    assert [r.getMessage() for r in caplog.records] == [f"email sent to {path}"]
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["X-SMI-Email"] == "payment_confirmation"
    assert "$0.50" in message.get_body(("plain",)).get_content()


def test_download_links_are_signed_and_expire(loop):
    job_id = loop.buy()
    result = b"\x89PNG result bytes"
    Storage(loop.stack.config.storage_url).put(f"jobs/{job_id}/result.png", result)
    assert loop.stack.status(job_id, as_buyer=True).get("download_url") is None  # not done yet
    loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    # The job id is no credential: it shows the status, never a link.
    anyone = loop.stack.status(job_id)
    assert anyone["status"] == "completed" and "download_url" not in anyone
    forged = httpx.get(
        f"{loop.stack.gateway}/api/jobs/{job_id}",
        headers={"X-Buyer-Key": "guessed"},
        timeout=30,
    ).json()
    assert "download_url" not in forged
    url = loop.stack.status(job_id, as_buyer=True)["download_url"]
    good = httpx.get(url, timeout=30)
    assert good.status_code == 200 and good.content == result
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    assert httpx.get(tampered, timeout=30).status_code == 403
    assert httpx.get(f"{loop.stack.gateway}/downloads/made-up", timeout=30).status_code == 403

    links = DownloadLinks(loop.stack.config.download_secret, "http://x", ttl_s=1)
    token, _ = links.issue(job_id)
    assert links.job_id(token) == job_id
    time.sleep(2.1)
    with pytest.raises(DownloadExpiredError):
        links.job_id(token)
    with pytest.raises(DownloadForbiddenError):
        DownloadLinks("another secret", "http://x", ttl_s=60).job_id(token)


def test_a_refund_made_at_stripe_ends_the_job_once_and_our_own_echo_changes_nothing(loop):
    """The seller refunds in Stripe's Dashboard: no second refund, no download, one email."""
    job_id = loop.buy()
    Storage(loop.stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG result")
    loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    url = loop.stack.status(job_id, as_buyer=True)["download_url"]
    intent = loop.job(job_id).stripe_payment_intent_id
    stripe = loop.stack.stripe
    stripe.v1.refunds.create({"payment_intent": intent, "amount": 20})  # a part, by hand
    wait_for(lambda: any("refunded 20 of 50 so far" in e.reason for e in loop.audit(job_id)))
    assert loop.job(job_id).status == "completed" and httpx.get(url, timeout=30).status_code == 200
    stripe.v1.refunds.create({"payment_intent": intent})  # the rest, by hand
    wait_for(lambda: loop.job(job_id).status == "refunded")
    assert httpx.get(url, timeout=30).status_code == 410  # the download is revoked
    assert loop.outbox(job_id).count("email:refunded:1") == 1
    assert (
        loop.admin("POST", f"/admin/jobs/{job_id}/refund", json={"reason": "x"}).status_code == 409
    )
    assert len(stripe.v1.refunds.list({"payment_intent": intent}).data) == 2  # none of ours

    # Our own refund of another job: its charge.refunded echo changes nothing more.
    other = loop.buy()
    loop.event(other, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.refunder().refund_due() == 1
    wait_for(lambda: loop.stack.stripe.v1.events.list({"type": "charge.refunded"}).data)
    time.sleep(1)  # the echo's delivery
    (refund,) = loop.refunds(other)
    assert refund.status == "succeeded" and loop.job(other).status == "refunded"
    assert loop.outbox(other).count("email:refunded:1") == 1
    other_intent = loop.job(other).stripe_payment_intent_id
    assert len(stripe.v1.refunds.list({"payment_intent": other_intent}).data) == 1


class TestAdmin:
    @pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef", TOKEN[:-1]])
    def test_without_the_token_nothing_leaks(self, loop, token):
        job_id = loop.buy()
        for method, path in [
            ("GET", "/admin/jobs"),
            ("GET", f"/admin/jobs/{job_id}"),
            ("POST", f"/admin/jobs/{job_id}/retry"),
            ("POST", f"/admin/jobs/{job_id}/refund"),
            ("GET", "/admin/reports/revenue"),
            ("GET", "/admin/reconciliation"),
        ]:
            response = loop.admin(method, path, token=token)
            assert response.status_code == 401, (method, path)
            assert job_id not in response.text and "buyer" not in response.text
        assert loop.job(job_id).status == "pending"

    def test_list_search_show_retry_and_refund(self, loop):
        done, failed = loop.buy(), loop.buy()
        loop.event(done, EventKind.COMPLETED, result_key=f"jobs/{done}/result.png")
        loop.event(failed, EventKind.FAILED, error="WeightsError: missing")
        listed = loop.admin("GET", "/admin/jobs").json()["jobs"]
        assert {j["job_id"] for j in listed} == {done, failed}
        found = loop.admin("GET", "/admin/jobs", params={"q": done[-8:]}).json()["jobs"]
        assert [j["job_id"] for j in found] == [done]
        by_status = loop.admin("GET", "/admin/jobs", params={"status": "completed"}).json()
        assert [j["job_id"] for j in by_status["jobs"]] == [done]
        assert loop.admin("GET", "/admin/jobs/job_nope").status_code == 404

        # A job still refunding cannot be retried; once its refund failed, it can.
        assert loop.admin("POST", f"/admin/jobs/{failed}/retry").status_code == 409
        loop.stack.faults.error_rate = 1.0
        loop.refunder(refund_max_attempts=1).refund_due()
        loop.stack.faults.error_rate = 0.0
        assert loop.job(failed).status == "refund_failed"
        retried = loop.admin("POST", f"/admin/jobs/{failed}/retry")
        assert retried.status_code == 202 and retried.json()["job"]["status"] == "pending"
        assert "upscale:2" in loop.outbox(failed)

        refund = loop.admin("POST", f"/admin/jobs/{done}/refund", json={"reason": "complaint"})
        assert refund.status_code == 202 and refund.json()["job"]["status"] == "refunding"
        assert loop.admin("POST", f"/admin/jobs/{done}/refund").status_code == 409  # in flight
        loop.refunder().refund_due()
        details = loop.admin("GET", f"/admin/jobs/{done}").json()
        assert details["job"]["status"] == "refunded"
        assert details["audit"][-1]["to"] == "refunded"
        assert any(e["source"] == "admin" for e in details["audit"])

    def test_revenue_report_by_day(self, loop):
        refunded, _ = loop.buy(), loop.buy()
        loop.event(refunded, EventKind.FAILED, error="CorruptImageError: x")
        loop.refunder().refund_due()
        today = utcnow().date().isoformat()
        days = loop.admin("GET", "/admin/reports/revenue").json()["days"]
        assert days == [
            {
                "day": today,
                "currency": "usd",
                "payments": 2,
                "gross_cents": 100,
                "refunds": 1,
                "refunded_cents": 50,
                "net_cents": 50,
                "tax_cents": 0,
                "discount_cents": 0,
                "disputed_cents": 0,
                "gross": "$1.00",
                "refunded": "$0.50",
                "net": "$0.50",
                "tax": "$0.00",
                "discount": "$0.00",
                "disputed": "$0.00",
            }
        ]
        csv = loop.admin("GET", "/admin/reports/revenue", params={"format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines() == [
            "day,currency,payments,gross_cents,refunds,refunded_cents,net_cents,tax_cents,"
            "discount_cents,disputed_cents,gross,refunded,net,tax,discount,disputed",
            f"{today},usd,2,100,1,50,50,0,0,0,$1.00,$0.50,$0.50,$0.00,$0.00,$0.00",
        ]
        empty = loop.admin("GET", "/admin/reports/revenue", params={"since": "2099-01-01"})
        assert empty.json()["days"] == []
        bad = loop.admin("GET", "/admin/reports/revenue", params={"since": "yesterday"})
        assert bad.status_code == 400


def test_smi_admin_lists_shows_refunds_and_reports(loop):
    job_id = loop.buy()

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "smi-admin", "--url", loop.stack.gateway, *args],
            env={**os.environ, "SMI_ADMIN_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = admin("jobs", "--status", "pending")
    assert listed.returncode == 0 and job_id in listed.stdout and "pending" in listed.stdout
    assert job_id not in admin("jobs", "--status", "completed").stdout
    shown = admin("show", job_id)
    assert "awaiting_payment -> pending" in " ".join(shown.stdout.split())
    refused = admin("retry", job_id)  # a pending job is not failed
    assert refused.returncode == 2 and "409" in refused.stderr
    refunded = admin("refund", job_id, "--reason", "test")
    assert refunded.returncode == 2 and "cannot be refunded" in refunded.stderr
    report = admin("report", "--format", "csv")
    assert report.stdout.splitlines()[0].startswith("day,currency,payments")
    as_json = json.loads(admin("--json", "jobs").stdout)
    assert [j["job_id"] for j in as_json["jobs"]] == [job_id]
    no_token = subprocess.run(
        [BIN / "smi-admin", "--url", loop.stack.gateway, "jobs"],
        env={k: v for k, v in os.environ.items() if k != "SMI_ADMIN_TOKEN"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_token.returncode == 2 and "SMI_ADMIN_TOKEN" in no_token.stderr


@pytest.fixture
def no_webhooks(database_url, tmp_path) -> Iterator[Loop]:
    """A gateway whose webhooks never arrive, its background work driven by hand."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        yield Loop(stack, stack.sessions())


def pay_without_webhook(loop: Loop) -> str:
    body = loop.stack.checkout().json()
    assert loop.stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
    return str(body["job_id"])


def test_lost_webhooks_are_caught_up_once_from_stripes_event_list(no_webhooks):
    loop = no_webhooks
    jobs = [pay_without_webhook(loop) for _ in range(3)]
    assert {loop.job(job).status for job in jobs} == {"awaiting_payment"}
    catch_up = StripeCatchUp(loop.sessions, Payments(loop.stack.config.stripe))
    assert catch_up.check() == 3
    assert catch_up.check() == 0  # already applied: duplicates change nothing
    for job in jobs:
        assert loop.job(job).status == "pending"
        assert loop.outbox(job) == ["email:payment_confirmation:1", "upscale:1"]
    # A fresh process (a restarted gateway) looks a day back and finds nothing new.
    assert StripeCatchUp(loop.sessions, Payments(loop.stack.config.stripe)).check() == 0


def test_a_payment_that_cannot_be_used_is_refunded_never_kept(no_webhooks):
    """Another amount than the price, or a payment after the job expired: money goes back."""
    loop = no_webhooks
    repriced = loop.stack.checkout().json()
    with loop.sessions.begin() as session:  # the price changed between checkout and payment
        session.get_one(Job, repriced["job_id"]).amount_cents = 75
    expired = loop.stack.checkout().json()
    with loop.sessions.begin() as session:  # our side gave up on it; Stripe's did not
        expire(session, session.get_one(Job, expired["job_id"]), "test", "test", "Expired.")
    for body in (repriced, expired):
        assert loop.stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
    assert StripeCatchUp(loop.sessions, Payments(loop.stack.config.stripe)).check() == 2
    for body, why in ((repriced, "paid 50 usd, the price is 75 usd"), (expired, "expired")):
        job = loop.job(body["job_id"])
        assert job.status == "refunding" and why in (job.failure_reason or "")
        assert "upscale:1" not in loop.outbox(job.id)  # nothing to upscale for that money
    assert loop.refunder().refund_due() == 2
    for body in (repriced, expired):
        (refund,) = loop.refunds(body["job_id"])
        assert refund.status == "succeeded" and refund.amount_cents == 50
        assert loop.job(body["job_id"]).status == "refunded"


def test_an_admin_settles_a_job_whose_webhook_never_came(no_webhooks):
    loop = no_webhooks
    paid = pay_without_webhook(loop)
    unpaid = loop.stack.checkout().json()["job_id"]
    answer = loop.admin("POST", f"/admin/jobs/{paid}/fulfil")
    assert answer.status_code == 202 and answer.json()["job"]["status"] == "pending"
    assert loop.admin("POST", f"/admin/jobs/{paid}/fulfil").status_code == 409  # done already
    refused = loop.admin("POST", f"/admin/jobs/{unpaid}/fulfil")
    assert refused.status_code == 409 and "unpaid" in refused.json()["error"]["message"]
    assert loop.outbox(paid).count("upscale:1") == 1


def test_retention_deletes_unpaid_sources_at_expiry_and_results_after_their_days(loop):
    storage = Storage(loop.stack.config.storage_url)
    unpaid = loop.stack.checkout().json()["job_id"]
    with loop.sessions.begin() as session:  # Stripe's session ran out
        expire(session, session.get_one(Job, unpaid), "test", "test", "Expired.")
    old, recent, waiting = loop.buy(), loop.buy(), loop.buy()
    for job_id in (old, recent):
        storage.put(f"jobs/{job_id}/result.png", b"\x89PNG result")
        loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    with loop.sessions.begin() as session:  # finished 31 days ago
        session.get_one(Job, old).finished_at = utcnow() - timedelta(days=31)
    old_link = loop.stack.status(old, as_buyer=True)["download_url"]
    assert httpx.get(old_link, timeout=30).status_code == 200

    retention = Retention(loop.sessions, storage, retention_days=30)
    assert retention.sweep() == 2 and retention.sweep() == 0
    keys = {job_id: loop.job(job_id) for job_id in (unpaid, old, recent, waiting)}
    assert keys[unpaid].source_deleted_at and keys[old].source_deleted_at
    # The four bought the same photo: stored once, it stays while a job still needs it.
    assert len({job.source_key for job in keys.values()}) == 1
    assert not storage.exists(f"jobs/{old}/result.png") and keys[old].result_deleted_at
    for kept in (recent, waiting):  # not due: both images still there
        assert storage.exists(keys[kept].source_key) and keys[kept].source_deleted_at is None
    assert storage.exists(f"jobs/{recent}/result.png")
    # The old job's links answer 410 and its page offers none; the record stays.
    assert httpx.get(old_link, timeout=30).status_code == 410
    page = loop.stack.status(old, as_buyer=True)
    assert page["status"] == "completed" and "download_url" not in page
    assert page["amount_cents"] == 50
    assert any("retention: source and result deleted" in e.reason for e in loop.audit(old))


def test_the_completion_email_says_until_when_the_image_is_kept(loop):
    job_id = loop.buy()
    Storage(loop.stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG")
    loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    with MailSink() as sink:
        relay = loop.email_relay(sink.url)
        relay.settings = dataclasses.replace(relay.settings, result_retention_days=30)
        relay.send_due()
    (completed,) = [m for m in sink.messages if m["X-SMI-Email"] == "completed"]
    kept = (loop.job(job_id).finished_at + timedelta(days=30)).strftime("%b %-d, %Y")
    assert f"We keep your image until {kept}" in completed.get_body(("plain",)).get_content()


def test_a_buyer_who_lost_the_link_gets_fresh_ones_and_strangers_learn_nothing(loop):
    done, other = loop.buy(), loop.buy()
    Storage(loop.stack.config.storage_url).put(f"jobs/{done}/result.png", b"\x89PNG result")
    loop.event(done, EventKind.COMPLETED, result_key=f"jobs/{done}/result.png")
    with MailSink() as sink:
        relay = loop.email_relay(sink.url)
        relay.send_due()  # the first completion email
        first = len(sink.messages)
        with loop.sessions.begin() as session:  # which went out an hour ago
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.job_id == done)
                .values(created_at=utcnow() - timedelta(hours=1))
            )

        def ask(email: str) -> httpx.Response:
            return httpx.post(f"{loop.stack.gateway}/api/links", json={"email": email}, timeout=30)

        address = str(loop.job(done).customer_email)
        known, unknown = ask(address.upper()), ask("nobody@example.com")
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()  # the same answer whether we know the address
        assert ask("not an address").status_code == 400
        ask(address)  # again at once: nothing more is sent
        relay.send_due()
        resent = sink.messages[first:]
        assert [m["X-SMI-Email"] for m in resent] == ["links"]  # one email, once
        (link,) = (
            line.strip()
            for line in resent[0].get_body(("plain",)).get_content().splitlines()
            if "/downloads/" in line
        )  # the completed job's only
        assert httpx.get(link, timeout=30).content == b"\x89PNG result"
    assert other  # paid, not completed: no link to send


def test_rotating_the_download_secret_keeps_the_links_already_sent(database_url, tmp_path):
    """The new secret signs; the previous one, kept in SMI_DOWNLOAD_SECRET_PREVIOUS, still
    opens the links it signed until they expire; once dropped, they are refused."""
    old, new = "download-secret-old-0123456789", "download-secret-new-0123456789"
    with hand_driven(database_url, tmp_path, SMI_DOWNLOAD_SECRET=old) as before:
        job_id = before.buy()
        Storage(before.stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG")
        before.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
        sent = before.stack.status(job_id, as_buyer=True)["download_url"].rsplit("/", 1)[1]
        buyer_key = before.stack.buyer_keys[job_id]
    rotated = {"SMI_DOWNLOAD_SECRET": new, "SMI_DOWNLOAD_SECRET_PREVIOUS": old}
    with hand_driven(database_url, tmp_path, **rotated) as after:
        assert httpx.get(f"{after.stack.gateway}/downloads/{sent}", timeout=30).status_code == 200
        after.stack.buyer_keys[job_id] = buyer_key
        fresh = after.stack.status(job_id, as_buyer=True)["download_url"].rsplit("/", 1)[1]
        assert DownloadLinks(new, "http://x", ttl_s=60).job_id(fresh) == job_id  # new signs
    with hand_driven(database_url, tmp_path, SMI_DOWNLOAD_SECRET=new) as dropped:
        answer = httpx.get(f"{dropped.stack.gateway}/downloads/{sent}", timeout=30)
        assert answer.status_code == 403


def test_smi_admin_erase_removes_a_customer_s_images_and_data_and_says_what_it_kept(loop):
    storage = Storage(loop.stack.config.storage_url)
    done, busy = loop.buy(), loop.buy()
    storage.put(f"jobs/{done}/result.png", b"\x89PNG result")
    loop.event(done, EventKind.COMPLETED, result_key=f"jobs/{done}/result.png")
    link = loop.stack.status(done, as_buyer=True)["download_url"]
    address = str(loop.job(done).customer_email)
    source = loop.job(done).source_key

    erased = subprocess.run(
        [BIN / "smi-admin", "--url", loop.stack.gateway, "erase", "--email", address.upper()],
        env={**os.environ, "SMI_ADMIN_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The job still in progress is not touched (its delivery or refund is owed) and is named.
    assert erased.returncode == 1, erased.stderr
    assert f"  {done}" in erased.stdout and "still in progress" in erased.stdout
    assert busy in erased.stdout.split("still in progress")[1]
    assert "kept for the financial record: job ids, status and dates; amounts" in erased.stdout

    job = loop.job(done)
    assert job.customer_email is None and job.image_url == "" and job.return_url is None
    assert job.source_deleted_at and not storage.exists(f"jobs/{done}/result.png")
    # The shop's photo, bought by both: stored once, kept for the job still in progress.
    assert loop.job(busy).source_key == source and storage.exists(source)
    assert (job.status, job.amount_cents, job.currency) == ("completed", 50, "usd")
    assert job.stripe_payment_intent_id and loop.refunds(done) == []
    assert httpx.get(link, timeout=30).status_code == 410
    assert loop.job(busy).customer_email == address  # untouched
    assert storage.exists(loop.job(busy).source_key)
    bad = loop.admin("POST", "/admin/erase", json={"email": "nobody"})
    assert bad.status_code == 400
