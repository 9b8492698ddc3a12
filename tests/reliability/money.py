"""The money invariants every fault scenario ends with, read from the database and from Stripe.

- every paid Checkout session's job ends ``completed`` or ``refunded``;
- a completed job's payment keeps all its money; a refunded job's payment is
  refunded in full by exactly one refund;
- no refund exists at Stripe for a payment that was not made;
- our own refund records: at most one succeeded per job;
- the buyer got one payment confirmation, one ``completed`` email for a
  completed job, one ``refunded`` email for a refunded one (after at most one
  ``completed`` if it was delivered first), never anything twice.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from system import System

from gateway.store.database import create_database_engine, session_factory
from gateway.store.tables import Job, Refund, RefundStatus

LIVE_REFUNDS = ("succeeded", "pending")


def problems(system: System) -> list[str]:
    """What breaks an invariant right now (an empty list: the money is right)."""
    stripe = system.stripe.v1
    sessions = [
        s.to_dict() for s in stripe.checkout.sessions.list({"limit": 100}).auto_paging_iter()
    ]
    refunds = [r.to_dict() for r in stripe.refunds.list({"limit": 100}).auto_paging_iter()]
    engine = create_database_engine(system.env["SMI_DATABASE_URL"])
    try:
        with session_factory(engine)() as session:
            jobs = {job.id: job for job in session.scalars(select(Job))}
            our_refunds = list(session.scalars(select(Refund)))
    finally:
        engine.dispose()

    found: list[str] = []
    refunded_at_stripe: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for refund in refunds:
        if refund["status"] in LIVE_REFUNDS:
            refunded_at_stripe[refund["payment_intent"]].append(refund)
    paid_intents = set()
    for checkout in sessions:
        if checkout["payment_status"] != "paid":
            continue
        intent, job_id = checkout["payment_intent"], checkout["metadata"]["job_id"]
        paid_intents.add(intent)
        job = jobs.get(job_id)
        if job is None:
            found.append(f"{job_id}: paid at Stripe, unknown here")
            continue
        taken = refunded_at_stripe[intent]
        amount = sum(int(r["amount"]) for r in taken)
        if job.status == "completed" and taken:
            found.append(f"{job_id}: completed, yet {amount} refunded")
        elif job.status == "refunded" and (len(taken) != 1 or amount != checkout["amount_total"]):
            found.append(f"{job_id}: refunded by {len(taken)} refunds of {amount} in all")
        elif job.status not in ("completed", "refunded"):
            found.append(f"{job_id}: paid, and {job.status}")
        found += _email_problems(system, job_id, job.status)
    for intent in refunded_at_stripe.keys() - paid_intents:
        found.append(f"refund at Stripe for {intent}, which was never paid")
    succeeded: dict[str, int] = defaultdict(int)
    for refund in our_refunds:
        if refund.status == RefundStatus.SUCCEEDED:
            succeeded[refund.job_id] += 1
    found += [f"{job_id}: {n} succeeded refunds" for job_id, n in succeeded.items() if n > 1]
    return found


def _email_problems(system: System, job_id: str, status: str) -> list[str]:
    counts = {
        kind: len(system.mail.of_kind(kind, job_id))
        for kind in ("payment_confirmation", "completed", "refunded")
    }
    # A job refunded after it was delivered (an admin's refund) had its completed email too.
    allowed = {"payment_confirmation": {1}, "completed": {0}, "refunded": {0}}
    if status == "completed":
        allowed["completed"] = {1}
    elif status == "refunded":
        allowed |= {"completed": {0, 1}, "refunded": {1}}
    return [
        f"{job_id}: {count} {kind} emails"
        for kind, count in counts.items()
        if count not in allowed[kind]
    ]


def assert_money_safe(system: System, timeout: float = 180.0) -> None:
    """Wait until every invariant holds, then check they stay so; fail with what does not."""
    deadline = time.monotonic() + timeout
    while (found := problems(system)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not found, "\n".join(found) + "\n" + system.logs()
    time.sleep(2)  # nothing late (a second email, a second refund) may follow
    found = problems(system)
    assert not found, "\n".join(found) + "\n" + system.logs()
