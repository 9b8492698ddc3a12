"""The emulator's Stripe account: sessions, payment intents, refunds and events in memory.

Objects have Stripe's shapes (ids with Stripe's prefixes, ``object`` names,
``amount_total``, ``payment_status``, ``last_payment_error`` ...), so the
official SDK and our gateway read them as they read Stripe's.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.money.currencies import format_money, minimum_charge, step

SUCCESS_CARD = "4242424242424242"
DECLINE_CARDS = {
    "4000000000000002": ("generic_decline", "Your card was declined."),
    "4000000000009995": ("insufficient_funds", "Your card has insufficient funds."),
}
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
API_VERSION = "2025-09-30.clover"
MIN_EXPIRY_S, MAX_EXPIRY_S = 30 * 60, 24 * 60 * 60

# The languages Stripe's hosted Checkout page speaks (the ``locale`` parameter).
CHECKOUT_LOCALES = frozenset(
    {"auto", "bg", "cs", "da", "de", "el", "en", "en-GB", "es", "es-419", "et", "fi", "fil",
     "fr", "fr-CA", "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl",
     "pl", "pt", "pt-BR", "ro", "ru", "sk", "sl", "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW"}
)  # fmt: skip


class StripeError(Exception):
    """An error answered with Stripe's error body: ``{"error": {"type", "message", ...}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        for key, value in (("code", code), ("param", param), ("decline_code", decline_code)):
            if value is not None:
                self.body[key] = value


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class PaymentOutcome:
    """What happened when someone paid (or tried to) on the hosted page."""

    outcome: str  # paid, declined, invalid_card, expired, already_paid
    message: str
    redirect: str | None = None
    payment_intent: str | None = None
    decline_code: str | None = None


class EmulatorState:
    """One test-mode Stripe account. Thread-safe: every method takes the lock."""

    def __init__(self, public_url: str, emit: Callable[[dict[str, Any]], None]) -> None:
        self.public_url = public_url.rstrip("/")
        self._emit = emit
        self._lock = threading.RLock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
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
        amount, currency = 0, None
        for index, item in enumerate(line_items):
            price = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(price, dict):
                raise StripeError(
                    "Each line item needs price_data.", param=f"line_items[{index}][price_data]"
                )
            unit_amount = _integer(price, "unit_amount", f"line_items[{index}][price_data]")
            quantity = _integer(item, "quantity", f"line_items[{index}]", default=1)
            item_currency = str(price.get("currency", "")).lower()
            if currency and item_currency != currency:
                raise StripeError("All line items must share one currency.")
            currency = item_currency
            amount += unit_amount * quantity
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
        expires_at = _integer(params, "expires_at", "expires_at", default=now + MAX_EXPIRY_S)
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
        session_id = new_id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency,
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "livemode": False,
            "locale": locale,
            "metadata": dict(params.get("metadata") or {}),
            "mode": mode,
            "payment_intent": None,
            "payment_method_types": list(params.get("payment_method_types") or ["card"]),
            "payment_status": "unpaid",
            "status": "open",
            "success_url": success_url,
            "url": f"{self.public_url}/pay/{session_id}",
        }
        with self._lock:
            self.sessions[session_id] = session
            self._session_extras[session_id] = {
                "line_items": line_items,
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

    def pay(self, session_id: str, card: str, email: str = "") -> PaymentOutcome:
        """Charge a test card on an open session, as the hosted page does."""
        card = "".join(ch for ch in card if ch.isdigit())
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
            if card != SUCCESS_CARD and card not in DECLINE_CARDS:
                return PaymentOutcome(
                    "invalid_card",
                    "Use a Stripe test card: 4242 4242 4242 4242 succeeds, "
                    "4000 0000 0000 0002 is declined, 4000 0000 0000 9995 has "
                    "insufficient funds.",
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
            intent.update(
                status="succeeded",
                last_payment_error=None,
                amount_received=intent["amount"],
                latest_charge=new_id("ch"),
            )
            session.update(
                status="complete",
                payment_status="paid",
                customer_details={
                    "email": email or session.get("customer_email") or "customer@example.com"
                },
            )
            self.emit_event("payment_intent.succeeded", intent)
            self.emit_event("checkout.session.completed", session)
            return PaymentOutcome(
                "paid",
                "Payment succeeded.",
                redirect=_success_redirect(session),
                payment_intent=intent["id"],
            )

    def get_payment_intent(self, intent_id: str) -> dict[str, Any]:
        with self._lock:
            intent = self.payment_intents.get(intent_id)
            if intent is None:
                raise _missing("payment_intent", intent_id)
            return dict(intent)

    # -- refunds -----------------------------------------------------------

    def create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        intent_id = _required(params, "payment_intent")
        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeError(
                f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", param="reason"
            )
        with self._lock:
            intent = self.payment_intents.get(intent_id)
            if intent is None:
                raise _missing("payment_intent", intent_id, param="payment_intent")
            if intent["status"] != "succeeded":
                raise StripeError(
                    f"This PaymentIntent ({intent_id}) does not have a successful "
                    "charge to refund.",
                    code="charge_not_refundable",
                )
            refunded = sum(
                r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent_id
            )
            remaining = intent["amount"] - refunded
            amount = _integer(params, "amount", "amount", default=remaining)
            if remaining <= 0:
                raise StripeError(
                    f"Charge {intent['latest_charge']} has already been refunded.",
                    code="charge_already_refunded",
                )
            if not 0 < amount <= remaining:
                raise StripeError(
                    f"Refund amount ({amount}) is greater than unrefunded amount "
                    f"on charge ({remaining})",
                    param="amount",
                )
            refund = {
                "id": new_id("re"),
                "object": "refund",
                "amount": amount,
                "charge": intent["latest_charge"],
                "created": int(time.time()),
                "currency": intent["currency"],
                "metadata": dict(params.get("metadata") or {}),
                "payment_intent": intent_id,
                "reason": reason,
                "status": "succeeded",
            }
            self.refunds[refund["id"]] = refund
            self.emit_event("refund.created", refund)
            self.emit_event(
                "charge.refunded",
                {
                    "id": intent["latest_charge"],
                    "object": "charge",
                    "payment_intent": intent_id,
                    "amount": intent["amount"],
                    "amount_refunded": refunded + amount,
                    "refunded": refunded + amount >= intent["amount"],
                    "currency": intent["currency"],
                },
            )
            return dict(refund)

    def list_refunds(self, payment_intent: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in reversed(self.refunds.values())
                if payment_intent in (None, r["payment_intent"])
            ]

    # -- events ------------------------------------------------------------

    def emit_event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": dict(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
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
            raise _missing("checkout.session", session_id)
        return session

    def _payment_intent_for(self, session: dict[str, Any]) -> dict[str, Any]:
        if session["payment_intent"]:
            return self.payment_intents[session["payment_intent"]]
        intent = {
            "id": new_id("pi"),
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_received": 0,
            "currency": session["currency"],
            "created": int(time.time()),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": dict(self._session_extras[session["id"]]["payment_intent_metadata"]),
            "status": "requires_payment_method",
        }
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


def _integer(params: dict[str, Any], name: str, where: str, default: int | None = None) -> int:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise StripeError(f"Missing required param: {where}[{name}].", param=name)
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise StripeError(f"Invalid integer: {raw}", param=f"{where}[{name}]") from None


def _missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(
        f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param
    )
