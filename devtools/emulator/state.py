"""The emulator's Stripe account: sessions, payments, charges, refunds, disputes, events.

Objects have Stripe's full shapes (``devtools.emulator.shapes``), so the
official SDK and our gateway read them as they read Stripe's. Stripe's test
cards behave as documented: 4242 4242 4242 4242 pays; 4000 0000 0000 0002
and ...9995 are declined; ...0259 pays and is then disputed; ...5126 pays,
and a refund of it fails a moment after it seemed to succeed. Sessions
take promotion codes, automatic tax (one rate per country), invoices and
billing addresses when asked to.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.emulator import shapes
from devtools.emulator.errors import StripeError, missing
from devtools.emulator.money_back import (
    DISPUTE_CARD,
    REFUND_FAILS_CARD,
    MoneyBack,
    flag,
    integer_param,
    new_id,
)
from devtools.emulator.totals import TAX_RATES, new_coupon, new_promotion_code, totals
from gateway.currencies import format_money, minimum_charge, step

SUCCESS_CARD = "4242424242424242"
PAYING_CARDS = frozenset({SUCCESS_CARD, DISPUTE_CARD, REFUND_FAILS_CARD})
DECLINE_CARDS = {
    "4000000000000002": ("generic_decline", "Your card was declined."),
    "4000000000009995": ("insufficient_funds", "Your card has insufficient funds."),
}
API_VERSION = "2025-09-30.clover"
MIN_EXPIRY_S, MAX_EXPIRY_S = 30 * 60, 24 * 60 * 60

# The languages Stripe's hosted Checkout page speaks (the ``locale`` parameter).
CHECKOUT_LOCALES = frozenset(
    {"auto", "bg", "cs", "da", "de", "el", "en", "en-GB", "es", "es-419", "et", "fi", "fil",
     "fr", "fr-CA", "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl",
     "pl", "pt", "pt-BR", "ro", "ru", "sk", "sl", "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW"}
)  # fmt: skip


@dataclass
class PaymentOutcome:
    """What happened when someone paid (or tried to) on the hosted page."""

    outcome: str  # paid, declined, invalid_card, invalid_code, address_required, expired, ...
    message: str
    redirect: str | None = None
    payment_intent: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True)
class Buyer:
    """What the buyer typed on the hosted page."""

    card: str
    email: str = ""
    promotion_code: str = ""
    country: str = ""
    name: str = ""


class EmulatorState(MoneyBack):
    """One test-mode Stripe account. Thread-safe: every method takes the lock."""

    def __init__(self, public_url: str, emit: Callable[[dict[str, Any]], None]) -> None:
        self.public_url = public_url.rstrip("/")
        self._emit = emit
        self._lock = threading.RLock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.coupons: dict[str, dict[str, Any]] = {}
        self.promotion_codes: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._session_extras: dict[str, dict[str, Any]] = {}

    # -- checkout sessions -------------------------------------------------

    def create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode != "payment":
            raise StripeError("The emulator supports mode=payment only.", param="mode")
        success_url = _required(params, "success_url")
        line_items = params.get("line_items")
        if not isinstance(line_items, list) or not line_items:
            raise StripeError("Missing required param: line_items.", param="line_items")
        amount, currency, tax_behaviors = 0, None, set()
        for index, item in enumerate(line_items):
            price = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(price, dict):
                raise StripeError(
                    "Each line item needs price_data.", param=f"line_items[{index}][price_data]"
                )
            unit_amount = integer_param(price, "unit_amount", f"line_items[{index}][price_data]")
            quantity = integer_param(item, "quantity", f"line_items[{index}]", default=1)
            item_currency = str(price.get("currency", "")).lower()
            if currency and item_currency != currency:
                raise StripeError("All line items must share one currency.")
            currency = item_currency
            amount += unit_amount * quantity
            tax_behaviors.add(price.get("tax_behavior") or "unspecified")
        minimum = minimum_charge(currency or "usd")
        if minimum is not None and amount < minimum:
            raise StripeError(
                "The Checkout Session's total amount due must add up to at least "
                f"{format_money(minimum, currency or 'usd')} {currency}",
                param="line_items",
                code="amount_too_small",
            )
        if amount % step(currency or "usd"):
            raise StripeError(
                f"Invalid amount: {currency} amounts must be a multiple of "
                f"{step(currency or 'usd')} (https://docs.stripe.com/currencies#special-cases).",
                param="line_items",
                code="invalid_charge_amount_no_decimal_compatible",
            )
        now = int(time.time())
        expires_at = integer_param(params, "expires_at", "expires_at", default=now + MAX_EXPIRY_S)
        if not MIN_EXPIRY_S <= expires_at - now <= MAX_EXPIRY_S + 60:
            raise StripeError(
                "The `expires_at` timestamp must be between 30 minutes and "
                "24 hours from Checkout Session creation.",
                param="expires_at",
            )
        locale = params.get("locale")
        if locale is not None and locale not in CHECKOUT_LOCALES:
            raise StripeError(
                f"Invalid locale: must be one of {', '.join(sorted(CHECKOUT_LOCALES))}",
                param="locale",
            )
        automatic_tax = flag((params.get("automatic_tax") or {}).get("enabled"))
        if automatic_tax and not tax_behaviors <= {"exclusive", "inclusive"}:
            raise StripeError(
                "With automatic_tax, every price needs a tax_behavior (exclusive or inclusive).",
                param="line_items",
            )
        billing = params.get("billing_address_collection")
        if billing not in (None, "auto", "required"):
            raise StripeError(
                "Invalid billing_address_collection: must be auto or required.",
                param="billing_address_collection",
            )
        session_id = new_id("cs_test")
        session = shapes.checkout_session(
            id=session_id,
            allow_promotion_codes=flag(params.get("allow_promotion_codes")) or None,
            amount_subtotal=amount,
            amount_total=amount,
            automatic_tax={
                "enabled": automatic_tax,
                "liability": {"type": "self"} if automatic_tax else None,
                "provider": "stripe" if automatic_tax else None,
                "status": "requires_location_inputs" if automatic_tax else None,
            },
            billing_address_collection=billing,
            cancel_url=params.get("cancel_url"),
            client_reference_id=params.get("client_reference_id"),
            created=now,
            currency=currency,
            customer_email=params.get("customer_email"),
            expires_at=expires_at,
            invoice_creation={
                "enabled": flag((params.get("invoice_creation") or {}).get("enabled")),
                "invoice_data": {"metadata": {}},
            },
            locale=locale,
            metadata=dict(params.get("metadata") or {}),
            mode=mode,
            payment_method_types=list(params.get("payment_method_types") or ["card"]),
            success_url=success_url,
            url=f"{self.public_url}/pay/{session_id}",
        )
        with self._lock:
            self.sessions[session_id] = session
            self._session_extras[session_id] = {
                "line_items": line_items,
                "tax_behavior": next(iter(tax_behaviors)) if len(tax_behaviors) == 1 else None,
                "payment_intent_metadata": dict(
                    (params.get("payment_intent_data") or {}).get("metadata") or {}
                ),
            }
        return dict(session)

    def get_session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self._session(session_id)
            self._expire_if_due(session)
            return dict(session)

    def line_items(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._session(session_id)
            return list(self._session_extras[session_id]["line_items"])

    def list_sessions(self) -> list[dict[str, Any]]:
        with self._lock:
            for session in self.sessions.values():
                self._expire_if_due(session)
            return [dict(s) for s in reversed(self.sessions.values())]

    def expire_session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise StripeError(
                    f'Only Checkout Sessions with a status in ["open"] can be expired. '
                    f'This Checkout Session has a status of "{session["status"]}".'
                )
            self._expire(session)
            return dict(session)

    # -- paying ------------------------------------------------------------

    def pay(self, session_id: str, buyer: Buyer | str, email: str = "") -> PaymentOutcome:
        """Charge a test card on an open session, as the hosted page does."""
        if isinstance(buyer, str):
            buyer = Buyer(buyer, email)
        card = "".join(ch for ch in buyer.card if ch.isdigit())
        with self._lock:
            session = self._session(session_id)
            self._expire_if_due(session)
            if session["status"] == "expired":
                return PaymentOutcome("expired", "This checkout session has expired.")
            if session["status"] == "complete":
                return PaymentOutcome(
                    "already_paid",
                    "This checkout session is already paid.",
                    redirect=_success_redirect(session),
                    payment_intent=session["payment_intent"],
                )
            if card not in PAYING_CARDS and card not in DECLINE_CARDS:
                return PaymentOutcome(
                    "invalid_card",
                    "Use a Stripe test card: 4242 4242 4242 4242 succeeds, "
                    "4000 0000 0000 0002 is declined, 4000 0000 0000 9995 has "
                    "insufficient funds, 4000 0000 0000 0259 is disputed after paying.",
                )
            refused = self._apply_totals(session, buyer)
            if refused is not None:
                return refused
            if session["amount_total"] == 0:
                session.update(status="complete", payment_status="no_payment_required")
                session["customer_details"] = self._customer_details(session, buyer)
                self.emit_event("checkout.session.completed", session)
                return PaymentOutcome(
                    "paid", "Nothing to pay.", redirect=_success_redirect(session)
                )
            intent = self._payment_intent_for(session)
            if card in DECLINE_CARDS:
                decline_code, message = DECLINE_CARDS[card]
                intent["status"] = "requires_payment_method"
                intent["last_payment_error"] = {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": decline_code,
                    "message": message,
                }
                self.emit_event("payment_intent.payment_failed", intent)
                return PaymentOutcome(
                    "declined", message, payment_intent=intent["id"], decline_code=decline_code
                )
            details = self._customer_details(session, buyer)
            charge = self._charge(intent, card, details)
            intent.update(
                status="succeeded",
                last_payment_error=None,
                amount_received=intent["amount"],
                latest_charge=charge["id"],
                payment_method=charge["payment_method"],
            )
            session.update(status="complete", payment_status="paid", customer_details=details)
            if session["invoice_creation"]["enabled"]:
                session["invoice"] = self._invoice(session, charge)["id"]
            self.emit_event("charge.succeeded", charge)
            self.emit_event("payment_intent.succeeded", intent)
            self.emit_event("checkout.session.completed", session)
            if session["invoice"]:
                self.emit_event("invoice.paid", self.invoices[session["invoice"]])
            if card == DISPUTE_CARD:
                self._open_dispute(charge)
            return PaymentOutcome(
                "paid",
                "Payment succeeded.",
                redirect=_success_redirect(session),
                payment_intent=intent["id"],
            )

    def _apply_totals(self, session: dict[str, Any], buyer: Buyer) -> PaymentOutcome | None:
        """Promotion code and tax into the session's amounts; an outcome if refused."""
        coupon = None
        if buyer.promotion_code:
            if not session["allow_promotion_codes"]:
                return PaymentOutcome("invalid_code", "This checkout does not take codes.")
            found = [
                code
                for code in self.promotion_codes.values()
                if code["code"] == buyer.promotion_code.strip().upper() and code["active"]
            ]
            if not found:
                return PaymentOutcome("invalid_code", "This code is invalid.")
            coupon = found[0]["coupon"]
            session["discounts"] = [{"coupon": None, "promotion_code": found[0]["id"]}]
        country = buyer.country.strip().upper()
        needs_address = (
            session["automatic_tax"]["enabled"]
            or session["billing_address_collection"] == "required"
        )
        if needs_address and not country:
            return PaymentOutcome("address_required", "Enter your billing country.")
        tax_rate = None
        if session["automatic_tax"]["enabled"]:
            tax_rate = TAX_RATES.get(country, 0.0)
            session["automatic_tax"]["status"] = "complete"
        behavior = self._session_extras[session["id"]]["tax_behavior"] or "exclusive"
        amounts = totals(
            session["amount_subtotal"], session["currency"], coupon, tax_rate, behavior
        )
        session["amount_total"] = amounts.total
        session["total_details"] = {
            "amount_discount": amounts.discount,
            "amount_shipping": 0,
            "amount_tax": amounts.tax,
        }
        return None

    def _customer_details(self, session: dict[str, Any], buyer: Buyer) -> dict[str, Any]:
        return {
            "address": shapes.address(country=buyer.country.strip().upper() or None),
            "business_name": None,
            "email": buyer.email or session.get("customer_email") or "customer@example.com",
            "individual_name": None,
            "name": buyer.name or None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }

    def _charge(self, intent: dict[str, Any], card: str, details: dict[str, Any]) -> dict[str, Any]:
        charge_id = new_id("ch")
        charge = shapes.charge(
            id=charge_id,
            amount=intent["amount"],
            amount_captured=intent["amount"],
            balance_transaction=new_id("txn"),
            billing_details={
                "address": details["address"],
                "email": details["email"],
                "name": details["name"],
                "phone": None,
                "tax_id": None,
            },
            created=int(time.time()),
            currency=intent["currency"],
            metadata=dict(intent["metadata"]),
            payment_intent=intent["id"],
            payment_method=new_id("pm"),
            payment_method_details={
                "card": {"brand": "visa", "country": "US", "last4": card[-4:]},
                "type": "card",
            },
            receipt_email=details["email"],
            receipt_url=f"{self.public_url}/receipts/{charge_id}",
            refunds={
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/charges/{charge_id}/refunds",
            },
        )
        self.charges[charge_id] = charge
        return charge

    def _invoice(self, session: dict[str, Any], charge: dict[str, Any]) -> dict[str, Any]:
        invoice_id = new_id("in")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "amount_due": session["amount_total"],
            "amount_paid": session["amount_total"],
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": session["currency"],
            "customer_email": charge["billing_details"]["email"],
            "hosted_invoice_url": f"{self.public_url}/invoices/{invoice_id}",
            "invoice_pdf": f"{self.public_url}/invoices/{invoice_id}.pdf",
            "livemode": False,
            "metadata": {},
            "number": f"SMI-{len(self.invoices) + 1:04d}",
            "paid": True,
            "status": "paid",
            "subtotal": session["amount_subtotal"],
            "tax": session["total_details"]["amount_tax"],
            "total": session["amount_total"],
        }
        self.invoices[invoice_id] = invoice
        return invoice

    def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._lock:
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                raise missing("invoice", invoice_id)
            return dict(invoice)

    def get_payment_intent(self, intent_id: str) -> dict[str, Any]:
        with self._lock:
            intent = self.payment_intents.get(intent_id)
            if intent is None:
                raise missing("payment_intent", intent_id)
            return dict(intent)

    def get_charge(self, charge_id: str) -> dict[str, Any]:
        with self._lock:
            charge = self.charges.get(charge_id)
            if charge is None:
                raise missing("charge", charge_id)
            return dict(charge)

    def list_charges(self, payment_intent: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(c)
                for c in reversed(self.charges.values())
                if payment_intent in (None, c["payment_intent"])
            ]

    # -- promotion codes ---------------------------------------------------

    def create_coupon(self, params: dict[str, Any]) -> dict[str, Any]:
        coupon = new_coupon(params)
        with self._lock:
            if coupon["id"] in self.coupons:
                raise StripeError(
                    f"Coupon already exists: {coupon['id']}", code="resource_already_exists"
                )
            self.coupons[coupon["id"]] = coupon
        return dict(coupon)

    def create_promotion_code(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            code = new_promotion_code(params, self.coupons)
            if any(c["code"] == code["code"] for c in self.promotion_codes.values()):
                raise StripeError(
                    f"An active promotion code with `code: {code['code']}` already exists.",
                    param="code",
                )
            self.promotion_codes[code["id"]] = code
            return dict(code)

    # -- events ------------------------------------------------------------

    def emit_event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = shapes.event(
            id=new_id("evt"),
            api_version=API_VERSION,
            created=int(time.time()),
            data={"object": _snapshot(obj)},
            type=event_type,
        )
        with self._lock:
            self.events.append(event)
        self._emit(event)
        return event

    def list_events(
        self, types: list[str] | None = None, created_since: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; of ``types`` only, created at or after ``created_since``, when given."""
        with self._lock:
            return [
                e
                for e in reversed(self.events)
                if (types is None or e["type"] in types)
                and (created_since is None or e["created"] >= created_since)
            ]

    # -- helpers -------------------------------------------------------------

    def _session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise missing("checkout.session", session_id)
        return session

    def _payment_intent_for(self, session: dict[str, Any]) -> dict[str, Any]:
        if session["payment_intent"]:
            intent = self.payment_intents[session["payment_intent"]]
            intent["amount"] = session["amount_total"]  # a code or tax may have changed it
            return intent
        intent = shapes.payment_intent(
            id=new_id("pi"),
            amount=session["amount_total"],
            client_secret=f"{new_id('pi')}_secret_{secrets.token_hex(8)}",
            currency=session["currency"],
            created=int(time.time()),
            metadata=dict(self._session_extras[session["id"]]["payment_intent_metadata"]),
        )
        self.payment_intents[intent["id"]] = intent
        session["payment_intent"] = intent["id"]
        return intent

    def _expire_if_due(self, session: dict[str, Any]) -> None:
        if session["status"] == "open" and session["expires_at"] <= time.time():
            self._expire(session)

    def _expire(self, session: dict[str, Any]) -> None:
        session["status"] = "expired"
        self.emit_event("checkout.session.expired", session)


def _success_redirect(session: dict[str, Any]) -> str:
    url = str(session["success_url"])
    for placeholder in ("{CHECKOUT_SESSION_ID}", "%7BCHECKOUT_SESSION_ID%7D"):
        url = url.replace(placeholder, session["id"])
    return url


def _required(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not value:
        raise StripeError(f"Missing required param: {name}.", param=name)
    return str(value)


def _snapshot(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` as it is now: later changes must not rewrite a sent event."""
    return copy.deepcopy(obj)
