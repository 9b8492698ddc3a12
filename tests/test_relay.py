"""The outbox relay against this machine's RabbitMQ and the embedded filesystem broker."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from conftest import RABBITMQ_URL, drain, paid_job
from gateway.background.relay import OutboxRelay
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.tables import OutboxMessage
from shared.broker import Broker
from shared.messages import UpscaleRequest
from shared.topology import UPSCALE_QUEUE

NOWHERE_URL = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def sessions(database_url):
    engine = create_database_engine(database_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def test_paid_jobs_reach_rabbitmq_once(sessions, rabbit):
    jobs = {paid_job(sessions, f"j{i}") for i in range(3)}
    relay = OutboxRelay(sessions, Broker(RABBITMQ_URL))
    assert relay.publish_pending() == 3
    assert relay.publish_pending() == 0
    received = drain(rabbit)
    assert {request.job_id for request in received} == jobs and len(received) == 3
    with sessions() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "upscale"))
        assert all(row.published_at is not None for row in rows)


def test_a_broker_outage_delays_jobs_and_loses_none(sessions, rabbit):
    job_id = paid_job(sessions, "outage")
    down = OutboxRelay(sessions, Broker(NOWHERE_URL), poll_s=0.05, max_backoff_s=0.2)
    thread, stop = down.periodic().start()
    time.sleep(1.0)
    stop.set()
    thread.join(5)
    with sessions() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "upscale")).one()
        assert row.published_at is None and "cannot publish to smi.upscale" in row.last_error
        assert row.publish_attempts >= 2
        emails = session.scalars(select(OutboxMessage).where(OutboxMessage.kind != "upscale"))
        assert all(email.last_error is None for email in emails)  # not the broker's business
    back = OutboxRelay(sessions, Broker(RABBITMQ_URL), poll_s=0.05)
    thread, stop = back.periodic().start()
    try:
        received = drain(rabbit)
    finally:
        stop.set()
        thread.join(5)
    assert [request.job_id for request in received] == [job_id]


def test_the_embedded_broker_crosses_processes(sessions, tmp_path):
    url = f"filesystem://{tmp_path / 'broker'}"
    job_id = paid_job(sessions, "embedded")
    assert OutboxRelay(sessions, Broker(url)).publish_pending() == 1
    consumer = (
        "import sys\n"
        "from shared.broker import Broker\n"
        "from shared.topology import UPSCALE_QUEUE\n"
        "with Broker(sys.argv[1]).connection() as c:\n"
        "    q = c.SimpleQueue(UPSCALE_QUEUE)\n"
        "    m = q.get(block=True, timeout=10)\n"
        "    print(m.body if isinstance(m.body, str) else m.body.decode()); m.ack()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", consumer, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert UpscaleRequest.from_json(done.stdout.strip()).job_id == job_id
    with Broker(url).connection() as connection:  # consumed once: nothing left
        queue = connection.SimpleQueue(UPSCALE_QUEUE)
        assert queue.qsize() == 0
        queue.close()
