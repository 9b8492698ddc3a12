"""The emulator's HTTP face: Stripe's API under ``/v1``, the hosted checkout page, controls.

app = create_emulator_app(EmulatorSettings(public_url="http://127.0.0.1:12111",
                                           webhook_url="http://127.0.0.1:8000/webhooks/stripe",
                                           webhook_secret="whsec_test"))
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import threading
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devtools.emulator.errors import StripeError
from devtools.emulator.forms import FormError, parse_form
from devtools.emulator.state import Buyer, EmulatorState, PaymentOutcome
from devtools.emulator.webhooks import Faults, WebhookSender
from gateway.money.currencies import format_money

Handler = Callable[[Request, dict[str, Any]], Awaitable[Any]]


@dataclass
class EmulatorSettings:
    public_url: str
    webhook_url: str | None = None
    webhook_secret: str = "whsec_emulator"
    faults: Faults = field(default_factory=Faults)


class _Idempotency:
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


def create_emulator_app(settings: EmulatorSettings) -> Starlette:
    sender = WebhookSender(settings.webhook_url, settings.webhook_secret, settings.faults)
    state = EmulatorState(settings.public_url, sender.send)
    idempotency = _Idempotency()
    faults = settings.faults

    def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
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
                    params = parse_form(await _form_pairs(request))
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

    async def create_session(request: Request, params: dict[str, Any]) -> Any:
        return state.create_checkout_session(params)

    async def list_sessions(request: Request, params: dict[str, Any]) -> Any:
        return _list_body(state.list_sessions(), request, "/v1/checkout/sessions")

    async def get_session(request: Request, params: dict[str, Any]) -> Any:
        return state.get_session(request.path_params["session_id"])

    async def session_line_items(request: Request, params: dict[str, Any]) -> Any:
        items = state.line_items(request.path_params["session_id"])
        return _list_body(
            [{"id": f"li_{i}", "object": "item", **item} for i, item in enumerate(items)],
            request,
            request.url.path,
        )

    async def expire_session(request: Request, params: dict[str, Any]) -> Any:
        return state.expire_session(request.path_params["session_id"])

    async def get_payment_intent(request: Request, params: dict[str, Any]) -> Any:
        return state.get_payment_intent(request.path_params["intent_id"])

    async def create_refund(request: Request, params: dict[str, Any]) -> Any:
        return state.create_refund(params)

    async def list_refunds(request: Request, params: dict[str, Any]) -> Any:
        refunds = state.list_refunds(request.query_params.get("payment_intent"))
        return _list_body(refunds, request, "/v1/refunds")

    async def get_charge(request: Request, params: dict[str, Any]) -> Any:
        return state.get_charge(request.path_params["charge_id"])

    async def list_charges(request: Request, params: dict[str, Any]) -> Any:
        charges = state.list_charges(request.query_params.get("payment_intent"))
        return _list_body(charges, request, "/v1/charges")

    async def get_dispute(request: Request, params: dict[str, Any]) -> Any:
        return state.get_dispute(request.path_params["dispute_id"])

    async def list_disputes(request: Request, params: dict[str, Any]) -> Any:
        return _list_body(state.list_disputes(), request, "/v1/disputes")

    async def update_dispute(request: Request, params: dict[str, Any]) -> Any:
        return state.update_dispute(request.path_params["dispute_id"], params)

    async def close_dispute(request: Request, params: dict[str, Any]) -> Any:
        return state.close_dispute(request.path_params["dispute_id"])

    async def create_coupon(request: Request, params: dict[str, Any]) -> Any:
        return state.create_coupon(params)

    async def create_promotion_code(request: Request, params: dict[str, Any]) -> Any:
        return state.create_promotion_code(params)

    async def get_invoice(request: Request, params: dict[str, Any]) -> Any:
        return state.get_invoice(request.path_params["invoice_id"])

    async def invoice_pdf(request: Request) -> Response:
        try:
            invoice = state.get_invoice(request.path_params["invoice_id"])
        except StripeError:
            return Response(status_code=404)
        return Response(_invoice_pdf(invoice), media_type="application/pdf")

    async def list_events(request: Request, params: dict[str, Any]) -> Any:
        query = request.query_params
        types = [value for key, value in query.multi_items() if key.startswith("types[")]
        if query.get("type"):
            types.append(query["type"])
        since = query.get("created[gte]")
        events = state.list_events(types or None, int(since) if since else None)
        return _list_body(events, request, "/v1/events")

    async def hosted_page(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            session = state.get_session(session_id)
        except StripeError as exc:
            return HTMLResponse(_page("Not found", f"<p>{html.escape(str(exc))}</p>"), 404)
        if request.method == "GET":
            return HTMLResponse(_checkout_page(session, state.line_items(session_id), None))
        form = dict(await _form_pairs(request))
        outcome = await asyncio.to_thread(state.pay, session_id, _buyer(form))
        if outcome.redirect:
            return RedirectResponse(outcome.redirect, status_code=303)
        session = state.get_session(session_id)
        return HTMLResponse(
            _checkout_page(session, state.line_items(session_id), outcome),
            status_code=402 if outcome.outcome == "declined" else 200,
        )

    async def scripted_pay(request: Request) -> Response:
        form = dict(await _form_pairs(request))
        try:
            outcome = await asyncio.to_thread(
                state.pay, request.path_params["session_id"], _buyer(form)
            )
        except StripeError as exc:
            return JSONResponse({"error": exc.body}, status_code=exc.status)
        return JSONResponse(vars(outcome))

    async def set_faults(request: Request) -> Response:
        changes = await request.json()
        for name in (
            "error_rate",
            "rate_limit_rate",
            "latency_s",
            "webhook_copies",
            "reorder_webhooks",
        ):
            if name in changes:
                setattr(faults, name, type(getattr(faults, name))(changes[name]))
        return JSONResponse({name: getattr(faults, name) for name in changes})

    async def deliveries(request: Request) -> Response:
        return JSONResponse([vars(record) for record in sender.log])

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        yield
        sender.close()

    app = Starlette(
        routes=[
            Route("/v1/checkout/sessions", api(create_session), methods=["POST"]),
            Route("/v1/checkout/sessions", api(list_sessions), methods=["GET"]),
            Route("/v1/checkout/sessions/{session_id}", api(get_session), methods=["GET"]),
            Route(
                "/v1/checkout/sessions/{session_id}/line_items",
                api(session_line_items),
                methods=["GET"],
            ),
            Route(
                "/v1/checkout/sessions/{session_id}/expire", api(expire_session), methods=["POST"]
            ),
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
            Route("/invoices/{invoice_id}.pdf", invoice_pdf, methods=["GET"]),
            Route("/pay/{session_id}", hosted_page, methods=["GET", "POST"]),
            Route("/_emulator/checkout/{session_id}/pay", scripted_pay, methods=["POST"]),
            Route("/_emulator/faults", set_faults, methods=["POST"]),
            Route("/_emulator/deliveries", deliveries, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.emulator = state
    app.state.faults = faults
    return app


async def _form_pairs(request: Request) -> list[tuple[str, str]]:
    """The ``application/x-www-form-urlencoded`` body Stripe's clients and browsers send."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qsl(body, keep_blank_values=True)


def _buyer(form: dict[str, str]) -> Buyer:
    return Buyer(
        card=form.get("card", ""),
        email=form.get("email", ""),
        promotion_code=form.get("promotion_code", ""),
        country=form.get("country", ""),
        name=form.get("name", ""),
    )


def _invoice_pdf(invoice: dict[str, Any]) -> bytes:
    """A one-page PDF receipt (the smallest valid PDF: one text line per fact)."""
    facts = [
        f"Receipt {invoice['number']}",
        f"Paid: {format_money(invoice['amount_paid'], invoice['currency'])}",
        f"Tax: {format_money(invoice['tax'], invoice['currency'])}",
        f"Email: {invoice['customer_email']}",
    ]
    text = " ".join(
        f"BT /F1 12 Tf 50 {760 - 20 * i} Td ({line.replace('(', '[').replace(')', ']')}) Tj ET"
        for i, line in enumerate(facts)
    )
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1", "replace")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


def _api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    key = header.removeprefix("Bearer ").strip()
    if not key:
        raise StripeError("You did not provide an API key.", status=401)
    if not key.startswith(("sk_test_", "rk_test_")):
        raise StripeError("The emulator is test mode only: use an sk_test_ key.", status=401)
    return key


def _page(title: str, body: str, lang: str = "en") -> str:
    return f"""<!doctype html>
<html lang="{html.escape(lang)}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; background: #f6f9fc; color: #1a1f36; }}
 main {{ max-width: 26rem; margin: 3rem auto; background: #fff; padding: 2rem;
        border-radius: 8px; box-shadow: 0 2px 8px rgba(0,0,0,.08); }}
 label {{ display: block; margin: 1rem 0 .3rem; font-size: .9rem; }}
 input {{ width: 100%; padding: .6rem; font-size: 1rem; box-sizing: border-box; }}
 button {{ margin-top: 1.2rem; width: 100%; padding: .8rem; font-size: 1rem; color: #fff;
          background: #635bff; border: 0; border-radius: 6px; cursor: pointer; }}
 .error {{ color: #df1b41; }} .muted {{ color: #697386; font-size: .85rem; }}
</style></head><body><main>{body}</main></body></html>"""


def _checkout_page(
    session: dict[str, Any], items: list[dict[str, Any]], outcome: PaymentOutcome | None
) -> str:
    locale = str(session.get("locale") or "en")
    lang = "en" if locale == "auto" else locale
    amount = format_money(
        int(session["amount_total"]), str(session["currency"]), lang.replace("-", "_")
    )
    lines = "".join(
        f"<p><strong>{html.escape(str(item['price_data']['product_data'].get('name', '')))}"
        f"</strong><br><span class='muted'>"
        f"{html.escape(str(item['price_data']['product_data'].get('description', '')))}"
        "</span></p>"
        for item in items
    )
    cancel = html.escape(str(session.get("cancel_url") or ""))
    if session["status"] != "open":
        note = "already paid" if session["status"] == "complete" else "expired"
        return _page("Checkout", f"<h1>Checkout</h1><p>This checkout session is {note}.</p>")
    error = f"<p class='error' role='alert'>{html.escape(outcome.message)}</p>" if outcome else ""
    extra_fields = ""
    if session.get("automatic_tax", {}).get("enabled") or session.get("billing_address_collection"):
        extra_fields += (
            '<label for="name">Name on card</label><input id="name" name="name" '
            'autocomplete="cc-name"><label for="country">Billing country (two letters)</label>'
            '<input id="country" name="country" maxlength="2" value="US" autocomplete="country">'
        )
    if session.get("allow_promotion_codes"):
        extra_fields += (
            '<label for="promotion_code">Promotion code</label>'
            '<input id="promotion_code" name="promotion_code" autocomplete="off">'
        )
    return _page(
        "Checkout",
        f"""
<h1>Pay {amount}</h1>
<p class="muted">Stripe emulator, test mode</p>
{lines}{error}
<form method="post">
 <label for="email">Email</label>
 <input id="email" name="email" type="email" autocomplete="email" value="customer@example.com">
 {extra_fields}
 <label for="card">Card number</label>
 <input id="card" name="card" inputmode="numeric" autocomplete="cc-number"
        placeholder="4242 4242 4242 4242" required>
 <button type="submit">Pay {amount}</button>
</form>
<p><a id="cancel" href="{cancel}">Cancel and return</a></p>
<p class="muted">4242 4242 4242 4242 succeeds; 4000 0000 0000 0002 is declined;
4000 0000 0000 9995 has insufficient funds.</p>""",
        lang,
    )
