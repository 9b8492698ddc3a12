"""Hostile input at every door, generated: checkout, status, return, previews, lost links,
webhooks, downloads, admin.

Every request, whatever it carries, is answered with a 4xx and a typed JSON
error (never a 5xx, never a dropped connection), and changes nothing: no
job, payment, refund or email comes of it. One gateway (the real app on a
real server) with the Stripe emulator serves all the examples.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from test_gateway_app import SECRET, Stack, start_stack

from devtools.emulator.webhooks import sign_payload
from gateway.store.tables import AuditEntry, Job, OutboxMessage, Refund
from servers import wait_for

TOKEN = "admin-token-hostile-0123456789"
EXAMPLES = settings(
    max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)

# JSON of any shape, deep and wide enough to surprise a parser's caller.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
hosts = st.sampled_from(
    [
        "127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "[::1]", "[fe80::1%25eth0]",
        "0x7f.1", "2130706433", "example.com", "ex\u0430mple.com", "xn--", "a" * 300, "", "[::1",
    ]
)  # fmt: skip
ports = st.sampled_from(["", ":0", ":-1", ":99999", ":abc", ":80", ":443", ":6379", ":5432"])
paths = st.text(max_size=30).map(lambda text: "/" + text)
urls = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https", "file", "gopher", "ftp", "javascript", "HTTP"]),
        hosts,
        ports,
        paths,
    ),
    st.text(max_size=80),
)
refusals = {400, 401, 403, 404, 409, 410, 413, 415, 422}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hostile")
    settings = {"SMI_PREVIEW_PER_CLIENT_PER_MINUTE": "100000", "SMI_PREVIEW_BURST": "1000"}
    database = f"sqlite:///{tmp / 'gateway.sqlite3'}"
    with start_stack(database, tmp, SMI_ADMIN_TOKEN=TOKEN, **settings) as running:
        yield running


@pytest.fixture(scope="module")
def paid_job(stack) -> str:
    """One real paid job, for the doors that take a job id."""
    body = stack.checkout().json()
    assert stack.pay(body["checkout_url"], "4242424242424242")["outcome"] == "paid"
    wait_for(lambda: stack.status(body["job_id"])["status"] == "pending")  # the webhook came
    return str(body["job_id"])


def footprint(stack: Stack) -> tuple[int, ...]:
    """How many jobs, audit entries, outbox messages and refunds exist."""
    with stack.sessions()() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Job, AuditEntry, OutboxMessage, Refund)
        )


def refused(response: httpx.Response) -> None:
    assert response.status_code in refusals, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["type"] and error["message"]


@pytest.fixture
def unchanged(stack, paid_job) -> Iterator[None]:
    """The test leaves the database as it found it."""
    before = footprint(stack)
    yield
    assert footprint(stack) == before


@EXAMPLES
@given(image_url=urls, return_url=st.none() | urls)
def test_checkout_refuses_hostile_urls(stack, unchanged, image_url, return_url):
    body = {"image_url": image_url, **({"return_url": return_url} if return_url else {})}
    refused(httpx.post(f"{stack.gateway}/api/checkout", json=body, timeout=30))


@EXAMPLES
@given(body=json_values, content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_checkout_refuses_hostile_bodies(stack, unchanged, body, content_type):
    if isinstance(body, dict) and isinstance(body.get("image_url"), str):
        body["image_url"] = "ftp://" + body["image_url"]  # never a usable URL by chance
    response = httpx.post(
        f"{stack.gateway}/api/checkout",
        content=json.dumps(body).encode(),
        headers={"Content-Type": content_type} if content_type else {},
        timeout=30,
    )
    refused(response)


@EXAMPLES
@given(raw=st.binary(max_size=200))
def test_checkout_refuses_bytes_that_are_not_json(stack, unchanged, raw):
    response = httpx.post(
        f"{stack.gateway}/api/checkout",
        content=b"\xff" + raw,  # never valid UTF-8 JSON
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    refused(response)


@EXAMPLES
# "." and ".." never reach a server as a path segment: clients remove them (RFC 3986), and
# what is left is another path ("/api/jobs/return": 405).
@given(
    job_id=st.text(min_size=1, max_size=60).filter(
        lambda s: "/" not in s and "?" not in s and s not in (".", "..")
    )
)
def test_status_and_return_of_made_up_jobs(stack, unchanged, job_id):
    refused(httpx.get(f"{stack.gateway}/api/jobs/{_quoted(job_id)}", timeout=30))
    back = httpx.post(
        f"{stack.gateway}/api/jobs/{_quoted(job_id)}/return",
        json={"session_id": "cs_x"},
        timeout=30,
    )
    refused(back)


@EXAMPLES
@given(body=json_values)
def test_return_with_hostile_bodies_changes_nothing(stack, unchanged, paid_job, body):
    response = httpx.post(f"{stack.gateway}/api/jobs/{paid_job}/return", json=body, timeout=30)
    if response.status_code == 200:  # a body that happens to be {"session_id": "..."}
        assert response.json()["status"] == "pending"
        assert "download_url" not in response.json()
    else:
        refused(response)


@EXAMPLES
@given(
    event_type=st.sampled_from(
        ["checkout.session.completed", "checkout.session.expired", "charge.refunded",
         "payment_intent.payment_failed", "checkout.session.async_payment_succeeded", "x",
         "refund.created", "refund.failed", "charge.dispute.created", "charge.dispute.closed"]
    ),
    stripe_object=json_values,
    job_id=st.none() | st.text(max_size=30),
)  # fmt: skip
def test_signed_events_of_any_shape_change_no_job_of_ours(
    stack, unchanged, paid_job, event_type, stripe_object, job_id
):
    if isinstance(stripe_object, dict) and job_id is not None:
        stripe_object["metadata"] = {"job_id": job_id}
    event = {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "livemode": False,
             "data": {"object": stripe_object}}  # fmt: skip
    payload = json.dumps(event).encode()
    response = httpx.post(
        f"{stack.gateway}/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": sign_payload(payload, SECRET)},
        timeout=30,
    )
    if response.status_code == 200:
        assert response.json()["result"] in ("ignored", "unknown job", "no change"), response.text
    else:
        refused(response)


@EXAMPLES
@given(
    payload=st.binary(max_size=300),
    # What a header may hold (anything else an HTTP client or parser refuses before the app).
    signature=st.none()
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).filter(
        lambda text: text == text.strip()  # h11 itself refuses to send padded values
    ),
)
def test_unsigned_or_forged_webhooks_are_refused(stack, unchanged, payload, signature):
    headers = {"Stripe-Signature": signature} if signature is not None else {}
    response = httpx.post(
        f"{stack.gateway}/webhooks/stripe", content=payload, headers=headers, timeout=30
    )
    refused(response)


@EXAMPLES
@given(token=st.text(min_size=1, max_size=120).filter(lambda s: "/" not in s and "?" not in s))
def test_made_up_download_tokens_open_nothing(stack, unchanged, token):
    response = httpx.get(f"{stack.gateway}/downloads/{_quoted(token)}", timeout=30)
    refused(response)


@EXAMPLES
@given(body=json_values, token=st.sampled_from([TOKEN, "wrong", ""]))
def test_admin_refunds_with_hostile_bodies_or_tokens(stack, unchanged, paid_job, body, token):
    if isinstance(body, dict) and token == TOKEN:
        body = [body]  # a valid body would start a real refund: keep every one hostile
    response = httpx.post(
        f"{stack.gateway}/admin/jobs/{paid_job}/refund",
        json=body,
        headers={"Authorization": f"Bearer {token}"} if token else {},
        timeout=30,
    )
    refused(response)


def _quoted(text: str) -> str:
    return quote(text, safe="")


@EXAMPLES
@given(image_url=urls, model=st.none() | st.text(max_size=20), x=st.none() | json_values)
def test_previews_refuse_hostile_urls_models_and_squares(stack, unchanged, image_url, model, x):
    body = {"image_url": image_url, "model": model, "x": x, "y": 0}
    response = httpx.post(f"{stack.gateway}/api/previews", json=body, timeout=30)
    refused(response)


@EXAMPLES
@given(body=json_values)
def test_lost_link_requests_of_any_shape_send_nothing(stack, unchanged, body):
    response = httpx.post(f"{stack.gateway}/api/links", json=body, timeout=30)
    if response.status_code == 202:  # an address of nobody: the same answer, nothing queued
        assert "If we have completed orders" in response.json()["message"]
    else:
        refused(response)
