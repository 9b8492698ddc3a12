"""``POST /webhooks/stripe``: Stripe's events, signature checked on the raw body."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http.requests import read_body, services_of
from gateway.money.stripe_events import apply_event, verify_event

BODY_LIMIT = 1024 * 1024


async def stripe_webhook(request: Request) -> Response:
    services = services_of(request)
    payload = await read_body(request, BODY_LIMIT)
    stripe = services.config.stripe
    event = verify_event(
        payload,
        request.headers.get("stripe-signature"),
        stripe.webhook_secret,
        live=stripe.mode == "live",
    )
    result = await run_in_threadpool(apply_event, services.sessions, event, services.payments)
    return JSONResponse({"received": True, "result": result})


ROUTES = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
