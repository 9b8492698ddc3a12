"""Stripe, through the official SDK: checkout sessions, retrieval, refunds.

    >>> payments = Payments(config.stripe)
    >>> session = payments.create_checkout_session(job, quote, return_url)

SDK errors become gateway errors here and only here: rate limits and
network failures (after the SDK's own retries) are ``PaymentProviderUnavailable``
(503, try later); invalid requests are ``PaymentProviderRejected`` (502).
What Stripe answers is parsed here too, into ``stripe_objects``' types.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import stripe

from gateway.config import CheckoutOptions, StripeConfig
from gateway.errors import PaymentProviderRejected, PaymentProviderUnavailable
from gateway.money.pricing import Quote
from gateway.money.stripe_objects import (
    StripeCharge,
    StripeCheckout,
    StripeEvent,
    StripeIntent,
    StripeRefund,
    parse_event,
)

PRODUCT_NAME = "High-Resolution Image ({scale}x)"
PLUGIN = "sell-my-images"
REFUND_REASON = "requested_by_customer"
# Stripe's SDK retries network errors, 409s and 5xx with backoff this many times.
MAX_NETWORK_RETRIES = 3

T = TypeVar("T")


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query (the spec's ``add_query_arg``).

    ``{CHECKOUT_SESSION_ID}`` stays unencoded: Stripe replaces it literally.
    """
    parts = urlsplit(url)
    extra = urlencode(params, safe="{}")
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


class Payments:
    """The Stripe operations the gateway uses."""

    def __init__(self, config: StripeConfig, options: CheckoutOptions | None = None) -> None:
        base: Any = {"api": config.api_base} if config.api_base else None
        self.client = stripe.StripeClient(
            config.secret_key, base_addresses=base, max_network_retries=MAX_NETWORK_RETRIES
        )
        self.options = options or CheckoutOptions()

    def create_checkout_session(
        self,
        job_id: str,
        quote: Quote,
        return_url: str,
        expires_minutes: int,
        language: str = "en",
    ) -> Any:
        """The spec's session for one job; its idempotency key is derived from the job."""
        params: Any = {
            "payment_method_types": ["card"],
            "line_items": [
                {
                    "price_data": {
                        "currency": quote.currency,
                        "product_data": {
                            "name": PRODUCT_NAME.format(scale=quote.scale),
                            "description": quote.description,
                            "metadata": {"model": quote.model},
                        },
                        "unit_amount": quote.amount_cents,
                        **(
                            {"tax_behavior": self.options.tax_behavior}
                            if self.options.automatic_tax
                            else {}
                        ),
                    },
                    "quantity": 1,
                }
            ],
            "mode": "payment",
            "success_url": with_query(
                return_url,
                {"smi_payment": "success", "job_id": job_id, "session_id": "{CHECKOUT_SESSION_ID}"},
            ),
            "cancel_url": with_query(return_url, {"smi_payment": "cancel", "job_id": job_id}),
            "metadata": {"job_id": job_id, "plugin": PLUGIN, "model": quote.model},
            # Payment intent events (declines) carry the job id too.
            "payment_intent_data": {"metadata": {"job_id": job_id, "plugin": PLUGIN}},
            "client_reference_id": job_id,
            # Stripe's page in the buyer's language (ours are all Checkout locales).
            "locale": language,
            "expires_at": int(time.time()) + expires_minutes * 60,
            **self._seller_options(),
        }
        return self._call(
            lambda: self.client.v1.checkout.sessions.create(
                params, {"idempotency_key": f"checkout-{job_id}"}
            )
        )

    def _seller_options(self) -> dict[str, Any]:
        """The Checkout options the seller turned on (``CheckoutOptions``), as Stripe names them."""
        options = self.options
        params: dict[str, Any] = {}
        if options.allow_promotion_codes:
            params["allow_promotion_codes"] = True
        if options.automatic_tax:
            params["automatic_tax"] = {"enabled": True}
        if options.invoice_creation:
            params["invoice_creation"] = {"enabled": True}
        if options.collect_billing_address:
            params["billing_address_collection"] = "required"
        return params

    def retrieve_checkout_session(self, session_id: str) -> StripeCheckout:
        session = self._call(lambda: self.client.v1.checkout.sessions.retrieve(session_id))
        return StripeCheckout.parse(session.to_dict())

    def refund(
        self,
        payment_intent: str,
        job_id: str,
        failure_reason: str,
        idempotency_key: str,
        amount: int | None = None,
        request_key: str | None = None,
    ) -> StripeRefund:
        """The spec's ``process_refund``: refund the payment (or ``amount`` of it), once per key.

        ``idempotency_key`` names our refund (in its metadata); ``request_key``,
        when given, is the request's own idempotency key (another amount for the
        same refund is another request).

        When Stripe says the charge is already refunded (a retry after the
        key's 24 hours, or a refund made elsewhere), the existing refund is
        returned instead of an error.
        """
        params: Any = {
            "payment_intent": payment_intent,
            **({"amount": amount} if amount else {}),
            "reason": REFUND_REASON,
            # The key tells our refund's events from a refund made in the Dashboard.
            "metadata": {
                "job_id": job_id,
                "refund_key": idempotency_key,
                "failure_reason": failure_reason[:500],
            },
        }

        def create() -> StripeRefund:
            try:
                refund = self.client.v1.refunds.create(
                    params, {"idempotency_key": request_key or idempotency_key}
                )
                return StripeRefund.parse(refund.to_dict())
            except stripe.InvalidRequestError as exc:
                if exc.code != "charge_already_refunded":
                    raise
                existing = self.existing_refund(payment_intent, ours_only=False)
                if existing is None:
                    raise
                return existing

        return self._call(create)

    def existing_refund(
        self, payment_intent: str, *, ours_only: bool = True
    ) -> StripeRefund | None:
        """A refund of ``payment_intent`` that has gone through or is on its way, if any:
        one of ours (it carries our ``refund_key``) unless ``ours_only`` is false."""
        for refund in self.list_refunds(payment_intent):
            if refund.live and (refund.refund_key or not ours_only):
                return refund
        return None

    def list_refunds(self, payment_intent: str | None = None) -> list[StripeRefund]:
        """Every refund (of one payment intent, when given), newest first."""
        params: Any = {"limit": 100}
        if payment_intent:
            params["payment_intent"] = payment_intent
        return self._call(
            lambda: [
                StripeRefund.parse(r.to_dict())
                for r in self.client.v1.refunds.list(params).auto_paging_iter()
            ]
        )

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        """The payment intent a charge belongs to (events about disputes may name only the
        charge)."""
        charge = self._call(lambda: self.client.v1.charges.retrieve(charge_id).to_dict())
        return StripeCharge.parse(charge).payment_intent

    def job_id_of_payment_intent(self, intent_id: str) -> str | None:
        """The job id a payment intent carries in its metadata (ours all do)."""
        intent = self._call(lambda: self.client.v1.payment_intents.retrieve(intent_id).to_dict())
        return StripeIntent.parse(intent).job_id

    def list_events(self, types: list[str], created_since: int) -> list[StripeEvent]:
        """Events of ``types`` created at or after ``created_since`` (Unix time), newest first."""
        params: Any = {"types": types, "created": {"gte": created_since}, "limit": 100}
        return self._call(
            lambda: [
                parse_event(e.to_dict())
                for e in self.client.v1.events.list(params).auto_paging_iter()
            ]
        )

    def list_checkout_sessions(self) -> list[StripeCheckout]:
        """Every Checkout Session of the account, newest first."""
        return self._call(
            lambda: [
                StripeCheckout.parse(s.to_dict())
                for s in self.client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter()
            ]
        )

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except stripe.RateLimitError as exc:
            raise PaymentProviderUnavailable(
                "the payment provider is busy; try again shortly", retry_after_s=10
            ) from exc
        except (stripe.APIConnectionError, stripe.APIError) as exc:
            raise PaymentProviderUnavailable(
                "the payment provider cannot be reached; try again shortly"
            ) from exc
        except stripe.StripeError as exc:
            message = getattr(exc, "user_message", None) or str(exc)
            raise PaymentProviderRejected(f"the payment provider refused: {message}") from exc
