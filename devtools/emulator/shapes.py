"""Stripe's object shapes: every field the real API returns, with its type, null when unused.

    session = shapes.checkout_session(id="cs_test_...", amount_total=250, ...)

Each builder starts from a complete object of its kind (the fields of
Stripe's published fixtures, ``stripe/openapi``) and sets what the emulator
knows; the rest keeps Stripe's value for "not used here": ``None``, ``False``,
an empty list or dict of the right type. ``tests/test_emulator.py`` holds
them against those fixtures field by field.
"""

from __future__ import annotations

import copy
from typing import Any

_ADDRESS = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}

_CHECKOUT_SESSION: dict[str, Any] = {
    "id": None,
    "object": "checkout.session",
    "adaptive_pricing": {"enabled": False},
    "after_expiration": None,
    "allow_promotion_codes": None,
    "amount_subtotal": None,
    "amount_total": None,
    "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
    "billing_address_collection": None,
    "cancel_url": None,
    "client_reference_id": None,
    "client_secret": None,
    "collected_information": None,
    "consent": None,
    "consent_collection": None,
    "created": None,
    "currency": None,
    "currency_conversion": None,
    "custom_fields": [],
    "custom_text": {
        "after_submit": None,
        "shipping_address": None,
        "submit": None,
        "terms_of_service_acceptance": None,
    },
    "customer": None,
    "customer_account": None,
    "customer_creation": "if_required",
    "customer_details": None,
    "customer_email": None,
    "discounts": [],
    "expires_at": None,
    "integration_identifier": None,
    "invoice": None,
    "invoice_creation": {"enabled": False, "invoice_data": None},
    "livemode": False,
    "locale": None,
    "managed_payments": None,
    "metadata": {},
    "mode": "payment",
    "origin_context": None,
    "payment_intent": None,
    "payment_link": None,
    "payment_method_collection": "if_required",
    "payment_method_configuration_details": None,
    "payment_method_options": {},
    "payment_method_types": ["card"],
    "payment_status": "unpaid",
    "permissions": None,
    "phone_number_collection": {"enabled": False},
    "recovered_from": None,
    "saved_payment_method_options": None,
    "setup_intent": None,
    "shipping_address_collection": None,
    "shipping_cost": None,
    "shipping_options": [],
    "status": "open",
    "submit_type": None,
    "subscription": None,
    "success_url": None,
    "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
    "ui_mode": "hosted",
    "url": None,
    "wallet_options": None,
}

_PAYMENT_INTENT: dict[str, Any] = {
    "id": None,
    "object": "payment_intent",
    "amount": 0,
    "amount_capturable": 0,
    "amount_details": {"tip": {}},
    "amount_received": 0,
    "application": None,
    "application_fee_amount": None,
    "automatic_payment_methods": None,
    "canceled_at": None,
    "cancellation_reason": None,
    "capture_method": "automatic",
    "client_secret": None,
    "confirmation_method": "automatic",
    "created": None,
    "currency": None,
    "customer": None,
    "customer_account": None,
    "description": None,
    "excluded_payment_method_types": None,
    "last_payment_error": None,
    "latest_charge": None,
    "livemode": False,
    "managed_payments": None,
    "metadata": {},
    "next_action": None,
    "on_behalf_of": None,
    "payment_method": None,
    "payment_method_configuration_details": None,
    "payment_method_options": {
        "card": {"installments": None, "network": None, "request_three_d_secure": "automatic"}
    },
    "payment_method_types": ["card"],
    "processing": None,
    "receipt_email": None,
    "review": None,
    "setup_future_usage": None,
    "shipping": None,
    "source": None,
    "statement_descriptor": None,
    "statement_descriptor_suffix": None,
    "status": "requires_payment_method",
    "transfer_data": None,
    "transfer_group": None,
}

_CHARGE: dict[str, Any] = {
    "id": None,
    "object": "charge",
    "amount": 0,
    "amount_captured": 0,
    "amount_refunded": 0,
    "application": None,
    "application_fee": None,
    "application_fee_amount": None,
    "balance_transaction": None,
    "billing_details": {
        "address": dict(_ADDRESS),
        "email": None,
        "name": None,
        "phone": None,
        "tax_id": None,
    },
    "calculated_statement_descriptor": "SELL MY IMAGES",
    "captured": True,
    "created": None,
    "currency": None,
    "customer": None,
    "description": None,
    "disputed": False,
    "failure_balance_transaction": None,
    "failure_code": None,
    "failure_message": None,
    "fraud_details": {},
    "livemode": False,
    "metadata": {},
    "on_behalf_of": None,
    "outcome": {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "approved_by_network",
        "reason": None,
        "risk_level": "normal",
        "risk_score": 20,
        "seller_message": "Payment complete.",
        "type": "authorized",
    },
    "paid": True,
    "payment_intent": None,
    "payment_method": None,
    "payment_method_details": {"card": {"brand": "visa", "country": "US", "last4": None}},
    "receipt_email": None,
    "receipt_number": None,
    "receipt_url": None,
    "refunded": False,
    "refunds": None,
    "review": None,
    "shipping": None,
    "source": None,
    "source_transfer": None,
    "statement_descriptor": None,
    "statement_descriptor_suffix": None,
    "status": "succeeded",
    "transfer_data": None,
    "transfer_group": None,
}

_REFUND: dict[str, Any] = {
    "id": None,
    "object": "refund",
    "amount": 0,
    "balance_transaction": None,
    "charge": None,
    "created": None,
    "currency": None,
    "customer": None,
    "customer_account": None,
    "destination_details": {"card": {"type": "refund"}, "type": "card"},
    "metadata": {},
    "payment_intent": None,
    "payment_method": None,
    "reason": None,
    "receipt_number": None,
    "source_transfer_reversal": None,
    "status": "succeeded",
    "transfer_reversal": None,
}

_EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip

_DISPUTE: dict[str, Any] = {
    "id": None,
    "object": "dispute",
    "amount": 0,
    "balance_transactions": [],
    "charge": None,
    "created": None,
    "currency": None,
    "enhanced_eligibility_types": [],
    "evidence": dict.fromkeys(_EVIDENCE_FIELDS),
    "evidence_details": {
        "due_by": None,
        "enhanced_eligibility": {},
        "has_evidence": False,
        "past_due": False,
        "submission_count": 0,
    },
    "is_charge_refundable": False,
    "livemode": False,
    "metadata": {},
    "payment_intent": None,
    "payment_method_details": {
        "card": {"brand": "visa", "case_type": "chargeback"},
        "type": "card",
    },
    "reason": "fraudulent",
    "status": "needs_response",
}

_EVENT: dict[str, Any] = {
    "id": None,
    "object": "event",
    "api_version": None,
    "created": None,
    "data": {"object": {}},
    "livemode": False,
    "pending_webhooks": 1,
    "request": {"id": None, "idempotency_key": None},
    "type": None,
}


def _shape(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    unknown = values.keys() - template.keys()
    if unknown:
        raise KeyError(f"not a field of {template['object']}: {', '.join(sorted(unknown))}")
    shaped = copy.deepcopy(template)
    shaped.update(values)
    return shaped


def checkout_session(**values: Any) -> dict[str, Any]:
    return _shape(_CHECKOUT_SESSION, values)


def payment_intent(**values: Any) -> dict[str, Any]:
    return _shape(_PAYMENT_INTENT, values)


def charge(**values: Any) -> dict[str, Any]:
    return _shape(_CHARGE, values)


def refund(**values: Any) -> dict[str, Any]:
    return _shape(_REFUND, values)


def dispute(**values: Any) -> dict[str, Any]:
    return _shape(_DISPUTE, values)


def event(**values: Any) -> dict[str, Any]:
    return _shape(_EVENT, values)


def address(**values: Any) -> dict[str, Any]:
    return {**_ADDRESS, **values}
