"""What an attack on the gateway's doors found, each kept shut by a test.

Money: a refund stranded by a partial Dashboard refund during our retries, a
refund dropped by a won dispute. The download credential: a proof readable
with the job id alone, tokens in logs, a token with two spellings. The
gateway runs in-process with its background work driven by hand, against
the Stripe emulator through the SDK, on SQLite and PostgreSQL
(``docs/RELIABILITY.md``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import string
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from system import running_system
from test_gateway_app import post_event, start_stack
from test_recovery import TOKEN, Loop, hand_driven
from test_seller import open_shop

from gateway.background.catch_up import StripeCatchUp
from gateway.background.retention import Retention
from gateway.config import GatewayConfig
from gateway.errors import RateLimitedError
from gateway.http.limits import counted_client
from gateway.images import previews
from gateway.money.payments import Payments
from gateway.money.refunds import Refunder
from gateway.store.lifecycle import expire
from gateway.store.tables import Job, Notification, WebhookEvent
from servers import wait_for
from shared.logs import JsonFormatter, SecretsFilter, TextFormatter
from shared.messages import EventKind
from shared.storage import Storage

DISPUTE_CARD = "4000000000000259"


@pytest.fixture
def loop(database_url, tmp_path) -> Iterator[Loop]:
    with hand_driven(database_url, tmp_path) as hand:
        yield hand


def at_stripe(loop: Loop, job_id: str) -> list[int]:
    """The amounts of the job's live refunds at Stripe, smallest first."""
    intent = loop.job(job_id).stripe_payment_intent_id
    refunds = loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data
    return sorted(r.amount for r in refunds if r.status in ("succeeded", "pending"))


def test_a_partial_dashboard_refund_during_our_retries_leaves_us_refunding_the_rest(loop):
    job_id = loop.buy()
    paid = loop.job(job_id).amount_cents
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    loop.stack.faults.error_rate = 1.0  # Stripe answers 500 while we refund
    assert loop.refunder().refund_due() == 1
    (ours,) = loop.refunds(job_id)
    assert ours.status == "pending" and ours.amount_cents == paid
    loop.stack.faults.error_rate = 0.0
    intent = loop.job(job_id).stripe_payment_intent_id
    loop.stack.stripe.v1.refunds.create({"payment_intent": intent, "amount": 20})  # by hand
    # Our retry asks for what is left now, whether or not the Dashboard refund's events
    # have come: the buyer gets the rest, never a refusal and a "refund failed".
    assert loop.refunder().refund_due() == 1
    assert loop.job(job_id).status == "refunded"
    assert at_stripe(loop, job_id) == [20, paid - 20]
    wait_for(lambda: len(loop.refunds(job_id)) == 2)
    rows = {r.idempotency_key: (r.status, r.amount_cents) for r in loop.refunds(job_id)}
    assert rows[f"refund-{job_id}-1"] == ("succeeded", paid - 20), rows
    assert sorted(rows.values()) == [("succeeded", 20), ("succeeded", paid - 20)], rows
    assert loop.outbox(job_id).count("email:refunded:1") == 1
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []


def test_a_dashboard_refund_between_our_reading_and_our_request_is_read_again(loop):
    """The seller refunds a part in the Dashboard after we read what is left and before our
    request reaches Stripe: Stripe refuses ours; we read again and ask for the rest."""
    job_id = loop.buy()
    paid = loop.job(job_id).amount_cents
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    stripe = loop.stack.stripe

    class SellerClicksMeanwhile(Payments):
        clicked = False

        def list_refunds(self, payment_intent: str | None = None) -> list[dict]:
            listed = super().list_refunds(payment_intent)
            if not self.clicked:  # just after our reading: the seller's click lands
                self.clicked = True
                stripe.v1.refunds.create({"payment_intent": payment_intent, "amount": 5})
            return listed

    recovery = loop.stack.config.recovery
    refunder = Refunder(loop.sessions, SellerClicksMeanwhile(loop.stack.config.stripe), recovery)
    assert refunder.refund_due() == 1
    assert loop.job(job_id).status == "refunded"
    assert at_stripe(loop, job_id) == [5, paid - 5]
    assert loop.outbox(job_id).count("email:refunded:1") == 1


def test_a_dashboard_refund_of_everything_during_our_retries_ends_the_job_without_ours(loop):
    job_id = loop.buy()
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    loop.stack.faults.error_rate = 1.0
    assert loop.refunder().refund_due() == 1
    loop.stack.faults.error_rate = 0.0
    intent = loop.job(job_id).stripe_payment_intent_id
    by_hand = loop.stack.stripe.v1.refunds.create({"payment_intent": intent})
    loop.refunder().refund_due()  # whether or not charge.refunded came first: nothing is sent
    wait_for(lambda: loop.job(job_id).status == "refunded")
    assert at_stripe(loop, job_id) == [by_hand.amount]
    statuses = {r.stripe_refund_id: r.status for r in loop.refunds(job_id)}
    assert sorted(statuses.values()) == ["canceled", "succeeded"], statuses
    assert statuses[by_hand.id] == "succeeded"
    assert loop.outbox(job_id).count("email:refunded:1") == 1


def test_a_won_dispute_resumes_the_refund_an_admin_ordered(database_url, tmp_path):
    """Admin refunds a delivered job, the refund retries, a dispute opens and is won:
    the refund goes on (it is owed), it is not silently dropped."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    settings["SMI_REFUND_BACKOFF_S"] = "0"
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        job_id = body["job_id"]
        assert stack.pay(body["checkout_url"], DISPUTE_CARD)["outcome"] == "paid"

        def event(kind: str) -> dict:  # the newest of its kind
            return stack.stripe.v1.events.list({"type": kind}).data[0].to_dict()

        assert post_event(stack, event("checkout.session.completed")).json()["result"] == "applied"
        Storage(stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG result")
        loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
        answer = loop.admin("POST", f"/admin/jobs/{job_id}/refund", json={"reason": "complaint"})
        assert answer.status_code == 202, answer.text
        stack.faults.error_rate = 1.0
        assert loop.refunder().refund_due() == 1  # retrying
        stack.faults.error_rate = 0.0
        opened = event("charge.dispute.created")  # the bank's dispute arrives meanwhile
        assert post_event(stack, opened).json()["result"] == "applied"
        assert loop.job(job_id).status == "disputed"
        assert loop.refunder().refund_due() == 0  # nothing is sent while disputed
        dispute_id = opened["data"]["object"]["id"]
        stack.stripe.v1.disputes.update(
            dispute_id, {"evidence": {"uncategorized_text": "winning_evidence"}}
        )
        assert post_event(stack, event("charge.dispute.closed")).json()["result"] == "applied"
        # Won: the refund the admin ordered goes on, and goes through.
        assert loop.job(job_id).status == "refunding"
        assert loop.refunder().refund_due() == 1
        assert loop.job(job_id).status == "refunded"
        assert at_stripe(loop, job_id) == [loop.job(job_id).amount_cents]
        assert loop.outbox(job_id).count("email:refunded:1") == 1
        url = f"{stack.gateway}/api/jobs/{job_id}"
        assert httpx.get(url, timeout=30).json()["status"] == "refunded"


# -- the download credential ----------------------------------------------------------


def test_only_the_buyer_key_opens_the_download_and_no_public_answer_holds_it(loop):
    """The job id, and the Checkout Session id (in the checkout's address, Stripe's
    Dashboard, the seller's notices), prove nothing; the buyer key from the checkout's
    answer does, and it is in no public answer."""
    body = loop.stack.checkout().json()
    job_id, key = body["job_id"], body["buyer_key"]
    session_id = loop.stack.session_of(job_id)
    assert session_id in body["checkout_url"]  # the payer's own answer only
    public = loop.stack.status(job_id)
    assert public["status"] == "awaiting_payment"
    assert "checkout_url" not in public and session_id not in json.dumps(public)
    assert key not in json.dumps(public)
    assert loop.stack.status(job_id, as_buyer=True)["checkout_url"] == body["checkout_url"]
    assert loop.stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
    wait_for(lambda: loop.stack.status(job_id)["status"] == "pending")
    Storage(loop.stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG result")
    loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    status_url = f"{loop.stack.gateway}/api/jobs/{job_id}"
    for proof in (
        {},
        {"X-Checkout-Session": session_id},
        {"X-Buyer-Key": session_id},
        {"X-Buyer-Key": key[:-1]},
        {"X-Buyer-Key": ""},
    ):
        answer = httpx.get(status_url, headers=proof, timeout=30).json()
        assert answer["status"] == "completed" and "download_url" not in answer, proof
    back = httpx.post(f"{status_url}/return", json={"session_id": session_id}, timeout=30)
    assert back.status_code == 200 and "download_url" not in back.json()
    url = loop.stack.status(job_id, as_buyer=True)["download_url"]
    download = httpx.get(url, timeout=30)
    assert download.status_code == 200 and download.headers["referrer-policy"] == "no-referrer"


def test_a_download_token_has_one_spelling(loop):
    job_id = loop.buy()
    Storage(loop.stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG result")
    loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
    url = loop.stack.status(job_id, as_buyer=True)["download_url"]
    assert httpx.get(url, timeout=30).status_code == 200
    alphabet = string.ascii_letters + string.digits + "-_"
    for part in range(3):  # the payload, the time stamp and the signature
        parts = url.rsplit("/", 1)[1].split(".")
        for other in alphabet.replace(parts[part][-1], ""):
            respelled = ".".join(p if i != part else p[:-1] + other for i, p in enumerate(parts))
            answer = httpx.get(f"{loop.stack.gateway}/downloads/{respelled}", timeout=30)
            assert answer.status_code == 403, (part, respelled)


def test_no_log_line_keeps_a_download_token():
    """The access log's path (uvicorn's own line) and any message naming a link."""
    token = "ImpvYl9hYmMi.axaiJA.-7gFjmxOXCTgLqBW_NpW6W4c1pA"
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/downloads/{token}?x=1", "1.1", 200),
        None,
    )
    said = logging.LogRecord(
        "gateway", logging.INFO, __file__, 1, f"sent https://shop.test/downloads/{token}", (), None
    )
    shouted = logging.LogRecord(  # another spelling of the path still names the token
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/DOWNLOADS/{token}", "1.1", 404),
        None,
    )
    for record in (access, said, shouted):
        assert SecretsFilter().filter(record)
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(record)
            assert token not in line and "/downloads/[token]" in line.lower(), line


# -- rate limits ----------------------------------------------------------------------

LIMITED = {
    "SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "0.1",
    "SMI_CHECKOUT_BURST": "2",
    "SMI_CHECKOUT_GLOBAL_PER_MINUTE": "12",  # everyone's bucket holds 2
}


def checkout_from(stack, forwarded: str | None, body: dict | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    body = {"image_url": f"{stack.images}/photo.jpg"} if body is None else body
    answer = httpx.post(f"{stack.gateway}/api/checkout", json=body, headers=headers, timeout=30)
    return answer.status_code


def test_made_up_forwarded_addresses_count_as_the_connection_s_own(tmp_path):
    with start_stack(f"sqlite:///{tmp_path / 'smi.db'}", tmp_path, **LIMITED) as stack:
        made_up = [checkout_from(stack, f"198.51.100.{n}") for n in range(3)]
        assert made_up == [201, 201, 429]


def test_behind_a_trusted_proxy_clients_count_by_address_and_ipv6_by_its_64(tmp_path):
    settings = {**LIMITED, "SMI_CHECKOUT_GLOBAL_PER_MINUTE": "600"}
    settings["SMI_TRUSTED_PROXIES"] = "127.0.0.0/8, ::1"
    with start_stack(f"sqlite:///{tmp_path / 'smi.db'}", tmp_path, **settings) as stack:
        # A client's own X-Forwarded-For entries (left of what the proxy added) are ignored.
        assert [checkout_from(stack, f"10.9.9.{n}, 203.0.113.7") for n in range(3)] == [
            201,
            201,
            429,
        ]
        assert checkout_from(stack, "203.0.113.8") == 201  # another client
        one_subscriber = [checkout_from(stack, f"2001:db8:0:5::{n}") for n in range(1, 4)]
        assert one_subscriber == [201, 201, 429]
        assert checkout_from(stack, "2001:db8:0:6::1") == 201  # another /64


def test_requests_that_fail_validation_leave_everyone_s_share_alone(tmp_path):
    settings = {**LIMITED, "SMI_TRUSTED_PROXIES": "127.0.0.1"}
    settings["SMI_PREVIEW_GLOBAL_PER_MINUTE"] = "12"  # everyone's previews: 5 at once
    with start_stack(f"sqlite:///{tmp_path / 'smi.db'}", tmp_path, **settings) as stack:
        junk = [checkout_from(stack, f"192.0.2.{n}", {}) for n in range(1, 40)]
        assert set(junk) == {400}, junk
        # Junk that parses, whose image then cannot be sold: a made-up address, another
        # host, a page that is not there. Everyone's token is given back each time.
        unusable = [
            {"image_url": "x"},
            {"image_url": "http://elsewhere.example/photo.jpg"},
            {"image_url": f"{stack.images}/no-such-photo.jpg"},
        ]
        answers = [
            checkout_from(stack, f"198.18.{n}.{m}", body)
            for n, body in enumerate(unusable)
            for m in range(1, 15)
        ]
        assert set(answers) == {422}, answers
        assert checkout_from(stack, "203.0.113.50") == 201  # the next honest buyer
        previews = [
            httpx.post(
                f"{stack.gateway}/api/previews",
                json=body,
                headers={"X-Forwarded-For": f"198.19.{n}.{m}"},
                timeout=30,
            ).status_code
            for n, body in enumerate(unusable)
            for m in range(1, 4)
        ]
        assert set(previews) == {422}, previews
        honest = httpx.post(
            f"{stack.gateway}/api/previews",
            json={"image_url": f"{stack.images}/photo.jpg"},
            headers={"X-Forwarded-For": "203.0.113.51"},
            timeout=30,
        )
        assert honest.status_code == 202, honest.text


@pytest.mark.parametrize(
    ("peer", "forwarded", "counted"),
    [
        ("127.0.0.1", ["198.51.100.1"], "127.0.0.1"),  # not trusted: the header is ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1, 10.0.0.3"], "198.51.100.1"),
        ("10.0.0.2", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.0.0.2", ["not-an-address"], "10.0.0.2"),
        ("10.0.0.2", [], "10.0.0.2"),
        ("::ffff:198.51.100.4", [], "198.51.100.4"),
        ("2001:db8:1:2:3:4:5:6", [], "2001:db8:1:2::/64"),
        ("10.0.0.2", ["[2001:db8::1]"], "2001:db8::/64"),
    ],
)
def test_the_counted_client(peer, forwarded, counted):
    trusted = [ip_network("10.0.0.0/8")]
    assert counted_client(peer, forwarded, trusted) == counted


# -- exhaustion -----------------------------------------------------------------------


def peak_mb(pid: int) -> int:
    """A process's peak resident memory so far (the kernel's VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]


@pytest.mark.slow
def test_twelve_previews_and_twelve_checkouts_of_a_dense_image_at_once_stay_bounded(tmp_path):
    """A 0.17 MB PNG of 4096x4096 16-bit RGBA pixels (128 MB decoded): each request once
    cost hundreds of MB; now each is checked on a small gray copy, two at a time."""
    lenient = {
        "SMI_PREVIEW_BURST": "1000",
        "SMI_PREVIEW_PER_CLIENT_PER_MINUTE": "100000",
        "SMI_PREVIEW_GLOBAL_PER_MINUTE": "100000",
    }
    database = f"sqlite:///{tmp_path / 'smi.db'}"
    with running_system(
        tmp_path, database, f"filesystem://{tmp_path / 'broker'}", **lenient
    ) as system:
        gateway = system.process("gateway-1").pid
        image = f"{system.images}/dense16.png"
        assert httpx.get(image, timeout=60).status_code == 200  # made once, before measuring
        before = peak_mb(gateway)

        def ask(path: str) -> int:
            body = {"image_url": image}
            return httpx.post(f"{system.gateway}{path}", json=body, timeout=120).status_code

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(ask, ["/api/previews", "/api/checkout"] * 12))
        assert sorted(set(answers)) == [201, 202], answers
        grown = peak_mb(gateway) - before
        assert grown < 150, f"the gateway's peak memory grew by {grown} MB"


# -- what erasure leaves ----------------------------------------------------------------


@pytest.fixture
def shop(database_url, tmp_path):
    with open_shop(database_url, tmp_path) as opened:
        yield opened


@pytest.mark.parametrize(
    ("address", "name"),
    [("Erin.Erasable@Example.com", "Erin Erasable"), ("Jösé.Müller@exämple.com", "Jösé Müller")],
    ids=["ascii", "accents"],
)
def test_erasure_leaves_the_address_in_no_stored_event_and_no_notification(shop, address, name):
    loop = shop.loop
    job_id = loop.buy(email=address, name=name)
    assert shop.completed(job_id)
    other = loop.buy(email="keep@example.com", name="Kept Person")  # another customer's

    def received(kind: str) -> int:
        events = loop.admin("GET", "/admin/events", params={"type": kind}).json()["events"]
        return len(events)

    for kind in ("checkout.session.completed", "charge.succeeded", "payment_intent.succeeded"):
        wait_for(lambda kind=kind: received(kind) == 2)  # both purchases' events are stored
    assert shop.notify() >= 1

    def stored() -> str:
        """Every stored event and notification, decoded (JSON keeps "ö" as "\\u00f6")."""
        with loop.sessions() as session:
            events = [
                json.loads(e.payload or "null") for e in session.scalars(select(WebhookEvent))
            ]
            notes = [json.loads(n.body) for n in session.scalars(select(Notification))]
        return json.dumps(events + notes, ensure_ascii=False).lower()

    assert address.lower() in stored() and name.lower() in stored()  # before: kept
    erased = loop.admin("POST", "/admin/erase", json={"email": address.upper()})
    assert erased.status_code == 200 and erased.json()["erased"] == [job_id], erased.text
    after = stored()
    assert address.lower() not in after and name.lower() not in after
    assert "keep@example.com" in after and "kept person" in after  # nobody else's
    shown = [
        loop.admin("GET", f"/admin/events/{e['event_id']}").text.lower()
        for e in loop.admin("GET", "/admin/events").json()["events"]
    ]
    assert not [text for text in shown if address.lower() in text or name.lower() in text]
    assert loop.job(other).customer_email == "keep@example.com"
    # Events that come after the erasure (a refund in the Dashboard) are kept erased too.
    intent = loop.job(job_id).stripe_payment_intent_id
    loop.stack.stripe.v1.refunds.create({"payment_intent": intent, "amount": 10})
    wait_for(lambda: received("charge.refunded") == 1 and received("refund.created") == 1)
    after = stored()
    assert address.lower() not in after and name.lower() not in after


def test_under_the_free_space_floor_new_work_is_refused_and_the_metric_says_why(tmp_path):
    """A floor above what the disk has: checkouts and previews answer 503 with Retry-After
    before anything is fetched or written; what is running goes on; the metric shows it."""
    free = shutil.disk_usage(tmp_path).free
    floor_mb = str(free // 2**20 + 1024)  # a gigabyte more than there is
    token = "metrics-token-disk-0123456789"
    settings = {"SMI_MIN_FREE_MB": floor_mb, "SMI_METRICS_TOKEN": token}
    with start_stack(f"sqlite:///{tmp_path / 'smi.db'}", tmp_path, **settings) as stack:
        image = {"image_url": f"{stack.images}/photo.jpg"}
        for path in ("/api/checkout", "/api/previews"):
            answer = httpx.post(f"{stack.gateway}{path}", json=image, timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["type"] == "storage_full"
            assert int(answer.headers["retry-after"]) > 0
        with stack.sessions()() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert [p for p in (tmp_path / "storage").rglob("*") if p.is_file()] == []
        scrape = httpx.get(
            f"{stack.gateway}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).text
        shown = dict(
            line.split(" ") for line in scrape.splitlines() if line.startswith("smi_disk_free")
        )
        assert float(shown["smi_disk_free_floor_bytes"]) == int(floor_mb) * 2**20
        assert 0 < float(shown["smi_disk_free_bytes"]) < float(shown["smi_disk_free_floor_bytes"])
    # The same disk with the default floor: the checkout goes through.
    with start_stack(f"sqlite:///{tmp_path / 'ok.db'}", tmp_path) as stack:
        assert stack.checkout().status_code == 201


def test_one_image_keeps_a_bounded_number_of_preview_squares(tmp_path):
    settings = {
        "SMI_PREVIEW_SQUARES_PER_IMAGE": "2",
        "SMI_PREVIEW_BURST": "100",
        "SMI_PREVIEW_PER_CLIENT_PER_MINUTE": "10000",
    }
    with start_stack(f"sqlite:///{tmp_path / 'smi.db'}", tmp_path, **settings) as stack:

        def preview(x: int, y: int) -> httpx.Response:
            body = {"image_url": f"{stack.images}/photo.jpg", "x": x, "y": y}
            return httpx.post(f"{stack.gateway}/api/previews", json=body, timeout=30)

        first, second = preview(0, 0), preview(20, 0)  # the photo is 120x80: squares of 80
        assert (first.status_code, second.status_code) == (202, 202)
        third = preview(40, 0)
        assert third.status_code == 429 and third.json()["error"]["type"] == "rate_limited"
        assert "2 previews already" in third.json()["error"]["message"]
        assert int(third.headers["retry-after"]) > 0
        again = preview(0, 0)  # one of the squares it has: shown as before
        assert again.status_code == 202
        assert again.json()["preview_id"] == first.json()["preview_id"]
        kept = list((tmp_path / "storage" / "previews").glob("*/meta.json"))
        assert len(kept) == 2


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_squares_claimed_at_once_never_outnumber_what_an_image_keeps(where, tmp_path, request):
    """Nine previews of one image claim their square at the same moment, as nine requests
    in any number of gateway processes would: two slots, two claims."""
    url = request.getfixturevalue("s3_url") if where == "s3" else f"file://{tmp_path}"
    storage = Storage(url)
    config = GatewayConfig.from_env(
        {
            "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_x",
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_x",
            "SMI_PREVIEW_SQUARES_PER_IMAGE": "2",
        }
    )
    start = threading.Barrier(9)

    def claim(n: int) -> str:
        start.wait()
        try:
            previews._count_square(storage, config, "d1gest", f"preview-{n}")
        except RateLimitedError:
            return "refused"
        return "claimed"

    with ThreadPoolExecutor(9) as pool:
        outcomes = sorted(pool.map(claim, range(9)))
    assert outcomes == ["claimed"] * 2 + ["refused"] * 7
    holders = {storage.get(key) for key in storage.keys("previews/squares/d1gest")}
    assert len(holders) == 2
    previews._count_square(storage, config, "d1gest", holders.pop().decode())  # its own: kept


def test_a_source_bought_many_times_is_stored_once_and_deleted_with_its_last_job(loop):
    storage = Storage(loop.stack.config.storage_url)
    jobs = [loop.stack.checkout().json()["job_id"] for _ in range(5)]
    keys = {loop.job(job_id).source_key for job_id in jobs}
    assert len(keys) == 1
    (key,) = keys
    stored = [p for p in (Path(loop.stack.config.storage_url[7:]) / "sources").iterdir()]
    assert [p.name for p in stored] == [key.rsplit("/", 1)[1]]
    with loop.sessions.begin() as session:  # every checkout but one ran out unpaid
        for job_id in jobs[:4]:
            expire(session, session.get_one(Job, job_id), "test", "test", "Expired.")
    retention = Retention(loop.sessions, storage, retention_days=30)
    assert retention.sweep() == 4
    assert storage.exists(key)  # the fifth still needs it
    with loop.sessions.begin() as session:
        expire(session, session.get_one(Job, jobs[4]), "test", "test", "Expired.")
    assert retention.sweep() == 1 and not storage.exists(key)
    # Bought again afterwards: stored again.
    again = loop.stack.checkout().json()["job_id"]
    assert loop.job(again).source_key == key and storage.exists(key)


# -- what a buyer typed at Stripe -------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["buyer\x00x@example.com", "b" * 380 + "@example.com"],
    ids=["nul", "too-long"],
)
def test_an_address_no_database_or_mail_server_takes_does_not_strand_the_payment(
    database_url, tmp_path, typed
):
    """The buyer's email at Stripe is what they typed: a paid order is fulfilled whatever
    it holds (the address is not kept, no email is attempted), its later events apply, and
    the catch-up goes on past it."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        job_id = body["job_id"]
        paid = stack.pay(body["checkout_url"], "4242424242424242", email=typed)
        assert paid["outcome"] == "paid", paid
        event = stack.stripe.v1.events.list({"type": "checkout.session.completed"}).data[0]
        answer = post_event(stack, event.to_dict())
        assert answer.status_code == 200 and answer.json()["result"] == "applied", answer.text
        job = loop.job(job_id)
        assert job.status == "pending" and job.customer_email is None
        assert any("cannot be used" in e.reason for e in loop.audit(job_id))
        # Its refund, made at Stripe, is recorded like any other.
        intent = job.stripe_payment_intent_id
        stack.stripe.v1.refunds.create({"payment_intent": intent})
        refunded = stack.stripe.v1.events.list({"type": "charge.refunded"}).data[0]
        assert post_event(stack, refunded.to_dict()).json()["result"] == "applied"
        assert loop.job(job_id).status == "refunded"
        stored = loop.admin("GET", f"/admin/events/{event.id}")
        assert stored.status_code == 200, stored.text

        # The catch-up: another paid order whose webhook was lost is fulfilled in the same
        # pass as the odd one is seen again.
        other = stack.checkout().json()
        assert stack.pay(other["checkout_url"], "4242424242424242")["outcome"] == "paid"
        catch_up = StripeCatchUp(loop.sessions, Payments(stack.config.stripe))
        catch_up.cursor = int(time.time()) - 600
        catch_up.check()
        assert loop.job(other["job_id"]).status == "pending"


def test_a_signed_event_with_a_value_longer_than_its_column_is_a_400_never_a_500(
    database_url, tmp_path
):
    """Only a holder of the webhook secret can send one (Stripe's values are short): still a
    typed refusal, stored with why, and the next real event applies."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        assert stack.pay(body["checkout_url"], DISPUTE_CARD)["outcome"] == "paid"

        def event(kind: str) -> dict:
            return stack.stripe.v1.events.list({"type": kind}).data[0].to_dict()

        assert post_event(stack, event("checkout.session.completed")).json()["result"] == "applied"
        dispute = event("charge.dispute.created")
        forged = {**dispute, "id": "evt_long_reason"}
        forged["data"] = {"object": {**dispute["data"]["object"], "reason": "r" * 100}}
        answer = post_event(stack, forged)
        if database_url.startswith("postgresql"):  # SQLite keeps any length
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["type"] == "invalid_request"
            stored = loop.admin("GET", "/admin/events/evt_long_reason").json()["event"]
            assert stored["outcome"] == "error"
        else:
            assert answer.status_code == 200, answer.text
        assert post_event(stack, dispute).json()["result"] in ("applied", "no change")
        assert loop.job(body["job_id"]).status == "disputed"
