"""Stripe's API under ``/v1``: each endpoint a function of the request and its form.

    ROUTES                      # mounted by ``devtools.emulator.app``
    state_of(request)           # the app's ``EmulatorState``

Every call goes through ``api``: the test-mode key, the faults asked for
(``/_emulator/faults``: latency, 500s, 429s), the form body parsed as the
SDK sends it, and Stripe's idempotency rule for a POST with a key (the
same key and parameters replay the answer; other parameters are refused).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devtools.emulator.errors import StripeError
from devtools.emulator.forms import FormError, parse_form
from devtools.emulator.state import EmulatorState
from devtools.emulator.webhooks import Faults

Handler = Callable[[Request, dict[str, Any]], Awaitable[Any]]


def state_of(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


class Idempotency:
    """Stripe's rule: same key and parameters replay the answer; other parameters are refused."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], tuple[str, int, Any]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[str, str]) -> tuple[str, int, Any] | None:
        return self._answers.get(key)

    def put(self, key: tuple[str, str], fingerprint: str, status: int, body: Any) -> None:
        self._answers[key] = (fingerprint, status, body)


def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` as a Stripe API endpoint (see the module)."""

    async def endpoint(request: Request) -> Response:
        faults: Faults = request.app.state.faults
        try:
            key = _api_key(request)
            if faults.latency_s:
                await asyncio.sleep(faults.latency_s)
            failure = faults.roll()
            if failure == 500:
                raise StripeError(
                    "An unknown error occurred (injected).", status=500, type="api_error"
                )
            if failure == 429:
                raise StripeError(
                    "Too many requests (injected).",
                    status=429,
                    type="invalid_request_error",
                    code="rate_limit",
                )
            params: dict[str, Any] = {}
            if request.method == "POST":
                params = parse_form(await form_pairs(request))
            idem_key = request.headers.get("idempotency-key")
            if request.method != "POST" or not idem_key:
                return JSONResponse(await handler(request, params))
            return await _idempotent(request, key, idem_key, params, handler)
        except StripeError as exc:
            return JSONResponse({"error": exc.body}, status_code=exc.status)
        except FormError as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}},
                status_code=400,
            )

    return endpoint


async def _idempotent(
    request: Request, api_key: str, idem_key: str, params: dict[str, Any], handler: Handler
) -> Response:
    idempotency: Idempotency = request.app.state.idempotency
    fingerprint = hashlib.sha256(
        json.dumps([request.url.path, params], sort_keys=True).encode()
    ).hexdigest()
    slot = (api_key, idem_key)
    lock = idempotency.lock_for(slot)
    await asyncio.to_thread(lock.acquire)
    try:
        previous = idempotency.get(slot)
        if previous is not None:
            if previous[0] != fingerprint:
                raise StripeError(
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{idem_key}' if "
                    "you meant to execute a different request.",
                    type="idempotency_error",
                )
            return JSONResponse(
                previous[2], status_code=previous[1], headers={"Idempotent-Replayed": "true"}
            )
        try:
            body, status = await handler(request, params), 200
        except StripeError as exc:
            if exc.status >= 500:
                raise  # not stored: a retry may succeed
            body, status = {"error": exc.body}, exc.status
        idempotency.put(slot, fingerprint, status, body)
        return JSONResponse(body, status_code=status)
    finally:
        lock.release()


def _api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    key = header.removeprefix("Bearer ").strip()
    if not key:
        raise StripeError("You did not provide an API key.", status=401)
    if not key.startswith(("sk_test_", "rk_test_")):
        raise StripeError("The emulator is test mode only: use an sk_test_ key.", status=401)
    return key


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The ``application/x-www-form-urlencoded`` body Stripe's clients and browsers send."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qsl(body, keep_blank_values=True)


def _list_body(objects: list[dict[str, Any]], request: Request, url: str) -> dict[str, Any]:
    """A Stripe list page: newest first, ``limit`` (1-100) and ``starting_after``."""
    try:
        limit = min(max(int(request.query_params.get("limit", 10)), 1), 100)
    except ValueError:
        raise StripeError("Invalid integer: limit", param="limit") from None
    after = request.query_params.get("starting_after")
    if after:
        ids = [obj["id"] for obj in objects]
        if after not in ids:
            raise StripeError(f"No such object: '{after}'", param="starting_after")
        objects = objects[ids.index(after) + 1 :]
    return {"object": "list", "data": objects[:limit], "has_more": len(objects) > limit, "url": url}


# -- checkout sessions ---------------------------------------------------------------------


async def create_session(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).create_checkout_session(params)


async def list_sessions(request: Request, params: dict[str, Any]) -> Any:
    return _list_body(state_of(request).list_sessions(), request, "/v1/checkout/sessions")


async def get_session(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).get_session(request.path_params["session_id"])


async def session_line_items(request: Request, params: dict[str, Any]) -> Any:
    items = state_of(request).line_items(request.path_params["session_id"])
    return _list_body(
        [{"id": f"li_{i}", "object": "item", **item} for i, item in enumerate(items)],
        request,
        request.url.path,
    )


async def expire_session(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).expire_session(request.path_params["session_id"])


# -- payments, charges, refunds, disputes ------------------------------------------------


async def get_payment_intent(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).get_payment_intent(request.path_params["intent_id"])


async def create_refund(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).create_refund(params)


async def list_refunds(request: Request, params: dict[str, Any]) -> Any:
    refunds = state_of(request).list_refunds(request.query_params.get("payment_intent"))
    return _list_body(refunds, request, "/v1/refunds")


async def get_charge(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).get_charge(request.path_params["charge_id"])


async def list_charges(request: Request, params: dict[str, Any]) -> Any:
    charges = state_of(request).list_charges(request.query_params.get("payment_intent"))
    return _list_body(charges, request, "/v1/charges")


async def get_dispute(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).get_dispute(request.path_params["dispute_id"])


async def list_disputes(request: Request, params: dict[str, Any]) -> Any:
    return _list_body(state_of(request).list_disputes(), request, "/v1/disputes")


async def update_dispute(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).update_dispute(request.path_params["dispute_id"], params)


async def close_dispute(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).close_dispute(request.path_params["dispute_id"])


# -- promotion codes, invoices, events -----------------------------------------------------


async def create_coupon(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).create_coupon(params)


async def create_promotion_code(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).create_promotion_code(params)


async def get_invoice(request: Request, params: dict[str, Any]) -> Any:
    return state_of(request).get_invoice(request.path_params["invoice_id"])


async def list_events(request: Request, params: dict[str, Any]) -> Any:
    query = request.query_params
    types = [value for key, value in query.multi_items() if key.startswith("types[")]
    if query.get("type"):
        types.append(query["type"])
    since = query.get("created[gte]")
    events = state_of(request).list_events(types or None, int(since) if since else None)
    return _list_body(events, request, "/v1/events")


ROUTES = [
    Route("/v1/checkout/sessions", api(create_session), methods=["POST"]),
    Route("/v1/checkout/sessions", api(list_sessions), methods=["GET"]),
    Route("/v1/checkout/sessions/{session_id}", api(get_session), methods=["GET"]),
    Route(
        "/v1/checkout/sessions/{session_id}/line_items",
        api(session_line_items),
        methods=["GET"],
    ),
    Route("/v1/checkout/sessions/{session_id}/expire", api(expire_session), methods=["POST"]),
    Route("/v1/payment_intents/{intent_id}", api(get_payment_intent), methods=["GET"]),
    Route("/v1/refunds", api(create_refund), methods=["POST"]),
    Route("/v1/refunds", api(list_refunds), methods=["GET"]),
    Route("/v1/events", api(list_events), methods=["GET"]),
    Route("/v1/charges", api(list_charges), methods=["GET"]),
    Route("/v1/charges/{charge_id}", api(get_charge), methods=["GET"]),
    Route("/v1/disputes", api(list_disputes), methods=["GET"]),
    Route("/v1/disputes/{dispute_id}", api(get_dispute), methods=["GET"]),
    Route("/v1/disputes/{dispute_id}", api(update_dispute), methods=["POST"]),
    Route("/v1/disputes/{dispute_id}/close", api(close_dispute), methods=["POST"]),
    Route("/v1/coupons", api(create_coupon), methods=["POST"]),
    Route("/v1/promotion_codes", api(create_promotion_code), methods=["POST"]),
    Route("/v1/invoices/{invoice_id}", api(get_invoice), methods=["GET"]),
]
