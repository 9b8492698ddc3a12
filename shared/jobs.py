"""Job states and the transitions allowed between them.

    awaiting_payment ──paid──▶ pending ──▶ processing ──▶ completed
          │                                    │
          └──expired──▶ expired                └──▶ failed ──▶ refunding ──▶ refunded
                                                                   └──▶ refund_failed

    completed ──admin refund──▶ refunding;  failed / refund_failed ──admin retry──▶ pending
    any paid state ──refunded at Stripe (the Dashboard)──▶ refunded
    paid, not refunded ──dispute opened──▶ disputed ──won──▶ completed | pending | refunding
    refunded ──Stripe says the refund failed after all──▶ refund_failed
    awaiting_payment / expired ──paid another amount, or too late──▶ refunding

Every status change goes through ``check_transition``, so an event that
arrives twice, late or out of order cannot move a job backwards (an
``expired`` after a payment changes nothing; a second ``completed`` is a
no-op for the caller to recognise, not a new state).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is in its life; stored as these strings."""

    AWAITING_PAYMENT = "awaiting_payment"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"
    # The buyer's bank disputes the charge: downloads stop until the dispute is won.
    DISPUTED = "disputed"

    @property
    def is_final(self) -> bool:
        """No worker or Stripe event leaves a final state; only admins refund or retry."""
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {JobStatus.COMPLETED, JobStatus.EXPIRED, JobStatus.REFUNDED, JobStatus.REFUND_FAILED}
)

# A refund made at Stripe (its Dashboard, another tool) ends any paid job:
# the money is back, so there is nothing left to deliver or to refund.
_REFUNDED_AT_STRIPE = frozenset({JobStatus.REFUNDED})
# A dispute may open on any payment that was not refunded; it stops delivery and
# any refund of ours (the dispute decides where the money goes).
_DISPUTED = frozenset({JobStatus.DISPUTED})

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # A payment we cannot fulfil (another amount than the price, or after the job
    # expired) goes straight back: refunding.
    JobStatus.AWAITING_PAYMENT: frozenset(
        {JobStatus.PENDING, JobStatus.EXPIRED, JobStatus.REFUNDING}
    ),
    JobStatus.PENDING: frozenset({JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED})
    | _REFUNDED_AT_STRIPE
    | _DISPUTED,
    # processing -> processing records progress and heartbeats.
    JobStatus.PROCESSING: frozenset(
        {JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.PENDING}
    )
    | _REFUNDED_AT_STRIPE
    | _DISPUTED,
    JobStatus.FAILED: frozenset({JobStatus.REFUNDING, JobStatus.PENDING})
    | _REFUNDED_AT_STRIPE
    | _DISPUTED,
    JobStatus.REFUNDING: frozenset({JobStatus.REFUNDED, JobStatus.REFUND_FAILED}) | _DISPUTED,
    # An admin may retry the refund, or the processing, of a job whose refund failed.
    JobStatus.REFUND_FAILED: frozenset({JobStatus.REFUNDING, JobStatus.PENDING})
    | _REFUNDED_AT_STRIPE
    | _DISPUTED,
    # Only an admin refunds a delivered job (a customer complaint), or Stripe reports
    # that someone did in its Dashboard; no worker event does.
    JobStatus.COMPLETED: frozenset({JobStatus.REFUNDING}) | _REFUNDED_AT_STRIPE | _DISPUTED,
    JobStatus.EXPIRED: frozenset({JobStatus.REFUNDING}),
    # Stripe may report days later that a refund failed (the card was closed): an admin acts.
    JobStatus.REFUNDED: frozenset({JobStatus.REFUND_FAILED}),
    # A won dispute restores delivery (or the work, or the refund, whichever was due);
    # a lost one leaves the job here: the money went back through the bank.
    JobStatus.DISPUTED: frozenset({JobStatus.COMPLETED, JobStatus.PENDING, JobStatus.REFUNDING})
    | _REFUNDED_AT_STRIPE,
}


class IllegalTransitionError(ValueError):
    """Raised by ``check_transition`` when a job may not move from one state to another."""

    def __init__(self, current: JobStatus, wanted: JobStatus) -> None:
        super().__init__(f"a job cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted


def can_transition(current: JobStatus, wanted: JobStatus) -> bool:
    """Whether ``current -> wanted`` is an allowed step."""
    return wanted in ALLOWED_TRANSITIONS[current]


def check_transition(current: JobStatus, wanted: JobStatus) -> None:
    """Raise ``IllegalTransitionError`` unless ``current -> wanted`` is allowed."""
    if not can_transition(current, wanted):
        raise IllegalTransitionError(current, wanted)
