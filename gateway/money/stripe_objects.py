"""Stripe's objects as the gateway reads them: parsed once, typed, never read as dicts after.

    event = parse_event(payload)           # a verified webhook body, a listed or stored event
    event.type, event.object               # "charge.refunded", StripeCharge(...)
    refund = StripeRefund.parse(sdk_refund.to_dict())

An event's object is parsed by the event's type (Stripe names each type
``{object}.{what happened}``); a type the gateway does not act on keeps
only its payload. Parsing is total, since a holder of the webhook secret
may sign any shape: a field that is missing or of another type reads as
absent (``None``, an amount as 0), which no handler acts on. ``parse_event``
first makes every character no database stores U+FFFD (``storable``), so
what is applied is what is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.store.tables import UNSTORABLE

# Checkout's payment statuses that let the work start (a 100% promotion code: nothing due).
PAID_STATUSES = frozenset({"paid", "no_payment_required"})
# Stripe's refund statuses that mean the money is going back (not failed or canceled).
LIVE_REFUND_STATUSES = frozenset({"succeeded", "pending"})
# Stripe's refund statuses that mean no money went back (after it may have seemed so).
FAILED_REFUND_STATUSES = frozenset({"failed", "canceled"})


def storable(value: Any) -> Any:
    """Parsed JSON with every character no database stores (a NUL or lone surrogate a
    buyer typed into their email or name at Stripe) made U+FFFD.

    The event is Stripe's, signed: refusing it would leave a paid order unfulfilled and
    the catch-up failing on it for ever. What a buyer typed is stored as it can be
    (``usable_email`` then refuses such an address for sending).
    """
    if isinstance(value, str):
        return UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def _int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _map(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _job_id(raw: Mapping[str, Any]) -> str | None:
    """Our job id: a session's or payment intent's (our refunds' too) metadata, else a
    session's ``client_reference_id``."""
    return _text(_map(raw, "metadata"), "job_id") or _text(raw, "client_reference_id")


@dataclass(frozen=True)
class StripeCheckout:
    """A Checkout Session: ``checkout.session.*`` events, retrieved and listed sessions."""

    id: str
    job_id: str | None
    payment_status: str | None
    payment_intent: str | None  # none when nothing was due
    amount_total: int | None  # what Stripe took: after promotion codes, tax included
    amount_subtotal: int | None  # the price: before promotion codes and tax
    currency: str | None
    email: str | None  # as the buyer typed it (``customer_details``, else ``customer_email``)
    tax_cents: int
    discount_cents: int

    @property
    def paid(self) -> bool:
        """Whether the work may start: paid, or nothing was due."""
        return self.payment_status in PAID_STATUSES

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StripeCheckout:
        amount, totals = _int(raw, "amount_total"), _map(raw, "total_details")
        return cls(
            id=_text(raw, "id") or "",
            job_id=_job_id(raw),
            payment_status=_text(raw, "payment_status"),
            payment_intent=_text(raw, "payment_intent"),
            amount_total=amount,
            amount_subtotal=_int(raw, "amount_subtotal") if "amount_subtotal" in raw else amount,
            currency=_text(raw, "currency"),
            email=_text(_map(raw, "customer_details"), "email") or _text(raw, "customer_email"),
            tax_cents=_int(totals, "amount_tax") or 0,
            discount_cents=_int(totals, "amount_discount") or 0,
        )


@dataclass(frozen=True)
class StripeIntent:
    """A payment intent (``payment_intent.*``): what a declined payment says."""

    id: str
    job_id: str | None
    decline_code: str  # the bank's decline code, else Stripe's error code
    decline_message: str | None  # Stripe's own words for it

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StripeIntent:
        error = _map(raw, "last_payment_error")
        message = error.get("message")
        return cls(
            id=_text(raw, "id") or "",
            job_id=_job_id(raw),
            decline_code=str(error.get("decline_code") or error.get("code") or "card_declined"),
            decline_message=str(message) if message else None,
        )


@dataclass(frozen=True)
class _AboutACharge:
    """What a refund and a dispute share: they name their payment by its intent, or only
    by the charge."""

    id: str
    job_id: str | None
    status: str | None
    amount: int
    currency: str | None
    payment_intent: str | None
    charge: str | None

    @property
    def charge_id(self) -> str | None:
        return self.charge

    @staticmethod
    def _fields(raw: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": _text(raw, "id") or "",
            "job_id": _job_id(raw),
            "status": _text(raw, "status"),
            "amount": _int(raw, "amount") or 0,
            "currency": _text(raw, "currency"),
            "payment_intent": _text(raw, "payment_intent"),
            "charge": _text(raw, "charge"),
        }


@dataclass(frozen=True)
class StripeRefund(_AboutACharge):
    """A refund (``refund.*``, a charge's refunds, the refunds Stripe lists or makes)."""

    refund_key: str | None  # ours carry it in their metadata; one made at Stripe has none

    @property
    def live(self) -> bool:
        """Whether the money is going back (succeeded or pending)."""
        return self.status in LIVE_REFUND_STATUSES

    @property
    def went_through(self) -> bool:
        """Whether Stripe has not said it failed or was canceled (succeeded, pending,
        requires_action)."""
        return self.status not in FAILED_REFUND_STATUSES

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StripeRefund:
        key = _text(_map(raw, "metadata"), "refund_key")
        return cls(**cls._fields(raw), refund_key=key)


@dataclass(frozen=True)
class StripeCharge:
    """A charge (``charge.*``); its refunds when it lists them (``charge.refunded`` gets
    them from Stripe before it is applied: API versions since 2022-11-15 leave them out)."""

    id: str
    job_id: str | None
    payment_intent: str | None
    refunded: bool  # refunded in full
    refunds: tuple[StripeRefund, ...]  # newest first

    @property
    def charge_id(self) -> str | None:
        """A charge names its payment by its own id."""
        return self.id or None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StripeCharge:
        listed = _map(raw, "refunds").get("data")
        refunds = [r for r in listed if isinstance(r, Mapping)] if isinstance(listed, list) else []
        return cls(
            id=_text(raw, "id") or "",
            job_id=_job_id(raw),
            payment_intent=_text(raw, "payment_intent"),
            refunded=bool(raw.get("refunded")),
            refunds=tuple(StripeRefund.parse(refund) for refund in refunds),
        )


@dataclass(frozen=True)
class StripeDispute(_AboutACharge):
    """A dispute (``charge.dispute.*``): it may name only the charge."""

    reason: str | None
    evidence_due_by: int | None  # Unix time

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StripeDispute:
        due_by = _int(_map(raw, "evidence_details"), "due_by")
        return cls(**cls._fields(raw), reason=_text(raw, "reason"), evidence_due_by=due_by)


# Objects that name their job by metadata, and objects that name a payment.
CHECKOUT_OBJECTS = (StripeCheckout, StripeIntent)
PAYMENT_OBJECTS = (StripeCharge, StripeRefund, StripeDispute)
StripeObject = StripeCheckout | StripeIntent | StripeCharge | StripeRefund | StripeDispute
PaymentObject = StripeCharge | StripeRefund | StripeDispute
# An event type's object, by the type's prefix.
_OBJECTS: dict[str, Callable[[Mapping[str, Any]], StripeObject]] = {
    "checkout.session": StripeCheckout.parse,
    "payment_intent": StripeIntent.parse,
    "charge": StripeCharge.parse,
    "charge.dispute": StripeDispute.parse,
    "refund": StripeRefund.parse,
}


@dataclass(frozen=True)
class StripeEvent:
    """One Stripe event: its object parsed, its payload kept as it is stored."""

    id: str
    type: str
    created: int  # Unix time
    object: StripeObject | None  # None: a type the gateway does not act on
    payload: dict[str, Any]  # the whole event, every character storable


def parse_event(raw: Mapping[str, Any]) -> StripeEvent:
    """A Stripe event (a verified webhook body, a listed or a stored one), parsed once."""
    payload: dict[str, Any] = storable(dict(raw))
    event_type = _text(payload, "type") or ""
    parse = _OBJECTS.get(event_type.rpartition(".")[0])
    stripe_object = _map(_map(payload, "data"), "object")
    return StripeEvent(
        id=_text(payload, "id") or "",
        type=event_type,
        created=_int(payload, "created") or 0,
        object=parse(stripe_object) if parse is not None else None,
        payload=payload,
    )
