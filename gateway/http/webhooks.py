"""``POST /webhooks/stripe``: Stripe's events, signature checked on the raw body."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http.openapi import Answer, Body, Operation, Param, described, errors, obj, string
from gateway.http.requests import read_body, services_of
from gateway.metrics import WEBHOOK_EVENTS, WEBHOOK_SECONDS
from gateway.money.stripe_events import HANDLED_TYPES, apply_event, verify_event
from gateway.store.tables import EventOutcome

BODY_LIMIT = 1024 * 1024


WEBHOOK = Operation(
    "stripeWebhook",
    "Stripe's events (Stripe calls this; nobody else can)",
    tags=("webhooks",),
    description="Signed with the endpoint's secret (SMI_STRIPE_*_WEBHOOK_SECRET) over the raw "
    "body; each event takes effect once however often it comes, and is kept with its outcome "
    "(GET /admin/events).",
    params=(Param("Stripe-Signature", "header", "t=...,v1=...: Stripe's signature"),),
    body=Body(
        "a Stripe event",
        obj(
            ("id", "type", "data"),
            id=string("evt_..."),
            type=string("checkout.session.completed, charge.refunded, ..."),
            livemode={"type": "boolean"},
            data=obj(("object",), object={"type": "object"}),
        ),
    ),
    answers={
        200: Answer(
            "received, and what it did",
            obj(
                ("received", "result"),
                received={"type": "boolean", "const": True},
                result=string("what the event did", enum=list(EventOutcome)),
            ),
        )
    },
    errors={
        400: "invalid_signature: Stripe-Signature is missing, wrong or too old (or the "
        "event is not one Stripe would send)",
        413: errors(413)[413],
        503: "event_too_early (a refund or dispute before its payment), Stripe or the "
        "database unavailable: Stripe delivers it again later",
    },
)


@described(WEBHOOK)
async def stripe_webhook(request: Request) -> Response:
    services = services_of(request)
    started = time.perf_counter()
    event_type, outcome = "unknown", "refused"
    try:
        payload = await read_body(request, BODY_LIMIT)
        stripe = services.config.stripe
        event = verify_event(
            payload,
            request.headers.get("stripe-signature"),
            stripe.webhook_secret,
            live=stripe.mode == "live",
        )
        # Only types we know become labels: a label per made-up type would grow forever.
        event_type = event.type if event.type in HANDLED_TYPES else "other"
        outcome = "error"
        result = await run_in_threadpool(apply_event, services.sessions, event, services.payments)
        outcome = result
    finally:
        WEBHOOK_EVENTS.labels(type=event_type, outcome=outcome).inc()
        WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    return JSONResponse({"received": True, "result": result})


ROUTES = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
