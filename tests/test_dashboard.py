"""The seller's dashboard through the real app: who may enter, what each role may do, what
the pages find and count, and that every change is audited with who made it.

A gateway on SQLite and PostgreSQL with its background work driven by hand
(``test_recovery.hand_driven``), the Stripe emulator through the SDK, and a
seller's browser played by an HTTP client that keeps its cookie and sends
each form's token, as a browser does. The same in Chromium:
``tests/test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from html import unescape
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select, update
from test_gateway_app import start_stack
from test_recovery import BIN, TOKEN, Loop, hand_driven

from devtools.shop_history import write_history
from gateway.dashboard.charts import bar_chart, line_chart, nice_ceiling
from gateway.dashboard.overview import read_overview
from gateway.store.accounts import PERMISSIONS, reset_password
from gateway.store.orders import OrderQuery, matched_as, search_orders
from gateway.store.tables import (
    Job,
    Payment,
    SellerSession,
    SignInFailure,
    utcnow,
)
from shared.messages import EventKind
from shared.storage import Storage
from upscaler.output.images import encode_image

PASSWORD = "correct horse battery"


class Seller:
    """A seller's browser: it keeps the session cookie and sends the token of the last page
    it read with each form, from the dashboard's own origin."""

    def __init__(self, gateway: str, **headers: str) -> None:
        self.gateway = gateway
        self.client = httpx.Client(
            base_url=gateway, follow_redirects=False, timeout=60, headers=headers
        )
        self.csrf = ""

    def get(self, path: str, **kw) -> httpx.Response:
        answer = self.client.get(path, **kw)
        found = re.search(r'name="csrf" value="([^"]+)"', answer.text)
        if found:
            self.csrf = found.group(1)
        return answer

    def post(self, path: str, origin: str | None = "", **form: str) -> httpx.Response:
        headers = {"Origin": self.gateway if origin == "" else origin} if origin is not None else {}
        return self.client.post(path, data={"csrf": self.csrf, **form}, headers=headers)

    def sign_in(self, email: str, password: str) -> httpx.Response:
        return self.post("/dashboard/sign-in", email=email, password=password, next="/dashboard/")

    def text(self, path: str) -> str:
        answer = self.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        return unescape(answer.text)


def add_account(loop: Loop, email: str, role: str) -> str:
    """An account made through the admin API (what ``smi-admin users add`` does); its
    one-time password."""
    answer = loop.admin("POST", "/admin/users", json={"email": email, "role": role})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["password"])


def signed_in(loop: Loop, email: str, role: str = "owner", **headers: str) -> Seller:
    """A browser signed in as a new account that has chosen its own password."""
    seller = Seller(loop.stack.gateway, **headers)
    assert seller.sign_in(email, add_account(loop, email, role)).status_code == 303
    seller.get("/dashboard/password")
    changed = seller.post("/dashboard/password", new=PASSWORD, repeat=PASSWORD)
    assert changed.status_code == 303 and changed.headers["location"] == "/dashboard/?done=password"
    return seller


def completed(loop: Loop, result: bytes | None = None) -> str:
    """A paid job its worker completed, its result stored."""
    job_id = loop.buy()
    key = f"jobs/{job_id}/result.png"
    image = result or encode_image(np.full((80, 120, 3), 200, np.uint8), "png")
    Storage(loop.stack.config.storage_url).put(key, image)
    loop.event(job_id, EventKind.STARTED, progress=0.0)
    loop.event(job_id, EventKind.COMPLETED, result_key=key, progress=1.0)
    return job_id


def audit_sources(loop: Loop, job_id: str) -> list[tuple[str, str]]:
    return [(entry.reason, entry.source) for entry in loop.audit(job_id)]


def by(loop: Loop, job_id: str, source: str, reason: str) -> bool:
    """Whether the job's audit trail has a row from ``source`` whose reason says ``reason``."""
    return any(reason in why and who == source for why, who in audit_sources(loop, job_id))


def emails_of(folder: Path, job_id: str, kind: str) -> list:
    parse = BytesParser(policy=policy.default).parsebytes
    found = [parse(path.read_bytes()) for path in sorted(folder.glob("*.eml"))]
    return [m for m in found if m["X-SMI-Job"] == job_id and m["X-SMI-Email"] == kind]


@pytest.fixture
def loop(database_url, tmp_path) -> Iterator[Loop]:
    with hand_driven(database_url, tmp_path) as hand:
        yield hand


@pytest.fixture
def limited(database_url, tmp_path) -> Iterator[Loop]:
    """A gateway with small sign-in limits, whose rate limits believe X-Forwarded-For."""
    settings = {
        "SMI_SIGN_IN_MAX_FAILURES": "3",
        "SMI_SIGN_IN_MAX_FAILURES_PER_ADDRESS": "5",
        "SMI_TRUSTED_PROXIES": "127.0.0.1",
        "SMI_SUPPORT_REFUND_LIMIT": "40",
    }
    with hand_driven(database_url, tmp_path, **settings) as hand:
        yield hand


def test_smi_admin_manages_the_accounts_and_a_one_time_password_opens_one_session(loop):
    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "smi-admin", "--url", loop.stack.gateway, *args],
            env={**os.environ, "SMI_ADMIN_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = admin("users", "add", "Ann@Shop.example", "--role", "owner")
    assert added.returncode == 0, added.stderr
    password = re.search(r"one-time password (\S+)", added.stdout).group(1)
    assert "ann@shop.example (owner)" in added.stdout
    assert "one-time password" in admin("users").stdout

    ann = Seller(loop.stack.gateway)
    answer = ann.sign_in("ann@shop.example", password)
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/password"
    # Nothing opens before the account has a password of its own.
    for path in ("/dashboard/", "/dashboard/orders", "/dashboard/settings"):
        assert ann.get(path).headers["location"] == "/dashboard/password"
    # The one-time password is spent: it opens no second session.
    assert Seller(loop.stack.gateway).sign_in("ann@shop.example", password).status_code == 401
    ann.get("/dashboard/password")
    assert ann.post("/dashboard/password", new="short", repeat="short").status_code == 400
    assert ann.post("/dashboard/password", new=PASSWORD, repeat=PASSWORD).status_code == 303
    assert ann.get("/dashboard/").status_code == 200
    listed = json.loads(admin("--json", "users").stdout)["users"]
    assert [(u["email"], u["role"], u["sessions"]) for u in listed] == [
        ("ann@shop.example", "owner", 1)
    ]

    assert admin("users", "add", "ann@shop.example").returncode == 2  # 409: taken
    reset = admin("users", "reset", "ann@shop.example")
    assert reset.returncode == 0 and "one-time password" in reset.stdout
    # A reset ends the account's sessions: the old cookie opens nothing.
    assert ann.get("/dashboard/").headers["location"].startswith("/dashboard/sign-in")
    refused = admin("users", "remove", "ann@shop.example")
    assert refused.returncode == 2 and "last owner" in refused.stderr
    assert admin("users", "add", "bob@shop.example", "--role", "support").returncode == 0
    assert admin("users", "reset", "nobody@shop.example").returncode == 2  # 404
    assert admin("users", "remove", "bob@shop.example").returncode == 0
    assert [u["email"] for u in json.loads(admin("--json", "users").stdout)["users"]] == [
        "ann@shop.example"
    ]
    # The API itself answers nothing without the token.
    assert loop.admin("GET", "/admin/users", token=None).status_code == 401


def test_the_session_cookie_is_http_only_strict_and_ends(database_url, tmp_path):
    settings = {"SMI_DASHBOARD_IDLE_MINUTES": "5", "SMI_DASHBOARD_SESSION_HOURS": "2"}
    with hand_driven(database_url, tmp_path, **settings) as loop:
        seller = signed_in(loop, "ann@shop.example")
        cookie = seller.client.cookies.jar
        (kept,) = [c for c in cookie if c.name == "smi_dashboard"]
        assert kept.path == "/dashboard" and not kept.secure  # loopback: no TLS here
        assert kept.has_nonstandard_attr("HttpOnly")
        assert kept.get_nonstandard_attr("SameSite").lower() == "strict"
        assert 7100 < kept.expires - utcnow().timestamp() <= 7200

        # Reached by a name that is not loopback: Secure, and a name only https may set.
        far = Seller(loop.stack.gateway, Host="dashboard.shop.example")
        far.gateway = "http://dashboard.shop.example"
        warned = unescape(far.get("/dashboard/sign-in").text)  # SMI_PUBLIC_URL is not https
        assert "not secured with HTTPS, so your browser will not keep the sign-in" in warned
        assert "not secured" not in seller.text("/dashboard/sign-in")  # loopback: no TLS needed
        answer = far.sign_in("ann@shop.example", PASSWORD)
        assert answer.status_code == 303
        header = answer.headers["set-cookie"]
        assert header.startswith("__Secure-smi_dashboard=") and "Secure" in header
        assert "HttpOnly" in header and "SameSite=strict" in header

        def age(**values) -> None:
            with loop.sessions.begin() as session:
                session.execute(update(SellerSession).values(**values))

        assert seller.get("/dashboard/").status_code == 200
        age(last_seen_at=utcnow() - timedelta(minutes=6))  # idle too long
        assert seller.get("/dashboard/").headers["location"].startswith("/dashboard/sign-in")
        again = Seller(loop.stack.gateway)
        again.sign_in("ann@shop.example", PASSWORD)
        assert again.get("/dashboard/").status_code == 200
        age(expires_at=utcnow() - timedelta(seconds=1))  # past its lifetime, however busy
        assert again.get("/dashboard/").status_code == 303
        third = Seller(loop.stack.gateway)
        third.sign_in("ann@shop.example", PASSWORD)
        stolen = third.client.cookies["smi_dashboard"]
        third.get("/dashboard/")
        assert third.post("/dashboard/sign-out").status_code == 303
        # Signed out is ended on the server: a copy of the cookie opens nothing.
        copy = httpx.get(
            f"{loop.stack.gateway}/dashboard/", cookies={"smi_dashboard": stolen}, timeout=30
        )
        assert copy.status_code == 303 and "sign-in" in copy.headers["location"]


def test_failed_sign_ins_lock_the_account_then_the_address(limited):
    loop = limited
    add_account(loop, "ann@shop.example", "owner")
    browser = Seller(loop.stack.gateway, **{"X-Forwarded-For": "198.51.100.7"})
    wrong = browser.sign_in("ann@shop.example", "not the password")
    assert wrong.status_code == 401
    # An address with no account is answered the same, and counts the same.
    stranger = browser.sign_in("nobody@shop.example", "not the password")
    assert stranger.status_code == 401
    assert "The email address or the password is not right." in unescape(stranger.text)
    for _ in range(2):
        assert browser.sign_in("ann@shop.example", "still wrong").status_code == 401
    with loop.sessions() as session:
        locked = session.get_one(SignInFailure, "account:ann@shop.example")
        assert locked.failures == 3 and locked.locked_until is not None
    with loop.sessions.begin() as session:  # a fresh one-time password, while locked
        password = reset_password(session, "ann@shop.example")
    elsewhere = Seller(loop.stack.gateway, **{"X-Forwarded-For": "203.0.113.50"})
    answer = elsewhere.sign_in("ann@shop.example", "wrong again")
    assert answer.status_code == 401  # a reset clears the account's lock
    for _ in range(2):
        elsewhere.sign_in("ann@shop.example", "wrong again")
    locked_out = elsewhere.sign_in("ann@shop.example", password)
    assert locked_out.status_code == 429 and int(locked_out.headers["retry-after"]) > 800
    assert "Too many failed sign-ins" in unescape(locked_out.text)

    # The first address has five failures now (four on ann, one on nobody): it is locked
    # for every account.
    add_account(loop, "bob@shop.example", "owner")
    with loop.sessions() as session:
        assert session.get_one(SignInFailure, "address:198.51.100.7").failures == 4
    browser.sign_in("bob@shop.example", "wrong")
    carols = add_account(loop, "carol@shop.example", "owner")
    assert browser.sign_in("carol@shop.example", carols).status_code == 429
    fresh = Seller(loop.stack.gateway, **{"X-Forwarded-For": "192.0.2.1"})
    assert fresh.sign_in("carol@shop.example", carols).status_code == 303
    # A lock ends when its time is up.
    with loop.sessions.begin() as session:
        session.execute(
            update(SignInFailure).values(
                locked_until=utcnow() - timedelta(seconds=1),
                first_at=utcnow() - timedelta(hours=1),
            )
        )
    assert elsewhere.sign_in("ann@shop.example", password).status_code == 303


def test_a_change_needs_the_session_s_form_token_and_our_origin(loop):
    job_id = completed(loop)
    loop.email_relay().send_due()  # the link went out once
    owner = signed_in(loop, "ann@shop.example")
    owner.get(f"/dashboard/orders/{job_id}")
    token = owner.csrf

    def refused(answer: httpx.Response) -> None:
        assert answer.status_code == 403, answer.text[:300]
        assert "did not come from the dashboard" in unescape(answer.text)

    owner.csrf = ""
    refused(owner.post(f"/dashboard/orders/{job_id}/resend"))  # no token
    owner.csrf = "0" * 64
    refused(owner.post(f"/dashboard/orders/{job_id}/resend"))  # a made-up one
    other = signed_in(loop, "bob@shop.example")
    other.get("/dashboard/")
    owner.csrf = other.csrf
    refused(owner.post(f"/dashboard/orders/{job_id}/resend"))  # another session's
    owner.csrf = token
    refused(owner.post(f"/dashboard/orders/{job_id}/resend", origin="http://shop.test"))
    refused(owner.post(f"/dashboard/orders/{job_id}/resend", origin="null"))
    # A read another origin's page asks for with the cookie is refused; a link followed
    # from elsewhere opens the page.
    refused(owner.get("/dashboard/orders", headers={"Sec-Fetch-Site": "same-site"}))
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert owner.get("/dashboard/orders", headers=navigate).status_code == 200
    assert loop.outbox(job_id).count("email:completed:2") == 0  # nothing got through
    done = owner.post(f"/dashboard/orders/{job_id}/resend")
    assert done.status_code == 303 and done.headers["location"].endswith("?done=resend")
    assert "email:completed:2" in loop.outbox(job_id)


def test_support_refunds_up_to_its_limit_and_never_erases_or_sees_the_settings(limited):
    loop = limited  # a support account refunds at most 40 cents; a job costs 50
    job_id = completed(loop)
    support = signed_in(loop, "sam@shop.example", "support")
    page = support.text(f"/dashboard/orders/{job_id}")
    assert "Support accounts refund at most $0.40" in page
    answer = support.post(f"/dashboard/orders/{job_id}/refund", reason="asked", confirm="yes")
    assert answer.status_code == 403
    assert "a support account refunds at most $0.40; this refund is $0.50" in unescape(answer.text)
    assert loop.refunds(job_id) == [] and loop.job(job_id).status == "completed"
    for path in ("/dashboard/settings", "/dashboard/accounts", "/dashboard/erase"):
        assert support.get(path).status_code == 403, path
    nav = support.text("/dashboard/")
    assert "/dashboard/settings" not in nav and "/dashboard/erase" not in nav
    erased = support.post("/dashboard/erase", email="x@example.com", confirm="x@example.com")
    assert erased.status_code == 403
    assert (
        support.post("/dashboard/accounts", email="eve@x.example", role="owner").status_code == 403
    )

    owner = signed_in(loop, "ann@shop.example")
    owner.get(f"/dashboard/orders/{job_id}")
    missing = owner.post(f"/dashboard/orders/{job_id}/refund", reason="asked")  # no tick
    assert missing.status_code == 400 and loop.refunds(job_id) == []
    done = owner.post(f"/dashboard/orders/{job_id}/refund", reason="asked", confirm="yes")
    assert done.status_code == 303
    (refund,) = loop.refunds(job_id)
    assert refund.amount_cents == 50 and refund.reason.startswith("asked")
    assert by(loop, job_id, "seller:ann@shop.example", "asked")


def test_support_refunds_what_fits_its_limit(database_url, tmp_path):
    with hand_driven(database_url, tmp_path, SMI_SUPPORT_REFUND_LIMIT="50") as loop:
        job_id = completed(loop)
        support = signed_in(loop, "sam@shop.example", "support")
        support.get(f"/dashboard/orders/{job_id}")
        answer = support.post(f"/dashboard/orders/{job_id}/refund", reason="late", confirm="yes")
        assert answer.status_code == 303
        assert loop.refunder().refund_due() == 1
        assert loop.job(job_id).status == "refunded"
        assert by(loop, job_id, "seller:sam@shop.example", "late")


def test_orders_are_found_by_every_kind_of_identifier_and_paged(loop):
    with loop.sessions() as session:
        engine = session.get_bind()
    history = write_history(engine, 130, days=20, customers=40, seed=3)
    bought = completed(loop)
    owner = signed_in(loop, "ann@shop.example")
    job = loop.job(bought)
    with loop.sessions() as session:  # a charge id, as a refund or dispute event records it
        charged, charge = session.execute(
            select(Payment.job_id, Payment.stripe_charge_id).where(
                Payment.stripe_charge_id.is_not(None)
            )
        ).first()

    def found(**params: str) -> list[str]:
        page = owner.text("/dashboard/orders?" + "&".join(f"{k}={v}" for k, v in params.items()))
        return re.findall(r'<a href="/dashboard/orders/(job_[^"]+)">', page)

    assert found(q=job.customer_email.upper()) == [bought]  # whatever its case
    assert found(q=bought) == [bought]
    assert found(q=job.stripe_session_id) == [bought]
    assert found(q=job.stripe_payment_intent_id) == [bought]
    assert found(q=charge) == [charged]
    assert found(q="job_nothing_like_this") == []
    someone = history.emails[0].lower()
    theirs = [
        j for j, e in zip(history.job_ids, history.emails, strict=True) if e.lower() == someone
    ]
    assert sorted(found(q=someone)) == sorted(
        j
        for j in theirs
        if loop.job(j).customer_email  # the unpaid ones have no address
    )
    today = utcnow().date().isoformat()
    assert bought in found(q=today)
    refunded = found(status="refunded")
    assert refunded and all(loop.job(j).status == "refunded" for j in refunded)
    assert all(loop.job(j).model == "RealESRGAN_x2plus" for j in found(model="RealESRGAN_x2plus"))
    assert found(q="photos/1") and all(
        "photos/1" in loop.job(j).image_url for j in found(q="photos/1")
    )

    # Pages of 50, newest first: every job once, none twice.
    with loop.sessions() as session:
        pages, cursor = [], None
        while True:
            page = search_orders(session, OrderQuery(older_than=cursor))
            pages.append(page.orders)
            cursor = page.older
            if cursor is None:
                break
    seen = [j.id for page in pages for j in page]
    assert len(seen) == len(set(seen)) == 131 and [len(p) for p in pages] == [50, 50, 31]
    stamps = [j.created_at for page in pages for j in page]
    assert stamps == sorted(stamps, reverse=True)
    assert matched_as("2026-11-26") == "day" and matched_as("py_1") == "charge"
    assert matched_as("dp_1") == "dispute" and matched_as("lake") == "text"


def test_the_overview_counts_the_money_and_lists_what_needs_a_person(database_url, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"model": "RealESRGAN_x4plus", "input_megapixels_per_s": 0.05}))
    settings = {"SMI_GPU_COST_PER_HOUR": "300", "SMI_BENCH_FILES": str(bench)}
    with hand_driven(database_url, tmp_path, **settings) as loop:
        _, refunded, delivered, failing = (completed(loop) for _ in range(4))
        owner = signed_in(loop, "ann@shop.example")
        owner.get(f"/dashboard/orders/{refunded}")
        owner.post(f"/dashboard/orders/{refunded}/refund", reason="asked", confirm="yes")
        loop.refunder().refund_due()
        loop.stack.faults.error_rate = 1.0  # Stripe down: this refund gives up
        owner.get(f"/dashboard/orders/{failing}")
        owner.post(f"/dashboard/orders/{failing}/refund", reason="asked", confirm="yes")
        loop.refunder(refund_max_attempts=1).refund_due()
        loop.stack.faults.error_rate = 0.0
        pending = loop.buy()  # paid, and no worker has taken it for an hour
        with loop.sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == pending)
                .values(updated_at=utcnow() - timedelta(hours=1))
            )
        with loop.sessions() as session:
            overview = read_overview(session, loop.stack.config)
        today = overview.periods["today"]
        assert (today.sales, today.revenue) == (5, 250)
        assert (today.refunds, today.refunded, today.net) == (1, 50, 200)
        # Five paid jobs of 120x80 (480x320 out: 0.77 MP together) at 1.25 s of a 300-cent
        # GPU hour per output MP: 0.08 cents, rounded up to one for the day and model.
        assert today.cost == 1 and today.margin == 199
        # Two jobs are still delivered (one was refunded, one's refund failed).
        assert overview.periods["30d"].sales == 5 and overview.days[-1].totals.jobs_done == 2
        assert overview.days[-1].p50_s is not None and overview.days[-1].p95_s is not None
        assert [job.id for job in overview.attention.refunds_failed] == [failing]
        assert [(job.id, why) for job, why in overview.attention.stuck] == [(pending, "pending")]

        page = owner.text("/dashboard/")
        assert f'href="/dashboard/orders/{failing}"' in page and "Refund failed" in page
        assert f'href="/dashboard/orders/{pending}"' in page
        assert "$2.50" in page and "$1.99" in page  # revenue, margin
        assert page.count('<svg class="chart"') == 3
        assert f'href="/dashboard/orders/{delivered}"' not in page  # needs nobody


def test_every_action_is_recorded_with_who_asked(database_url, tmp_path):
    with hand_driven(database_url, tmp_path, SMI_MAIL_DIR=str(tmp_path / "mail")) as loop:
        job_id = completed(loop)
        failed = loop.buy()
        loop.stack.faults.error_rate = 1.0
        loop.event(failed, EventKind.FAILED, error="CorruptImageError: broken")
        loop.refunder(refund_max_attempts=1).refund_due()
        loop.stack.faults.error_rate = 0.0
        assert loop.job(failed).status == "refund_failed"
        owner = signed_in(loop, "ann@shop.example")
        who = "seller:ann@shop.example"

        owner.get(f"/dashboard/orders/{failed}")
        assert owner.post(f"/dashboard/orders/{failed}/retry").status_code == 303
        assert by(loop, failed, who, "retried")

        relay = loop.email_relay()
        relay.send_due()
        owner.get(f"/dashboard/orders/{job_id}")
        assert owner.post(f"/dashboard/orders/{job_id}/resend").status_code == 303
        # The last copy is not sent yet: no second one on top of it.
        again = owner.post(f"/dashboard/orders/{job_id}/resend")
        assert again.status_code == 409 and "still being sent" in unescape(again.text)
        relay.send_due()
        sent = emails_of(tmp_path / "mail", job_id, "completed")
        assert len(sent) == 2 and sent[0]["Message-ID"] != sent[1]["Message-ID"]
        for message in sent:  # each with a link signed when it was sent
            assert "/downloads/" in message.get_body(("plain",)).get_content()
        assert ("download link sent again (email 2)", who) in audit_sources(loop, job_id)

        event = loop.admin("GET", f"/admin/events?job={job_id}").json()["events"][0]
        owner.get(f"/dashboard/events/{event['event_id']}")
        replayed = owner.post(f"/dashboard/events/{event['event_id']}/replay")
        assert replayed.status_code == 303 and "done=" in replayed.headers["location"]
        assert "Replayed: no change." in owner.text(replayed.headers["location"])
        # The page says only what a replay can answer, never words put in a link.
        assert "Replayed" not in owner.text(f"/dashboard/events/{event['event_id']}?done=pwned")
        assert any(
            reason.startswith(f"Stripe event {event['event_id']} replayed") and source == who
            for reason, source in audit_sources(loop, job_id)
        )

        email = loop.job(job_id).customer_email
        owner.get("/dashboard/erase")
        mistyped = owner.post("/dashboard/erase", email=email, confirm="someone@else.example")
        assert mistyped.status_code == 400 and loop.job(job_id).customer_email == email
        owner.get("/dashboard/erase")
        erased = owner.post("/dashboard/erase", email=email, confirm=email.upper())
        assert erased.status_code == 200 and job_id in erased.text
        assert loop.job(job_id).customer_email is None
        assert ("erasure asked", who) in audit_sources(loop, job_id)


def test_a_job_whose_webhook_never_came_is_settled_from_the_dashboard(database_url, tmp_path):
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        assert stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
        owner = signed_in(loop, "ann@shop.example")
        page = owner.text(f"/dashboard/orders/{body['job_id']}")
        assert "Ask Stripe whether it is paid" in page
        answer = owner.post(f"/dashboard/orders/{body['job_id']}/fulfil")
        assert answer.status_code == 303
        assert loop.job(body["job_id"]).status == "pending"
        assert ("settled from Stripe", "seller:ann@shop.example") in audit_sources(
            loop, body["job_id"]
        )
        owner.get(f"/dashboard/orders/{body['job_id']}")
        assert owner.post(f"/dashboard/orders/{body['job_id']}/fulfil").status_code == 409


def test_the_order_page_shows_the_images_until_they_are_erased(loop):
    job_id = completed(loop)
    owner = signed_in(loop, "ann@shop.example")
    page = owner.text(f"/dashboard/orders/{job_id}")
    for which in ("source", "result"):
        assert f"/dashboard/orders/{job_id}/{which}.jpg" in page
        answer = owner.get(f"/dashboard/orders/{job_id}/{which}.jpg")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert answer.content.startswith(b"\xff\xd8")
    assert (
        httpx.get(f"{loop.stack.gateway}/dashboard/orders/{job_id}/result.jpg").status_code == 303
    )
    owner.get("/dashboard/erase")
    email = loop.job(job_id).customer_email
    owner.post("/dashboard/erase", email=email, confirm=email)
    for which in ("source", "result"):
        assert owner.get(f"/dashboard/orders/{job_id}/{which}.jpg").status_code == 404
    assert "Deleted" in owner.text(f"/dashboard/orders/{job_id}")


def test_the_settings_say_what_live_mode_lacks_and_show_no_secret(database_url, tmp_path):
    settings = {
        "SMI_SMTP_URL": "smtp://mailer:smtp-secret-pw@127.0.0.1:2525",
        "SMI_METRICS_TOKEN": "metrics-token-0123456789",
        "SMI_SUPPORT_REFUND_LIMIT": "500",
    }
    with hand_driven(database_url, tmp_path, **settings) as loop:
        owner = signed_in(loop, "ann@shop.example")
        page = owner.text("/dashboard/settings")
        for secret in ("smtp-secret-pw", "mailer", TOKEN, "metrics-token-0123456789", "sk_test"):
            assert secret not in page
        assert "smtp://127.0.0.1:2525" in page and "$5.00" in page
        assert "SMI_STRIPE_LIVE_SECRET_KEY is required in live mode" in page
        assert "SMI_STRIPE_API_BASE (an emulator) is refused in live mode" in page
        assert "RealESRGAN_x4plus" in page


def test_the_pages_speak_the_seller_s_language(loop):
    completed(loop)
    owner = signed_in(loop, "ann@shop.example", **{"Accept-Language": "fr-CA,fr;q=0.9"})
    page = owner.text("/dashboard/orders")
    assert '<html lang="fr">' in page and "Commandes" in page and "0,50" in page
    chosen = owner.get("/dashboard/language?lang=ja&next=/dashboard/orders")
    assert chosen.status_code == 303 and chosen.headers["location"] == "/dashboard/orders"
    assert "注文" in owner.text("/dashboard/orders")
    outside = owner.get("/dashboard/language?lang=de&next=https://evil.example/")
    assert outside.headers["location"] == "/dashboard/"  # never another site


def test_the_fleet_page_reads_what_metrics_measures(loop):
    job_id = completed(loop)
    waiting = loop.buy()
    owner = signed_in(loop, "ann@shop.example")
    page = owner.text("/dashboard/fleet")
    worker = next(s for _, s in audit_sources(loop, job_id) if s.startswith("worker:"))
    assert worker.removeprefix("worker:") in page
    assert "smi.upscale" in page and "smi.preview" in page
    assert waiting and "Oldest paid job waiting" in page


def test_pages_without_a_session_send_to_the_sign_in_form(loop):
    gateway = loop.stack.gateway
    answer = httpx.get(f"{gateway}/dashboard/orders?q=x", timeout=30)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/sign-in?next=/dashboard/orders"
    changed = httpx.post(f"{gateway}/dashboard/orders/job_x/refund", data={}, timeout=30)
    assert changed.status_code == 401
    form = httpx.get(f"{gateway}/dashboard/sign-in", timeout=30)
    assert form.status_code == 200
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    assert form.headers["cache-control"] == "no-store"
    assert form.headers["referrer-policy"] == "same-origin"


def test_every_role_s_permissions_are_written_down():
    assert PERMISSIONS["support"] < PERMISSIONS["owner"]
    assert {"erase", "settings", "accounts", "refund_any_amount"}.isdisjoint(PERMISSIONS["support"])


def test_charts_are_svg_with_their_values_in_words():
    assert [nice_ceiling(v) for v in (0, 0.7, 3, 12, 260, 1001)] == [1, 1, 5, 20, 500, 2000]
    bars = bar_chart(["1 Dec", "2 Dec"], [3, 0], title="Sales <per> day", show=str)
    assert bars.startswith('<svg class="chart"') and 'role="img"' in bars
    assert "Sales &lt;per&gt; day" in bars and "<title>1 Dec: 3</title>" in bars
    lines = line_chart(["a", "b", "c"], [("p50", [1.0, None, 2.0], "p50")], title="t", show=str)
    assert "<polyline" not in lines  # a gap between the only two points: no line across it
    assert lines.count("<circle") == 2
