"""The money ledger: a refund's allowed steps, and the one lookup of the payment a Stripe
object names, run against SQLite and PostgreSQL; Stripe's objects parsed once."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from gateway.money.stripe_objects import (
    StripeCharge,
    StripeCheckout,
    StripeDispute,
    StripeRefund,
    parse_event,
)
from gateway.store import ledger
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.ledger import (
    REFUND_STEPS,
    IllegalRefundStepError,
    can_refund_step,
    check_refund_step,
)
from gateway.store.lifecycle import NewJob, Paid, create_job, get_job, lock_for_payment, mark_paid
from gateway.store.tables import Refund, RefundStatus

NEW_JOB = NewJob("https://img.example/cat.jpg", "jobs/x/source.png", 2000, 2000, 192, "usd")


# -- the refund's steps ---------------------------------------------------------------


def test_every_refund_status_has_its_steps_listed():
    assert set(REFUND_STEPS) == set(RefundStatus)


def test_a_refund_goes_through_fails_or_is_canceled_and_failed_is_final():
    for wanted in (RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CANCELED):
        check_refund_step(RefundStatus.PENDING, wanted)
    check_refund_step(RefundStatus.SUCCEEDED, RefundStatus.FAILED)  # Stripe, days later
    check_refund_step(RefundStatus.CANCELED, RefundStatus.SUCCEEDED)  # it was on its way
    assert REFUND_STEPS[RefundStatus.FAILED] == frozenset()


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("failed", "succeeded"),  # a late or replayed event changes nothing
        ("failed", "canceled"),
        ("failed", "pending"),  # an admin's retry is a new round, never this row again
        ("succeeded", "pending"),  # never sent twice
        ("succeeded", "canceled"),
        ("canceled", "pending"),
    ],
)
def test_backwards_refund_steps_are_refused(current, wanted):
    with pytest.raises(IllegalRefundStepError, match=f"from {current} to {wanted}"):
        check_refund_step(RefundStatus(current), RefundStatus(wanted))


@given(st.sampled_from(list(RefundStatus)), st.sampled_from(list(RefundStatus)))
def test_can_refund_step_agrees_with_check(current, wanted):
    try:
        check_refund_step(current, wanted)
        assert can_refund_step(current, wanted)
    except IllegalRefundStepError:
        assert not can_refund_step(current, wanted)


# -- against each database ------------------------------------------------------------


@pytest.fixture
def sessions(database_url) -> Iterator[sessionmaker[Session]]:
    engine = create_database_engine(database_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def paid(sessions: sessionmaker[Session], intent: str = "pi_1") -> str:
    """A job paid with ``intent``: its payment row recorded."""
    with sessions.begin() as session:
        job_id = create_job(session, NEW_JOB).id
        mark_paid(
            session,
            job_id,
            lock_for_payment(session, job_id),
            Paid(session_id=f"cs_{intent}", payment_intent_id=intent, customer_email=None),
            "evt_paid",
            [],
        )
    return job_id


def test_a_refund_s_moves_are_guarded_and_an_illegal_one_changes_nothing(sessions, caplog):
    job_id = paid(sessions)
    with sessions.begin() as session:
        job = get_job(session, job_id, lock=True)
        refund = ledger.new_refund(session, job, "CorruptImageError", 192, "usd")
        assert (refund.status, refund.idempotency_key) == ("pending", f"refund-{job_id}-1")
        assert ledger.refund_went_through(refund, 192, stripe_id="re_1")
        assert not ledger.refund_went_through(refund, 192)  # staying put: no step
        with (
            caplog.at_level(logging.WARNING, logger="gateway.store.ledger"),
            pytest.raises(IllegalRefundStepError, match="from succeeded to canceled"),
        ):
            ledger.cancel_refund(refund, "not needed")
        assert [r.getMessage() for r in caplog.records] == ["refused refund step"]
        assert refund.status == "succeeded" and refund.last_error is None
        assert ledger.fail_refund(refund, "Stripe reports the refund failed")  # days later
    with sessions.begin() as session:
        (refund,) = session.query(Refund).filter_by(job_id=job_id)
        assert (refund.status, refund.stripe_refund_id) == ("failed", "re_1")
        for move in (
            lambda: ledger.refund_went_through(refund, 192),
            lambda: ledger.cancel_refund(refund, "not needed"),
        ):
            with pytest.raises(IllegalRefundStepError, match="from failed to"):
                move()
        assert refund.status == "failed"


def test_rounds_of_ours_count_and_pending_ones_are_canceled_together(sessions):
    job_id = paid(sessions)
    with sessions.begin() as session:
        job = get_job(session, job_id, lock=True)
        first = ledger.new_refund(session, job, "first", 192, "usd")
        ledger.fail_refund(first, "refused")
        made = ledger.refund_made_at_stripe(session, job, "re_dash", 20, "usd")
        ledger.refund_went_through(made, 20)
        second = ledger.new_refund(session, job, "an admin's retry", 172, "usd")
        session.flush()
        assert second.idempotency_key == f"refund-{job_id}-2"  # the Dashboard's is not a round
        assert ledger.refunded_so_far(session, job) == 20
        ledger.cancel_pending_refunds(session, job, "not needed: refunded at Stripe")
    with sessions() as session:
        rows = session.query(Refund).filter_by(job_id=job_id).order_by(Refund.id)
        assert [(r.idempotency_key, r.status) for r in rows] == [
            (f"refund-{job_id}-1", "failed"),
            ("stripe-re_dash", "succeeded"),
            (f"refund-{job_id}-2", "canceled"),
        ]


# -- which payment a Stripe object names ----------------------------------------------


def test_one_lookup_finds_the_payment_by_intent_by_charge_or_by_the_charge_s_own_id(sessions):
    job_id, other = paid(sessions, "pi_1"), paid(sessions, "pi_2")

    def job_named(session: Session, named: ledger.NamesPayment) -> str | None:
        payment = ledger.payment_named(session, named)
        return payment.job_id if payment is not None else None

    only_charge = StripeDispute.parse({"id": "dp_1", "charge": "ch_1"})
    with sessions.begin() as session:
        by_intent = StripeRefund.parse({"id": "re_1", "payment_intent": "pi_1"})
        assert job_named(session, by_intent) == job_id
        payment = ledger.payment_of(session, get_job(session, job_id))
        assert payment is ledger.payment_named(session, by_intent)
        # A dispute naming only a charge we have not seen names no payment yet ...
        assert job_named(session, only_charge) is None
        # ... until an object naming both has the payment keep its charge.
        both = StripeRefund.parse({"id": "re_2", "payment_intent": "pi_1", "charge": "ch_1"})
        assert payment is not None
        ledger.note_charge(payment, both.charge_id)
    with sessions() as session:
        assert job_named(session, only_charge) == job_id
        charge = StripeCharge.parse({"id": "ch_1", "object": "charge", "refunded": True})
        assert charge.charge_id == "ch_1"  # a charge names its payment by its own id
        assert job_named(session, charge) == job_id
        # The payment intent comes first: a charge of another payment does not mislead it.
        mixed = StripeDispute.parse({"id": "dp_2", "payment_intent": "pi_2", "charge": "ch_1"})
        assert job_named(session, mixed) == other
        for stranger in (
            StripeRefund.parse({"id": "re_x", "payment_intent": "pi_nope"}),
            StripeCharge.parse({"id": "ch_nope"}),
            StripeDispute.parse({"id": "dp_x"}),
        ):
            assert job_named(session, stranger) is None


# -- parsed once ------------------------------------------------------------------------


def test_an_event_s_object_is_parsed_by_its_type_with_what_no_database_stores_cleaned():
    event = parse_event(
        {
            "id": "evt_1",
            "type": "charge.refunded",
            "created": 1700000000,
            "data": {
                "object": {
                    "id": "ch_1",
                    "object": "charge",
                    "payment_intent": "pi_1",
                    "refunded": True,
                    "billing_details": {"email": "buyer\x00@example.com"},
                    "refunds": {"data": [{"id": "re_1", "amount": 50, "status": "succeeded"}]},
                }
            },
        }
    )
    assert isinstance(event.object, StripeCharge)
    assert (event.object.charge_id, event.object.payment_intent) == ("ch_1", "pi_1")
    assert [(r.id, r.amount, r.live) for r in event.object.refunds] == [("re_1", 50, True)]
    billing = event.payload["data"]["object"]["billing_details"]
    assert billing["email"] == "buyer\ufffd@example.com"  # stored and applied cleaned
    assert parse_event({"id": "evt_2", "type": "customer.created"}).object is None


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_parsing_is_total_a_field_of_another_shape_reads_as_absent(value):
    for parse in (StripeCheckout.parse, StripeRefund.parse, StripeCharge.parse):
        raw = {"amount": value, "metadata": value, "refunds": value, "total_details": value}
        parsed = parse(raw)
        assert parsed.job_id is None or isinstance(parsed.job_id, str)
    assert parse_event({"type": "refund.created", "data": {"object": value}}).object is not None
