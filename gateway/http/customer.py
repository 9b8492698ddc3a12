"""The customer's API, called by ``smi-checkout.js`` from the shop's page.

POST /api/checkout               {"image_url", "return_url"?} -> 201 {"job_id", "checkout_url", ...}
GET  /api/jobs/{job_id}          the job as the customer sees it (a pure read)
POST /api/jobs/{job_id}/return   {"session_id"}: back from paying; fulfils the job if
                                 Stripe says it is paid and the webhook has not come yet
POST /api/links                  {"email"}: a buyer who lost the link gets one email with
                                 fresh links to that address's completed jobs; the answer
                                 is the same, and as fast, whether the address is known or
                                 not (it only queues the request; the email relay looks)

A job id alone opens its status, progress, price, image size and times,
never a download nor the checkout's address: the id travels in the success
URL (history, Referer, analytics). The download link (and, while the job
waits for payment, the checkout's address) is given only to whoever shows
the job's buyer key in the ``X-Buyer-Key`` header: a secret of our own,
handed once in the answer to ``POST /api/checkout`` and kept by the script
in the shop's own storage, never in an address. A Checkout Session id is
no proof: it is in the checkout's address, Stripe's Dashboard and the
seller's notices. The emailed link is the other way in.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.currencies import exponent
from gateway.delivery.emails import request_links
from gateway.delivery.links import DownloadLinks, holds_buyer_key
from gateway.errors import GatewayError, RequestError
from gateway.http.limits import client_of
from gateway.http.openapi import (
    BUYER_OR_ANYONE,
    EMAIL,
    NO_STORE_HEADER,
    STRING,
    Answer,
    Body,
    Link,
    Operation,
    Param,
    described,
    errors,
    nullable,
    obj,
    string,
)
from gateway.http.requests import email_in, in_session, off_loop, read_json, services_of
from gateway.http.schemas import CHECKOUT_STARTED, CHOSEN_MODEL, JOB
from gateway.metrics import CHECKOUTS
from gateway.money.checkout import origin_of, parse_checkout_request, start_checkout
from gateway.money.fulfilment import fulfil_on_return
from gateway.store.lifecycle import MESSAGE_KEYS, get_job
from gateway.store.queries import stamp
from gateway.store.tables import Job
from shared.jobs import JobStatus
from shared.models import scale_of

BODY_LIMIT = 16 * 1024
# Checkouts at once per process; the rest wait their turn without holding a thread.
# anyio's default pool (40 threads) keeps the others for webhooks, polls and admins.
CHECKOUT_THREADS = 16
NO_STORE = {"Cache-Control": "no-store"}
KEY_HEADER = "X-Buyer-Key"

JOB_ID = "the job's id, from the checkout's answer"
BUYER_KEY = Param(
    KEY_HEADER,
    "header",
    "the job's buyer key (the checkout's buyer_key): with it, a completed job's answer holds "
    "its download_url, and one awaiting payment its checkout_url",
)
JOB_LINKS = {
    "GetJob": Link(
        "getJob",
        {"job_id": "$response.body#/job_id", "header.X-Buyer-Key": "$response.body#/buyer_key"},
        "the job's status, as its buyer",
    ),
    "ReturnFromCheckout": Link(
        "returnFromCheckout",
        {"job_id": "$response.body#/job_id", "header.X-Buyer-Key": "$response.body#/buyer_key"},
        "the buyer back from Stripe's page",
    ),
}


@described(
    Operation(
        "createCheckout",
        "Start a purchase: the image is fetched and priced, a job and a Checkout Session made",
        tags=("customer",),
        description="The price is computed by the gateway from the image's output size; a "
        "body naming price, amount or amount_cents is refused. Limited per client and for "
        "everyone (SMI_CHECKOUT_*).",
        body=Body(
            "what the buyer clicked",
            obj(
                ("image_url",),
                image_url=string(
                    "the full-size image to sell, on one of the shop's hosts (SMI_SOURCE_HOSTS)",
                    minLength=1,
                ),
                return_url=string(
                    "where the buyer comes back after paying, on a storefront origin "
                    "(SMI_STOREFRONT_ORIGINS) or the gateway's own; the gateway's own by default"
                ),
                language=nullable(
                    string("the page's language, a BCP 47 tag (fr-CA); English otherwise")
                ),
                model=CHOSEN_MODEL,
            ),
        ),
        answers={
            201: Answer("the job and where to pay", CHECKOUT_STARTED, links=JOB_LINKS),
        },
        errors={
            **errors(400, 413, 415, 422, 429, 502),
            503: "payment_provider_unavailable (Stripe), storage_full, or the database; try "
            "again after Retry-After",
        },
    )
)
async def checkout(request: Request) -> Response:
    try:
        response = await _checkout(request)
    except Exception as exc:
        CHECKOUTS.labels(
            outcome=type(exc).__name__ if isinstance(exc, GatewayError) else "error"
        ).inc()
        raise
    CHECKOUTS.labels(outcome="created").inc()
    return response


async def _checkout(request: Request) -> Response:
    services = services_of(request)
    limits, client = request.app.state.checkout_limits, client_of(request)
    await limits.take_client(client)
    body = await read_json(request, BODY_LIMIT)
    config = services.config
    origins = tuple(origin_of(url) for url in (*config.storefront_origins, config.public_url))
    wanted = parse_checkout_request(body, f"{config.public_url}/", origins)
    # Only a valid request takes from everyone's share (given back if its image is unusable).
    # Checkouts fetch from other servers, which may be slow on purpose: they take
    # threads from a limiter of their own, never from the pool webhooks and
    # status polls use.
    async with limits.everyones_share(client):
        started = await anyio.to_thread.run_sync(
            partial(
                start_checkout,
                config,
                services.sessions,
                services.payments,
                services.storage,
                wanted,
            ),
            limiter=checkout_limiter(request),
        )
    return JSONResponse(vars(started), status_code=201)


LINKS_SENT = (
    "If we have completed orders for this address, we have emailed their download links to it."
)


@described(
    Operation(
        "requestDownloadLinks",
        "Email fresh download links for an address's completed orders",
        tags=("customer",),
        description="The answer is the same, and as fast, whether or not the address is "
        "known: it only stores the request. At most one email every ten minutes per address; "
        "limited per client and for everyone.",
        body=Body(
            "the buyer's address",
            obj(("email",), email=EMAIL),
        ),
        answers={
            202: Answer(
                "asked for (the same words for every address)",
                obj(("message",), message=STRING),
            )
        },
        errors=errors(400, 413, 415, 429, 503),
    )
)
async def lost_links(request: Request) -> Response:
    limits, client = request.app.state.link_limits, client_of(request)
    await limits.take_client(client)
    address = email_in(await read_json(request, BODY_LIMIT))
    await limits.take_everyone(client)
    # One row, the same for every address, and nothing read: the answer cannot tell (by
    # its words or its time) whether we know the address. The email relay looks it up.
    await in_session(request, lambda session: request_links(session, address), write=True)
    return JSONResponse({"message": LINKS_SENT}, status_code=202)


def checkout_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's limiter for checkout threads, made on first use (inside the event loop)."""
    state = request.app.state
    if getattr(state, "checkout_limiter", None) is None:
        state.checkout_limiter = anyio.CapacityLimiter(CHECKOUT_THREADS)
    limiter: anyio.CapacityLimiter = state.checkout_limiter
    return limiter


@described(
    Operation(
        "getJob",
        "A job as its page shows it: status, progress, price; its download with its buyer key",
        tags=("customer",),
        description="A pure read. The job id alone shows the status, never the download or "
        "the buyer's email; with X-Buyer-Key a completed job's answer holds a fresh signed "
        "download_url.",
        path={"job_id": JOB_ID},
        params=(BUYER_KEY,),
        security=BUYER_OR_ANYONE,
        answers={200: Answer("the job", JOB, headers={"Cache-Control": NO_STORE_HEADER})},
        errors={404: "not_found: no such job", 503: errors(503)[503]},
    )
)
async def job_status(request: Request) -> Response:
    return JSONResponse(await read_status(request), headers=NO_STORE)


@described(
    Operation(
        "returnFromCheckout",
        "The buyer is back from Stripe's page: fulfil the job if it is paid, then its status",
        tags=("customer",),
        description="If Stripe's webhook has not come yet, the gateway asks Stripe about the "
        "job's own Checkout Session and fulfils a paid one; then it answers what GET "
        "/api/jobs/{job_id} would.",
        path={"job_id": JOB_ID},
        params=(BUYER_KEY,),
        security=BUYER_OR_ANYONE,
        body=Body(
            "the Checkout Session the buyer paid on (session_id in the return address)",
            obj(("session_id",), session_id=string("Stripe's cs_... id", minLength=1)),
        ),
        answers={200: Answer("the job", JOB, headers={"Cache-Control": NO_STORE_HEADER})},
        errors={**errors(400, 413, 415, 502, 503), 404: "not_found: no such job"},
    )
)
async def returned(request: Request) -> Response:
    services = services_of(request)
    job_id = request.path_params["job_id"]
    body = await read_json(request, BODY_LIMIT)
    session_id = body.get("session_id") if isinstance(body, dict) else None
    if not isinstance(session_id, str) or not session_id:
        raise RequestError("session_id is required")

    await off_loop(
        lambda: fulfil_on_return(services.sessions, services.payments, job_id, session_id)
    )
    return JSONResponse(await read_status(request), headers=NO_STORE)


async def read_status(request: Request) -> dict[str, Any]:
    """The job of the request's path, as ``status_of`` shows it to the request's key holder."""
    job_id, links = request.path_params["job_id"], services_of(request).links
    key = request.headers.get(KEY_HEADER)
    return await in_session(
        request, lambda session: status_of(get_job(session, job_id), links, key)
    )


def status_of(job: Job, links: DownloadLinks, buyer_key: str | None = None) -> dict[str, Any]:
    """What the customer's page shows about a job; the download (and the checkout's
    address) only to the holder of its buyer key."""
    buyer = holds_buyer_key(job.buyer_key_hash, buyer_key)
    return {
        "job_id": job.id,
        "status": job.status,
        "message": job.customer_message,
        "message_key": MESSAGE_KEYS.get(job.customer_message),
        "language": job.language,
        "model": job.model,
        "scale": scale_of(job.model),
        "decline_code": job.decline_code,
        "progress": job.progress,
        "amount_cents": job.amount_cents,
        "currency": job.currency,
        "currency_exponent": exponent(job.currency),
        "width": job.width,
        "height": job.height,
        "created_at": stamp(job.created_at),
        "updated_at": stamp(job.updated_at),
        "paid_at": stamp(job.paid_at),
        "finished_at": stamp(job.finished_at),
        **(download_link(job, links) if buyer else {}),
        # A customer whose card was declined pays again on the same session.
        **(
            {"checkout_url": job.checkout_url}
            if buyer and job.status == JobStatus.AWAITING_PAYMENT
            else {}
        ),
    }


def download_link(job: Job, links: DownloadLinks) -> dict[str, Any]:
    """A fresh signed link for a completed job, and when it stops working."""
    if job.status != JobStatus.COMPLETED or not job.result_key or job.result_deleted_at:
        return {}
    token, expires = links.issue(job.id)
    return {"download_url": links.url(token), "download_expires_at": expires.isoformat()}


ROUTES = [
    Route("/api/checkout", checkout, methods=["POST"]),
    Route("/api/jobs/{job_id}", job_status, methods=["GET"]),
    Route("/api/jobs/{job_id}/return", returned, methods=["POST"]),
    Route("/api/links", lost_links, methods=["POST"]),
]
