"""The gateway over HTTP: real uvicorn, the Stripe emulator via the SDK, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
import stripe
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from conftest import RABBITMQ_URL, drain, png_claiming, sample
from devtools.emulator.app import EmulatorSettings, create_emulator_app
from devtools.emulator.webhooks import Faults, sign_payload
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.errors import PaymentProviderRejected, RateLimitedError, SourceImageError
from gateway.http.limits import CheckoutLimits
from gateway.images.sources import check_url
from gateway.money.payments import Payments
from gateway.store.database import create_database_engine, session_factory
from gateway.store.lifecycle import audit_trail
from gateway.store.tables import Job, OutboxMessage
from servers import deliver_at_once, free_port, serve, wait_for
from shared.messages import UpscaleRequest
from upscaler.output.images import encode_image

SECRET = "whsec_gateway_tests"
API_KEY = "sk_test_gateway"


def image_server() -> Starlette:
    photo = encode_image(np.ascontiguousarray(sample("coffee")[100:180, 200:320]), "jpeg")

    async def route(request: Request) -> Response:
        name = request.path_params["name"]
        port = request.url.port
        if name == "photo.jpg":
            return Response(photo, media_type="image/jpeg")
        if name == "huge.png":
            return Response(png_claiming(5000, 5000), media_type="image/png")
        if name == "notes.txt":
            return Response(b"not an image", media_type="text/plain")
        if name == "short.jpg":  # a 4000x4000 header over 80x120 of scan data
            short = bytearray(photo)
            frame = short.find(b"\xff\xc0")
            short[frame + 5 : frame + 9] = bytes.fromhex("0fa00fa0")
            return Response(bytes(short), media_type="image/jpeg")
        if name == "hop":
            return RedirectResponse("/photo.jpg")
        if name == "away":  # same machine, but a host that is not on the list
            return RedirectResponse(f"http://localhost:{port}/photo.jpg")
        if name == "slow.jpg":
            await asyncio.sleep(3)
            return Response(photo, media_type="image/jpeg")
        return Response(status_code=404)

    return Starlette(routes=[Route("/{name}", route)])


@dataclass
class Stack:
    gateway: str
    emulator: str
    images: str
    stripe: stripe.StripeClient
    config: GatewayConfig
    faults: Faults
    buyer_keys: dict[str, str] = field(default_factory=dict)  # job id -> the buyer's key

    def checkout(self, **body: object) -> httpx.Response:
        body = {"image_url": f"{self.images}/photo.jpg", **body}
        response = httpx.post(f"{self.gateway}/api/checkout", json=body, timeout=30)
        if response.status_code == 201:
            self.buyer_keys[response.json()["job_id"]] = response.json()["buyer_key"]
        return response

    def as_buyer(self, job_id: str) -> dict[str, str]:
        """The header a buyer's page shows: the buyer key its checkout answered with."""
        return {"X-Buyer-Key": self.buyer_keys[job_id]}

    def status(self, job_id: str, as_buyer: bool = False) -> dict:
        """The job as its page sees it; ``as_buyer`` shows the buyer key as the buyer's page."""
        headers = self.as_buyer(job_id) if as_buyer else {}
        return httpx.get(f"{self.gateway}/api/jobs/{job_id}", headers=headers, timeout=30).json()

    def session_of(self, job_id: str) -> str:
        with self.sessions()() as session:
            return str(session.get_one(Job, job_id).stripe_session_id)

    def came_back(self, job_id: str, session_id: str) -> httpx.Response:
        return httpx.post(
            f"{self.gateway}/api/jobs/{job_id}/return",
            json={"session_id": session_id},
            headers=self.as_buyer(job_id) if job_id in self.buyer_keys else {},
            timeout=30,
        )

    def pay(self, checkout_url: str, card: str, **form: str) -> dict:
        """Pay on the hosted page: a card, and a promotion code or country when given."""
        session_id = checkout_url.rsplit("/", 1)[1]
        return httpx.post(
            f"{self.emulator}/_emulator/checkout/{session_id}/pay",
            data={"card": card, **form},
            timeout=30,
        ).json()

    def sessions(self):
        return session_factory(create_database_engine(self.config.database_url))


@contextmanager
def start_stack(
    database_url: str,
    tmp_path,
    webhooks: bool = True,
    broker_url: str | None = None,
    **settings: str,
) -> Iterator[Stack]:
    gateway_port, emulator_port = free_port(), free_port()
    faults = Faults()
    with serve(image_server()) as images:
        config = GatewayConfig.from_env(
            {
                "SMI_STRIPE_TEST_SECRET_KEY": API_KEY,
                "SMI_STRIPE_TEST_WEBHOOK_SECRET": SECRET,
                "SMI_STRIPE_API_BASE": f"http://127.0.0.1:{emulator_port}",
                "SMI_DATABASE_URL": database_url,
                "SMI_STORAGE_URL": f"file://{tmp_path / 'storage'}",
                "SMI_SOURCE_HOSTS": images.removeprefix("http://"),
                "SMI_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
                "SMI_DATA_DIR": str(tmp_path),
                "SMI_BROKER_URL": broker_url or f"filesystem://{tmp_path / 'broker'}",
                "SMI_STOREFRONT_ORIGINS": "http://shop.test",
                # Tests buy from one address far faster than any customer.
                "SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "100000",
                "SMI_CHECKOUT_BURST": "1000",
                **settings,
            }
        )
        if database_url.startswith("postgresql"):
            from gateway.store.database import migrate

            migrate(create_database_engine(database_url))
        settings = EmulatorSettings(
            public_url=f"http://127.0.0.1:{emulator_port}",
            webhook_url=f"http://127.0.0.1:{gateway_port}/webhooks/stripe" if webhooks else None,
            webhook_secret=SECRET,
            faults=faults,
        )
        with (
            serve(create_emulator_app(settings), port=emulator_port) as emulator,
            serve(create_app(config), port=gateway_port) as gateway,
        ):
            client = stripe.StripeClient(API_KEY, base_addresses={"api": emulator})
            yield Stack(gateway, emulator, images, client, config, faults)


@pytest.fixture
def stack(database_url, tmp_path) -> Iterator[Stack]:
    with start_stack(database_url, tmp_path) as running:
        yield running


def outbox_kinds(stack: Stack, job_id: str) -> list[str]:
    with stack.sessions()() as session:
        return sorted(
            session.scalars(select(OutboxMessage.kind).where(OutboxMessage.job_id == job_id))
        )


class TestCheckoutToPayment:
    def test_checkout_prices_the_real_image_and_creates_the_specs_session(self, stack):
        response = stack.checkout(return_url="http://shop.test/gallery?page=2")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["amount_cents"] == 50 and body["currency"] == "usd"  # 480x320 out: minimum
        session_id = body["checkout_url"].rsplit("/", 1)[1]
        session = stack.stripe.v1.checkout.sessions.retrieve(session_id)
        assert session.metadata.to_dict() == {
            "job_id": body["job_id"],
            "plugin": "sell-my-images",
            "model": "RealESRGAN_x4plus",
        }
        assert session.client_reference_id == body["job_id"]
        assert session.payment_method_types == ["card"] and session.mode == "payment"
        success = parse_qs(urlsplit(session.success_url).query)
        assert success == {
            "page": ["2"],
            "smi_payment": ["success"],
            "job_id": [body["job_id"]],
            "session_id": ["{CHECKOUT_SESSION_ID}"],
        }
        cancel = parse_qs(urlsplit(session.cancel_url).query)
        assert cancel["smi_payment"] == ["cancel"] and cancel["job_id"] == [body["job_id"]]
        assert 30 * 60 <= session.expires_at - time.time() <= 24 * 3600
        items = stack.stripe.v1.checkout.sessions.line_items.list(session_id)
        product = items.data[0]["price_data"]["product_data"]
        assert product["name"] == "High-Resolution Image (4x)"
        assert product["description"] == "120x80 → 480x320 pixels"
        status = stack.status(body["job_id"])
        assert status["status"] == "awaiting_payment" and status["width"] == 120

    def test_paying_makes_the_job_pending_with_one_upscale_message(self, stack):
        body = stack.checkout().json()
        assert stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
        status = wait_for(lambda: (s := stack.status(body["job_id"]))["status"] == "pending" and s)
        assert status["message"].startswith("Payment received")
        assert status["paid_at"]
        assert outbox_kinds(stack, body["job_id"]) == ["email:payment_confirmation", "upscale"]
        with stack.sessions()() as session:
            message = session.scalars(
                select(OutboxMessage.body).where(
                    OutboxMessage.job_id == body["job_id"], OutboxMessage.kind == "upscale"
                )
            ).one()
        assert json.loads(message)["schema"] == "smi.upscale-request.v1"

    def test_a_decline_tells_the_customer_and_a_retry_pays(self, stack):
        body = stack.checkout().json()
        stack.pay(body["checkout_url"], "4000000000009995")
        status = wait_for(lambda: (s := stack.status(body["job_id"]))["decline_code"] and s)
        assert status["status"] == "awaiting_payment"
        assert status["decline_code"] == "insufficient_funds"
        assert "another card" in status["message"]
        stack.pay(body["checkout_url"], "4242424242424242")
        wait_for(lambda: stack.status(body["job_id"])["status"] == "pending")

    def test_expiry_ends_an_unpaid_job_but_not_a_paid_one(self, stack):
        unpaid, paid = stack.checkout().json(), stack.checkout().json()
        stack.stripe.v1.checkout.sessions.expire(unpaid["checkout_url"].rsplit("/", 1)[1])
        wait_for(lambda: stack.status(unpaid["job_id"])["status"] == "expired")
        stack.pay(paid["checkout_url"], "4242424242424242")
        wait_for(lambda: stack.status(paid["job_id"])["status"] == "pending")
        session = stack.stripe.v1.checkout.sessions.retrieve(paid["checkout_url"].rsplit("/", 1)[1])
        late = {
            "id": "evt_late_expiry",
            "object": "event",
            "type": "checkout.session.expired",
            "data": {"object": {**session.to_dict(), "status": "expired"}},
        }
        assert post_event(stack, late).json()["result"] == "no change"
        assert stack.status(paid["job_id"])["status"] == "pending"


def post_event(
    stack: Stack, event: dict, *, secret: str = SECRET, timestamp: int | None = None
) -> httpx.Response:
    payload = json.dumps(event).encode()
    signature = sign_payload(payload, secret, timestamp)
    return httpx.post(
        f"{stack.gateway}/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        timeout=30,
    )


def test_returning_customer_is_fulfilled_before_the_webhook(database_url, tmp_path):
    with start_stack(database_url, tmp_path, webhooks=False) as stack:
        body = stack.checkout().json()
        redirect = stack.pay(body["checkout_url"], "4242424242424242")["redirect"]
        query = parse_qs(urlsplit(redirect).query)
        assert query["smi_payment"] == ["success"] and query["job_id"] == [body["job_id"]]
        assert stack.status(body["job_id"])["status"] == "awaiting_payment"  # no webhook
        # Looking is only looking: a GET never fulfils, whatever it carries.
        assert stack.status(body["job_id"], as_buyer=True)["status"] == "awaiting_payment"
        status = stack.came_back(body["job_id"], query["session_id"][0])
        assert status.status_code == 200 and status.json()["status"] == "pending"
        assert stack.came_back(body["job_id"], query["session_id"][0]).json()["status"] == "pending"
        assert outbox_kinds(stack, body["job_id"]).count("upscale") == 1
        # Another job's session, or none, fulfils nothing and says what is wrong.
        other = stack.checkout().json()
        assert stack.came_back(other["job_id"], query["session_id"][0]).json()["status"] == (
            "awaiting_payment"
        )
        assert stack.came_back(other["job_id"], "").status_code == 400
        assert stack.came_back("job_nope", query["session_id"][0]).status_code == 404


def test_five_simultaneous_deliveries_to_two_gateways_take_effect_once(database_url, tmp_path):
    with start_stack(database_url, tmp_path, webhooks=False) as stack:
        with serve(create_app(stack.config)) as second_gateway:
            body = stack.checkout().json()
            stack.pay(body["checkout_url"], "4242424242424242")
            event = stack.stripe.v1.events.list({"type": "checkout.session.completed"}).data[0]
            payload = json.dumps(event.to_dict()).encode()
            targets = ([stack.gateway, second_gateway] * 3)[:5]
            results = [r.json()["result"] for r in deliver_at_once(targets, payload, SECRET)]
        assert sorted(results) == ["applied"] + ["duplicate"] * 4
        assert outbox_kinds(stack, body["job_id"]).count("upscale") == 1
        with stack.sessions()() as session:
            trail = [e.to_status for e in audit_trail(session, body["job_id"])]
        assert trail == ["awaiting_payment", "pending"]


class TestBadInput:
    @pytest.fixture
    def paid_event(self, stack) -> tuple[Stack, dict]:
        body = stack.checkout().json()
        session = stack.stripe.v1.checkout.sessions.retrieve(body["checkout_url"].rsplit("/", 1)[1])
        event = {
            "id": "evt_forged",
            "object": "event",
            "type": "checkout.session.completed",
            "data": {
                "object": {
                    **session.to_dict(),
                    "payment_status": "paid",
                    "payment_intent": "pi_forged",
                }
            },
        }
        return stack, {"event": event, "job_id": body["job_id"]}

    @pytest.mark.parametrize(
        ("signing", "fragment"),
        [
            ({"secret": "whsec_wrong"}, "signature"),
            ({"timestamp": int(time.time()) - 400}, "signature"),
            ({"timestamp": int(time.time()) + 4000}, "in the future"),
            ({"livemode": True}, "live-mode event at a test-mode gateway"),
            ({"object": [1, 2]}, "not a Stripe event"),
        ],
    )
    def test_bad_signatures_change_nothing(self, paid_event, signing, fragment):
        stack, case = paid_event
        event, signing = dict(case["event"]), dict(signing)
        if "livemode" in signing:
            event["livemode"] = signing.pop("livemode")
        if "object" in signing:
            event["data"] = {"object": signing.pop("object")}
        response = post_event(stack, event, **signing)
        assert response.status_code == 400 and fragment in response.json()["error"]["message"]
        assert stack.status(case["job_id"])["status"] == "awaiting_payment"

    def test_missing_signature_and_malformed_json(self, paid_event):
        stack, case = paid_event
        url = f"{stack.gateway}/webhooks/stripe"
        assert httpx.post(url, content=b"{}").status_code == 400
        garbage = b"{not json"
        response = httpx.post(
            url, content=garbage, headers={"Stripe-Signature": sign_payload(garbage, SECRET)}
        )
        assert response.status_code == 400
        assert stack.status(case["job_id"])["status"] == "awaiting_payment"

    def test_oversized_bodies_are_refused(self, stack):
        huge = b"x" * (1024 * 1024 + 1)
        response = httpx.post(
            f"{stack.gateway}/webhooks/stripe",
            content=huge,
            headers={"Stripe-Signature": sign_payload(huge, SECRET)},
        )
        assert response.status_code == 413
        response = httpx.post(
            f"{stack.gateway}/api/checkout",
            content=b"{" + b" " * 20000,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413

    def test_unhandled_event_types_are_acknowledged(self, stack):
        response = post_event(
            stack, {"id": "evt_x", "type": "customer.created", "data": {"object": {}}}
        )
        assert response.status_code == 200 and response.json()["result"] == "ignored"

    @pytest.mark.parametrize(
        ("body", "status", "fragment"),
        [
            (b"{nope", 400, "not valid JSON"),
            (b"[]", 400, "JSON object"),
            (b"{}", 400, "image_url is required"),
            (json.dumps({"image_url": "x", "amount_cents": 1}).encode(), 400, "computed by"),
            (b"\xff\xfe{}", 400, "not valid JSON"),  # not UTF-8
            (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),  # too deep
            (b'{"image_url": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),  # too many digits
            # Text no database column stores: refused before anything else looks at it.
            (b'{"image_url": "http://a/\\ud800.jpg"}', 400, "cannot be stored"),  # lone surrogate
            (b'{"image_url": "http://a/\\u0000.jpg"}', 400, "cannot be stored"),  # NUL
            (b'{"image_url": "http://a/\\u0007.jpg"}', 422, "not a usable URL"),  # control char
            (b'{"image_url": "http://a:99999/x.jpg"}', 422, "not a usable URL"),
            (b'{"image_url": "http://a:-1/x.jpg"}', 422, "not a usable URL"),
            (b'{"image_url": "http://a:abc/x.jpg"}', 422, "not a usable URL"),
            (b'{"image_url": "http://[::1/x.jpg"}', 422, "not a usable URL"),  # bracket open
            (
                b'{"image_url": "http://a/x.jpg", "return_url": "http://a:99999/"}',
                400,
                "return_url",
            ),
            (b'{"image_url": "http://a/x.jpg", "return_url": 5}', 400, "return_url"),
            (
                b'{"image_url": "http://a/x.jpg", "return_url": "https://evil.example/"}',
                400,
                "the shop's own site",
            ),
        ],
    )
    def test_malformed_checkout_requests(self, stack, body, status, fragment):
        json_body = {"Content-Type": "application/json"}
        response = httpx.post(f"{stack.gateway}/api/checkout", content=body, headers=json_body)
        assert response.status_code == status and fragment in response.json()["error"]["message"]

    def test_a_body_that_does_not_say_json_is_refused(self, stack):
        """A cross-site form or text/plain post needs no preflight: it must not create anything."""
        body = json.dumps({"image_url": f"{stack.images}/photo.jpg"})
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = httpx.post(f"{stack.gateway}/api/checkout", content=body, headers=headers)
            assert response.status_code == 415, content_type
        assert stack.stripe.v1.checkout.sessions.list().data == []

    @pytest.mark.parametrize(
        ("path", "fragment"),
        [
            ("/notes.txt", "not a usable image"),
            ("/huge.png", "too large"),
            ("/short.jpg", "not a usable image"),
            ("/away", "not accepted"),
            ("/missing", "HTTP 404"),
        ],
    )
    def test_unusable_images_are_refused_and_nothing_is_created(self, stack, path, fragment):
        response = stack.checkout(image_url=f"{stack.images}{path}")
        assert response.status_code == 422
        assert fragment in response.json()["error"]["message"]
        assert stack.stripe.v1.checkout.sessions.list().data == []

    def test_redirects_on_the_list_are_followed(self, stack):
        assert stack.checkout(image_url=f"{stack.images}/hop").status_code == 201

    def test_hosts_off_the_list_are_refused(self, stack):
        response = stack.checkout(image_url="http://example.com/cat.jpg")
        assert response.status_code == 422 and "not accepted" in response.text

    def test_unknown_paths_and_methods_answer_in_the_error_shape(self, stack):
        for method, path, status in (
            ("GET", "/downloads/.", 404),  # normalised to /downloads/: no such route
            ("GET", "/nowhere", 404),
            ("DELETE", "/api/checkout", 405),
        ):
            response = httpx.request(method, f"{stack.gateway}{path}", timeout=30)
            assert response.status_code == status
            assert response.json()["error"]["type"] in ("not_found", "method_not_allowed")

    def test_unknown_jobs_are_404(self, stack):
        response = httpx.get(f"{stack.gateway}/api/jobs/job_nope")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"

    def test_stripe_rate_limits_become_503_with_retry_after(self, stack):
        stack.faults.rate_limit_rate = 1.0
        response = stack.checkout()
        assert response.status_code == 503 and response.headers["Retry-After"] == "10"
        stack.faults.rate_limit_rate = 0.0


def test_checkout_to_one_message_on_rabbitmq(database_url, tmp_path, rabbit):
    """Real SDK, emulator, database and broker: pay -> webhook -> pending -> one message."""
    with start_stack(database_url, tmp_path, broker_url=RABBITMQ_URL) as stack:
        body = stack.checkout().json()
        stack.pay(body["checkout_url"], "4242424242424242")
        wait_for(lambda: stack.status(body["job_id"])["status"] == "pending")
        received = drain(rabbit)
    assert [request.job_id for request in received] == [body["job_id"]]
    assert received[0].source_key.startswith("sources/")  # stored once by its content


def test_size_and_time_limits_on_the_source(database_url, tmp_path):
    limits = {"SMI_MAX_SOURCE_BYTES": "2000", "SMI_FETCH_TIMEOUT_S": "1"}
    with start_stack(database_url, tmp_path, **limits) as stack:
        too_big = stack.checkout()  # the photo is a few kB
        assert too_big.status_code == 422 and "larger than 2,000 bytes" in too_big.text
        too_slow = stack.checkout(image_url=f"{stack.images}/slow.jpg")
        assert too_slow.status_code == 422 and "too long" in too_slow.text


def test_checkouts_are_rate_limited_per_client_with_retry_after(database_url, tmp_path):
    limits = {"SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "6", "SMI_CHECKOUT_BURST": "2"}
    with start_stack(database_url, tmp_path, **limits) as stack:
        assert [stack.checkout().status_code for _ in range(2)] == [201, 201]
        refused = stack.checkout()
        # A token every 10 s: the wait is 10 s less what the two checkouts took, rounded up.
        assert refused.status_code == 429 and refused.headers["Retry-After"] in ("9", "10")
        retry = refused.headers["Retry-After"]
        assert f"try again in {retry} s" in refused.json()["error"]["message"]
        assert len(stack.stripe.v1.checkout.sessions.list().data) == 2  # nothing more made


def test_rate_limit_buckets_refill_and_protect_everyone():
    now = [0.0]
    limits = CheckoutLimits(
        per_client_per_minute=60, burst=2, global_per_minute=60, clock=lambda: now[0]
    )
    limits.take("a")
    limits.take("a")
    with pytest.raises(RateLimitedError) as raised:
        limits.take("a")
    assert raised.value.retry_after_s == 1
    now[0] = 1.0  # one second later: one more
    limits.take("a")
    # Everyone's bucket holds 10 s at 1/s: 10 - 2 at 0 s, + 1 by 1 s, - 1 for "a" = 8 more.
    for client in "bcdefghi":
        limits.take(client)
    with pytest.raises(RateLimitedError, match="very busy"):
        limits.take("z")
    now[0] = 3.0
    limits.take("z")  # refilled


def test_names_resolving_to_private_addresses_are_refused():
    host = socket.gethostname()  # resolves to this machine's own (non-public) address
    with pytest.raises(SourceImageError):
        check_url(f"http://{host}/cat.jpg", (host,))
    with pytest.raises(SourceImageError, match="not accepted"):
        check_url("http://127.0.0.2/cat.jpg", ("127.0.0.1",))
    with pytest.raises(SourceImageError, match="http or https"):
        check_url("file:///etc/passwd", ("",))
    check_url("http://127.0.0.1:8080/cat.jpg", ("127.0.0.1:8080",))  # listed by address


def test_stripe_refusals_become_502(stack):
    payments = Payments(stack.config.stripe)
    with pytest.raises(PaymentProviderRejected, match=r"No such checkout\.session"):
        payments.retrieve_checkout_session("cs_test_missing")


def test_only_configured_storefront_origins_may_call_from_browsers(tmp_path):
    shop = "http://shop.example"
    database = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    with start_stack(database, tmp_path, SMI_STOREFRONT_ORIGINS=shop) as stack:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        allowed = httpx.options(
            f"{stack.gateway}/api/checkout", headers={"Origin": shop, **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == shop
        other = httpx.options(
            f"{stack.gateway}/api/checkout", headers={"Origin": "http://evil.example", **preflight}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        script = httpx.get(f"{stack.gateway}/static/smi-checkout.js")
        assert script.status_code == 200 and "data-smi-image" in script.text


def test_the_buyer_s_language_reaches_the_job_and_stripe_s_page(stack):
    body = stack.checkout(language="ja-JP").json()
    session = stack.stripe.v1.checkout.sessions.retrieve(stack.session_of(body["job_id"]))
    assert session.locale == "ja"
    status = stack.status(body["job_id"])
    assert status["language"] == "ja" and status["message_key"] == "message.awaiting_payment"
    assert 'lang="ja"' in httpx.get(body["checkout_url"], timeout=30).text
    other = stack.checkout(language="pt-BR").json()  # one we do not speak: English
    assert stack.status(other["job_id"])["language"] == "en"
    assert stack.stripe.v1.checkout.sessions.retrieve(stack.session_of(other["job_id"])).locale == (
        "en"
    )


def test_the_buyer_chooses_among_the_offered_models_and_the_scale_follows(database_url, tmp_path):
    offers = "RealESRGAN_x4plus,RealESRGAN_x4plus_anime_6B,RealESRGAN_x2plus"
    settings = {
        "SMI_OFFER_MODELS": offers,
        "SMI_MODEL_PRICES": "RealESRGAN_x2plus=4000",  # a dearer megapixel, a quarter of them
        "SMI_PRICE_PER_MEGAPIXEL_CENTS": "2000",
    }
    with start_stack(database_url, tmp_path, **settings) as stack:
        first = stack.checkout().json()  # 120x80 photo
        assert (first["model"], first["scale"]) == ("RealESRGAN_x4plus", 4)
        assert [(o["model"], o["kind"], o["scale"], o["output_width"], o["amount_cents"])
                for o in first["offers"]] == [
            ("RealESRGAN_x4plus", "photo", 4, 480, 461),  # 0.1536 MP x 2000 x 1.5, rounded up
            ("RealESRGAN_x4plus_anime_6B", "illustration", 4, 480, 461),
            ("RealESRGAN_x2plus", "photo", 2, 240, 231),  # 0.0384 MP x 4000 x 1.5
        ]  # fmt: skip

        chosen = stack.checkout(model="RealESRGAN_x2plus").json()
        assert (chosen["model"], chosen["scale"], chosen["amount_cents"]) == (
            "RealESRGAN_x2plus", 2, 231
        )  # fmt: skip
        session_id = stack.session_of(chosen["job_id"])
        session = stack.stripe.v1.checkout.sessions.retrieve(session_id)
        assert session.metadata["model"] == "RealESRGAN_x2plus" and session.amount_total == 231
        (item,) = stack.stripe.v1.checkout.sessions.line_items.list(session_id).data
        product = item["price_data"]["product_data"]
        assert product["name"] == "High-Resolution Image (2x)"
        assert product["description"] == "120x80 → 240x160 pixels"
        assert product["metadata"].to_dict() == {"model": "RealESRGAN_x2plus"}
        status = stack.status(chosen["job_id"])
        assert (status["model"], status["scale"]) == ("RealESRGAN_x2plus", 2)
        assert stack.pay(chosen["checkout_url"], "4242424242424242")["outcome"] == "paid"
        wait_for(lambda: stack.status(chosen["job_id"])["status"] == "pending")
        with stack.sessions()() as db:
            (message,) = db.scalars(
                select(OutboxMessage.body).where(
                    OutboxMessage.job_id == chosen["job_id"], OutboxMessage.kind == "upscale"
                )
            )
        assert UpscaleRequest.from_json(message).model == "RealESRGAN_x2plus"

        for model, why in (("realesr-general-x4v3", "not offered"), ("nope", "not offered")):
            refused = stack.checkout(model=model)
            assert refused.status_code == 400 and why in refused.json()["error"]["message"]


def test_the_admin_sees_each_job_s_gpu_cost_and_margin(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"model": "RealESRGAN_x4plus", "input_megapixels_per_s": 0.00001}))
    settings = {
        "SMI_ADMIN_TOKEN": "admin-token-0123456789abcdef",
        "SMI_GPU_COST_PER_HOUR": "3600",  # a cent a second; 6,250 s per output MP
        "SMI_BENCH_FILES": str(bench),
    }
    with start_stack(f"sqlite:///{tmp_path / 'g.sqlite3'}", tmp_path, **settings) as stack:
        body = stack.checkout().json()  # 120x80 -> 480x320: 0.1536 MP
        assert body["amount_cents"] == 1440  # 0.1536 x 6250 x 1.5: at cost, marked up
        listed = httpx.get(
            f"{stack.gateway}/admin/jobs",
            headers={"Authorization": "Bearer admin-token-0123456789abcdef"},
            timeout=30,
        ).json()["jobs"][0]
        assert (listed["cost_cents"], listed["margin_cents"]) == (960, 480)
