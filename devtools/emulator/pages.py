"""The emulator's pages: Stripe's hosted checkout, an invoice's PDF, and its test controls.

    ROUTES                      # mounted by ``devtools.emulator.app``

``/pay/{session_id}`` is the page a buyer pays on (test cards: 4242...
succeeds, 4000...0002 is declined); ``/_emulator/...`` lets tests pay
without a browser, inject faults and read the webhook deliveries.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devtools.emulator.api import form_pairs, state_of
from devtools.emulator.errors import StripeError
from devtools.emulator.state import Buyer, PaymentOutcome
from devtools.emulator.webhooks import Faults, WebhookSender
from gateway.currencies import format_money


async def hosted_page(request: Request) -> Response:
    state = state_of(request)
    session_id = request.path_params["session_id"]
    try:
        session = state.get_session(session_id)
    except StripeError as exc:
        return HTMLResponse(_page("Not found", f"<p>{html.escape(str(exc))}</p>"), 404)
    if request.method == "GET":
        return HTMLResponse(_checkout_page(session, state.line_items(session_id), None))
    form = dict(await form_pairs(request))
    outcome = await asyncio.to_thread(state.pay, session_id, _buyer(form))
    if outcome.redirect:
        return RedirectResponse(outcome.redirect, status_code=303)
    session = state.get_session(session_id)
    return HTMLResponse(
        _checkout_page(session, state.line_items(session_id), outcome),
        status_code=402 if outcome.outcome == "declined" else 200,
    )


async def invoice_pdf(request: Request) -> Response:
    try:
        invoice = state_of(request).get_invoice(request.path_params["invoice_id"])
    except StripeError:
        return Response(status_code=404)
    return Response(_invoice_pdf(invoice), media_type="application/pdf")


# -- the tests' controls -------------------------------------------------------------------


async def scripted_pay(request: Request) -> Response:
    form = dict(await form_pairs(request))
    try:
        outcome = await asyncio.to_thread(
            state_of(request).pay, request.path_params["session_id"], _buyer(form)
        )
    except StripeError as exc:
        return JSONResponse({"error": exc.body}, status_code=exc.status)
    return JSONResponse(vars(outcome))


FAULTS = ("error_rate", "rate_limit_rate", "latency_s", "webhook_copies", "reorder_webhooks")


async def set_faults(request: Request) -> Response:
    faults: Faults = request.app.state.faults
    changes = await request.json()
    for name in FAULTS:
        if name in changes:
            setattr(faults, name, type(getattr(faults, name))(changes[name]))
    return JSONResponse({name: getattr(faults, name) for name in changes})


async def deliveries(request: Request) -> Response:
    sender: WebhookSender = request.app.state.sender
    return JSONResponse([vars(record) for record in sender.log])


ROUTES = [
    Route("/invoices/{invoice_id}.pdf", invoice_pdf, methods=["GET"]),
    Route("/pay/{session_id}", hosted_page, methods=["GET", "POST"]),
    Route("/_emulator/checkout/{session_id}/pay", scripted_pay, methods=["POST"]),
    Route("/_emulator/faults", set_faults, methods=["POST"]),
    Route("/_emulator/deliveries", deliveries, methods=["GET"]),
]


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
