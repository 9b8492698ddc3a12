"""Money going back: refunds and disputes of the emulator's charges.

A refund of a charge paid with test card ...5126 fails a moment after it
seemed to succeed (``refund.failed``), as Stripe's test mode does; a charge
paid with ...0259 is disputed at once; evidence ``winning_evidence`` or
``losing_evidence`` decides a dispute, as in Stripe's test mode.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from devtools.emulator import shapes
from devtools.emulator.errors import StripeError, missing

DISPUTE_CARD = "4000000000000259"  # pays, then the buyer's bank disputes it
REFUND_FAILS_CARD = "4000000000005126"  # pays; a refund of it fails asynchronously
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
REFUND_FAILS_AFTER_S = 0.5
# Evidence texts Stripe's test mode reads as the outcome of a dispute.
DISPUTE_EVIDENCE = {"winning_evidence": "won", "losing_evidence": "lost"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def flag(value: Any) -> bool:
    """A boolean parameter as the SDK form-encodes it (``true``/``false``)."""
    return value is True or str(value).lower() == "true"


def integer_param(params: dict[str, Any], name: str, where: str, default: int | None = None) -> int:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise StripeError(f"Missing required param: {where}[{name}].", param=name)
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise StripeError(f"Invalid integer: {raw}", param=f"{where}[{name}]") from None


class MoneyBack:
    """Refunds and disputes; part of ``EmulatorState`` (its lock, charges and events)."""

    _lock: threading.RLock
    charges: dict[str, dict[str, Any]]
    payment_intents: dict[str, dict[str, Any]]
    refunds: dict[str, dict[str, Any]]
    disputes: dict[str, dict[str, Any]]

    def emit_event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # -- refunds -----------------------------------------------------------

    def create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeError(
                f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", param="reason"
            )
        with self._lock:
            charge = self._refundable_charge(params)
            refunded = charge["amount_refunded"]
            remaining = charge["amount"] - refunded
            amount = integer_param(params, "amount", "amount", default=remaining)
            if remaining <= 0:
                raise StripeError(
                    f"Charge {charge['id']} has already been refunded.",
                    code="charge_already_refunded",
                )
            if not 0 < amount <= remaining:
                raise StripeError(
                    f"Refund amount ({amount}) is greater than unrefunded amount "
                    f"on charge ({remaining})",
                    param="amount",
                )
            refund = shapes.refund(
                id=new_id("re"),
                amount=amount,
                balance_transaction=new_id("txn"),
                charge=charge["id"],
                created=int(time.time()),
                currency=charge["currency"],
                metadata=dict(params.get("metadata") or {}),
                payment_intent=charge["payment_intent"],
                payment_method=charge["payment_method"],
                reason=reason,
                status="succeeded",
            )
            self.refunds[refund["id"]] = refund
            charge["amount_refunded"] = refunded + amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            charge["refunds"]["data"].insert(0, refund)
            self.emit_event("refund.created", refund)
            self.emit_event("charge.refunded", charge)
            if charge["payment_method_details"]["card"]["last4"] == REFUND_FAILS_CARD[-4:]:
                timer = threading.Timer(REFUND_FAILS_AFTER_S, self._fail_refund, (refund["id"],))
                timer.daemon = True
                timer.start()
            return dict(refund)

    def _refundable_charge(self, params: dict[str, Any]) -> dict[str, Any]:
        charge_id = params.get("charge")
        if charge_id:
            charge = self.charges.get(str(charge_id))
            if charge is None:
                raise missing("charge", str(charge_id), param="charge")
        else:
            intent_id = str(params.get("payment_intent") or "")
            if not intent_id:
                raise StripeError("Missing required param: payment_intent.", param="payment_intent")
            intent = self.payment_intents.get(intent_id)
            if intent is None:
                raise missing("payment_intent", intent_id, param="payment_intent")
            if intent["status"] != "succeeded":
                raise StripeError(
                    f"This PaymentIntent ({intent_id}) does not have a successful "
                    "charge to refund.",
                    code="charge_not_refundable",
                )
            charge = self.charges[intent["latest_charge"]]
        # A charge whose disputes were all won may be refunded again (the money came back).
        won = ("won", "warning_closed")
        if any(
            d["charge"] == charge["id"] and d["status"] not in won for d in self.disputes.values()
        ):
            raise StripeError(
                f"Charge {charge['id']} has been charged back; it cannot be refunded.",
                code="charge_disputed",
            )
        return charge

    def _fail_refund(self, refund_id: str) -> None:
        """Test card ...5126: the refund fails after it seemed to succeed; the money stays."""
        with self._lock:
            refund = self.refunds[refund_id]
            refund.update(status="failed", failure_reason="expired_or_canceled_card")
            charge = self.charges[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = False
            self.emit_event("refund.updated", refund)
            self.emit_event("refund.failed", refund)

    def list_refunds(self, payment_intent: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r)
                for r in reversed(self.refunds.values())
                if payment_intent in (None, r["payment_intent"])
            ]

    # -- disputes ----------------------------------------------------------

    def _open_dispute(self, charge: dict[str, Any]) -> None:
        now = int(time.time())
        dispute = shapes.dispute(
            id=new_id("dp"),
            amount=charge["amount"],
            charge=charge["id"],
            created=now,
            currency=charge["currency"],
            evidence_details={
                "due_by": now + 7 * 24 * 3600,
                "enhanced_eligibility": {},
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            # Recent API versions name the payment intent; a gateway must also cope
            # with only the charge, so the emulator gives only that.
            payment_intent=None,
        )
        charge["disputed"] = True
        self.disputes[dispute["id"]] = dispute
        self.emit_event("charge.dispute.created", dispute)

    def get_dispute(self, dispute_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._dispute(dispute_id))

    def list_disputes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in reversed(self.disputes.values())]

    def update_dispute(self, dispute_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Evidence; ``winning_evidence`` or ``losing_evidence`` decides it, as in test mode."""
        with self._lock:
            dispute = self._dispute(dispute_id)
            evidence = params.get("evidence") or {}
            for name, value in evidence.items():
                if name not in dispute["evidence"]:
                    raise StripeError(f"Received unknown parameter: evidence[{name}]")
                dispute["evidence"][name] = value
            dispute["evidence_details"]["has_evidence"] = True
            dispute["evidence_details"]["submission_count"] += 1
            dispute["status"] = "under_review"
            self.emit_event("charge.dispute.updated", dispute)
            decided = DISPUTE_EVIDENCE.get(str(evidence.get("uncategorized_text", "")))
            if decided and flag(params.get("submit", True)):
                self._close_dispute(dispute, decided)
            return dict(dispute)

    def close_dispute(self, dispute_id: str) -> dict[str, Any]:
        """The seller accepts the dispute: lost."""
        with self._lock:
            dispute = self._dispute(dispute_id)
            self._close_dispute(dispute, "lost")
            return dict(dispute)

    def _close_dispute(self, dispute: dict[str, Any], status: str) -> None:
        if dispute["status"] in ("won", "lost"):
            raise StripeError(f"This dispute is already closed ({dispute['status']}).")
        dispute["status"] = status
        self.emit_event("charge.dispute.closed", dispute)

    def _dispute(self, dispute_id: str) -> dict[str, Any]:
        dispute = self.disputes.get(dispute_id)
        if dispute is None:
            raise missing("dispute", dispute_id)
        return dispute
