"""What an attack on the gateway's doors found, each kept shut by a test.

Money: a refund stranded by a partial Dashboard refund during our retries, a
refund dropped by a won dispute. The gateway runs in-process with its
background work driven by hand, against the Stripe emulator through the SDK,
on SQLite and PostgreSQL (``docs/RELIABILITY.md``, "Attacks").
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from test_gateway_app import post_event, start_stack
from test_recovery import TOKEN, Loop, hand_driven

from servers import wait_for
from shared.messages import EventKind
from shared.storage import Storage

DISPUTE_CARD = "4000000000000259"


@pytest.fixture
def loop(database_url, tmp_path) -> Iterator[Loop]:
    with hand_driven(database_url, tmp_path) as hand:
        yield hand


def at_stripe(loop: Loop, job_id: str) -> list[int]:
    """The amounts of the job's live refunds at Stripe, smallest first."""
    intent = loop.job(job_id).stripe_payment_intent_id
    refunds = loop.stack.stripe.v1.refunds.list({"payment_intent": intent}).data
    return sorted(r.amount for r in refunds if r.status in ("succeeded", "pending"))


def test_a_partial_dashboard_refund_during_our_retries_leaves_us_refunding_the_rest(loop):
    job_id = loop.buy()
    paid = loop.job(job_id).amount_cents
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    loop.stack.faults.error_rate = 1.0  # Stripe answers 500 while we refund
    assert loop.refunder().refund_due() == 1
    (ours,) = loop.refunds(job_id)
    assert ours.status == "pending" and ours.amount_cents == paid
    loop.stack.faults.error_rate = 0.0
    intent = loop.job(job_id).stripe_payment_intent_id
    loop.stack.stripe.v1.refunds.create({"payment_intent": intent, "amount": 20})  # by hand
    # Our retry asks for what is left now, whether or not the Dashboard refund's events
    # have come: the buyer gets the rest, never a refusal and a "refund failed".
    assert loop.refunder().refund_due() == 1
    assert loop.job(job_id).status == "refunded"
    assert at_stripe(loop, job_id) == [20, paid - 20]
    wait_for(lambda: len(loop.refunds(job_id)) == 2)
    rows = {r.idempotency_key: (r.status, r.amount_cents) for r in loop.refunds(job_id)}
    assert rows[f"refund-{job_id}-1"] == ("succeeded", paid - 20), rows
    assert sorted(rows.values()) == [("succeeded", 20), ("succeeded", paid - 20)], rows
    assert loop.outbox(job_id).count("email:refunded:1") == 1
    assert loop.admin("GET", "/admin/reconciliation").json()["mismatches"] == []


def test_a_dashboard_refund_of_everything_during_our_retries_ends_the_job_without_ours(loop):
    job_id = loop.buy()
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    loop.stack.faults.error_rate = 1.0
    assert loop.refunder().refund_due() == 1
    loop.stack.faults.error_rate = 0.0
    intent = loop.job(job_id).stripe_payment_intent_id
    by_hand = loop.stack.stripe.v1.refunds.create({"payment_intent": intent})
    loop.refunder().refund_due()  # whether or not charge.refunded came first: nothing is sent
    wait_for(lambda: loop.job(job_id).status == "refunded")
    assert at_stripe(loop, job_id) == [by_hand.amount]
    statuses = {r.stripe_refund_id: r.status for r in loop.refunds(job_id)}
    assert sorted(statuses.values()) == ["canceled", "succeeded"], statuses
    assert statuses[by_hand.id] == "succeeded"
    assert loop.outbox(job_id).count("email:refunded:1") == 1


def test_a_won_dispute_resumes_the_refund_an_admin_ordered(database_url, tmp_path):
    """Admin refunds a delivered job, the refund retries, a dispute opens and is won:
    the refund goes on (it is owed), it is not silently dropped."""
    settings = {"SMI_BACKGROUND_IN_PROCESS": "false", "SMI_ADMIN_TOKEN": TOKEN}
    settings["SMI_REFUND_BACKOFF_S"] = "0"
    with start_stack(database_url, tmp_path, webhooks=False, **settings) as stack:
        loop = Loop(stack, stack.sessions())
        body = stack.checkout().json()
        job_id = body["job_id"]
        assert stack.pay(body["checkout_url"], DISPUTE_CARD)["outcome"] == "paid"

        def event(kind: str) -> dict:  # the newest of its kind
            return stack.stripe.v1.events.list({"type": kind}).data[0].to_dict()

        assert post_event(stack, event("checkout.session.completed")).json()["result"] == "applied"
        Storage(stack.config.storage_url).put(f"jobs/{job_id}/result.png", b"\x89PNG result")
        loop.event(job_id, EventKind.COMPLETED, result_key=f"jobs/{job_id}/result.png")
        answer = loop.admin("POST", f"/admin/jobs/{job_id}/refund", json={"reason": "complaint"})
        assert answer.status_code == 202, answer.text
        stack.faults.error_rate = 1.0
        assert loop.refunder().refund_due() == 1  # retrying
        stack.faults.error_rate = 0.0
        opened = event("charge.dispute.created")  # the bank's dispute arrives meanwhile
        assert post_event(stack, opened).json()["result"] == "applied"
        assert loop.job(job_id).status == "disputed"
        assert loop.refunder().refund_due() == 0  # nothing is sent while disputed
        dispute_id = opened["data"]["object"]["id"]
        stack.stripe.v1.disputes.update(
            dispute_id, {"evidence": {"uncategorized_text": "winning_evidence"}}
        )
        assert post_event(stack, event("charge.dispute.closed")).json()["result"] == "applied"
        # Won: the refund the admin ordered goes on, and goes through.
        assert loop.job(job_id).status == "refunding"
        assert loop.refunder().refund_due() == 1
        assert loop.job(job_id).status == "refunded"
        assert at_stripe(loop, job_id) == [loop.job(job_id).amount_cents]
        assert loop.outbox(job_id).count("email:refunded:1") == 1
        url = f"{stack.gateway}/api/jobs/{job_id}"
        assert httpx.get(url, timeout=30).json()["status"] == "refunded"
