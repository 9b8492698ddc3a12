"""The job store, one contract run against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.exc import IntegrityError

from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.lifecycle import (
    NewJob,
    Paid,
    UnknownJobError,
    add_outbox_message,
    audit_trail,
    claim_event,
    complete,
    create_job,
    expire,
    fail,
    get_job,
    lock_for_payment,
    mark_paid,
    settle_event,
    start_processing,
)
from gateway.store.tables import OutboxMessage, WebhookEvent
from shared.jobs import IllegalTransitionError, JobStatus

NEW_JOB = NewJob("https://img.example/cat.jpg", "jobs/x/source.png", 2000, 2000, 192, "usd")
PAID = Paid(session_id="cs_1", payment_intent_id="pi_1", customer_email="buyer@example.com")


def event(event_id: str, event_type: str) -> dict:
    """A Stripe event as the webhook receives it (only what the store reads)."""
    return {"id": event_id, "type": event_type, "data": {"object": {"id": f"cs_{event_id}"}}}


@pytest.fixture
def engine(database_url) -> Iterator[Engine]:
    """A freshly migrated database of each kind."""
    engine = create_database_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


class TestJobStoreContract:
    def test_migrations_create_every_table_and_run_twice(self, engine):
        tables = set(inspect(engine).get_table_names())
        expected = {"jobs", "audit", "webhook_events", "payments", "outbox", "refunds"}
        assert expected <= tables
        migrate(engine)  # already at head: nothing to do, no error

    def test_created_job_awaits_payment_with_an_audit_row(self, engine):
        Session = session_factory(engine)
        with Session.begin() as session:
            job = create_job(session, NEW_JOB)
        assert job.id.startswith("job_") and len(job.id) > 20
        with Session() as session:
            stored = get_job(session, job.id)
            assert stored.status == JobStatus.AWAITING_PAYMENT
            assert [entry.to_status for entry in audit_trail(session, job.id)] == [
                "awaiting_payment"
            ]

    def test_status_changes_are_guarded_and_audited(self, engine):
        Session = session_factory(engine)
        with Session.begin() as session:
            job_id = create_job(session, NEW_JOB).id
        with Session.begin() as session:
            job = get_job(session, job_id, lock=True)
            assert not fail(session, job, "too early", "worker")  # not paid: nothing to fail
            with pytest.raises(IllegalTransitionError):
                complete(session, job, "jobs/x/result.png", "worker")
            mark_paid(session, job_id, lock_for_payment(session, job_id), PAID, "evt_1", [])
        with Session.begin() as session:
            job = get_job(session, job_id, lock=True)
            assert not expire(session, job, "late", "evt_3", "Expired.")  # paid: stays paid
            assert start_processing(session, job, 0.25, 1, "worker")
            assert not start_processing(session, job, 0.5, 1, "worker")  # progress, not a start
        with Session() as session:
            trail = audit_trail(session, job_id)
            assert [(e.from_status, e.to_status) for e in trail] == [
                (None, "awaiting_payment"),
                ("awaiting_payment", "pending"),
                ("pending", "processing"),
            ]
            stored = get_job(session, job_id)
            assert stored.customer_message == "Your image is being upscaled."
            assert stored.progress == 0.5 and stored.attempts == 1
            assert stored.stripe_payment_intent_id == "pi_1"

    def test_unknown_jobs_are_reported(self, engine):
        with session_factory(engine)() as session, pytest.raises(UnknownJobError):
            get_job(session, "job_nope")

    def test_an_event_takes_effect_once_unless_it_failed_or_is_replayed(self, engine):
        Session = session_factory(engine)
        with Session.begin() as session:
            create_job(session, NEW_JOB)
            claimed = claim_event(session, event("evt_1", "checkout.session.completed"))
            assert claimed is not None and claimed.deliveries == 1
        with Session.begin() as session:  # a duplicate: nothing to apply, its delivery counted
            assert claim_event(session, event("evt_1", "checkout.session.completed")) is None
        with Session.begin() as session:
            failed = claim_event(session, event("evt_2", "checkout.session.expired"))
            assert failed is not None
            settle_event(session, failed, None, "error", "it failed")
        with Session.begin() as session:  # an error rolled its effect back: claimable again
            again = claim_event(session, event("evt_2", "checkout.session.expired"))
            assert again is not None and again.deliveries == 2
            assert (again.outcome, again.detail) == ("error", "it failed")
        with Session.begin() as session:  # an admin's replay counts no delivery
            replayed = claim_event(session, event("evt_1", "x"), replay=True)
            assert replayed is not None and replayed.event_id == "evt_1"
        with Session() as session:
            assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 2
            stored = session.get_one(WebhookEvent, "evt_1")
            assert json.loads(stored.payload or "")["data"]["object"]["id"] == "cs_evt_1"
            assert stored.deliveries == 2 and stored.type == "checkout.session.completed"

    def test_outbox_holds_one_message_per_job_kind_and_attempt(self, engine):
        Session = session_factory(engine)
        with Session.begin() as session:
            job = create_job(session, NEW_JOB)
            add_outbox_message(session, job, "upscale", "{}")
            add_outbox_message(session, job, "upscale", "{}", attempt=2)
        with pytest.raises(IntegrityError), Session.begin() as session:
            add_outbox_message(session, get_job(session, job.id), "upscale", "{}")
        with Session() as session:
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 2

    def test_five_simultaneous_deliveries_change_the_job_once(self, engine):
        Session = session_factory(engine)
        with Session.begin() as session:
            job_id = create_job(session, NEW_JOB).id
        barrier = threading.Barrier(5)
        outcomes: list[str] = []

        def deliver() -> None:
            barrier.wait()
            with Session.begin() as session:
                if claim_event(session, event("evt_paid", "checkout.session.completed")) is None:
                    outcomes.append("duplicate")
                    return
                locked = lock_for_payment(session, job_id)
                mark_paid(session, job_id, locked, PAID, "evt_paid", [])
            outcomes.append("applied")

        threads = [threading.Thread(target=deliver) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["applied"] + ["duplicate"] * 4
        with Session() as session:
            assert session.get_one(WebhookEvent, "evt_paid").deliveries == 5
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
            pending = [e for e in audit_trail(session, job_id) if e.to_status == "pending"]
            assert len(pending) == 1
            assert get_job(session, job_id).status == JobStatus.PENDING


def test_processes_starting_together_on_one_sqlite_file_all_migrate_it(tmp_path):
    """``serve --workers N`` on SQLite: each process migrates at start, and none fails."""
    database = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    script = (
        "from gateway.store.database import create_database_engine, migrate\n"
        f"migrate(create_database_engine({database!r}))\n"
    )
    starts = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for start in starts:
        _, errors = start.communicate(timeout=120)
        assert start.returncode == 0, errors
