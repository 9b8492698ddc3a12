"""The embedded broker between processes: a message is never taken half-written, and a
consumer outlives a message it cannot read.

kombu's folder transport created a message file, then locked and wrote it,
while a consumer in another process takes files without a lock: it could
take one empty, and the JSONDecodeError ended the gateway's job-events
thread for good (the message lost with it). The gateway went on serving
while no worker report reached a job: the watchdog sent a finished job out
again and again. Messages are now written under a name no consumer takes and
renamed whole, and the job-events consumer, like the worker's preview
consumer, starts again when it dies (``/readyz`` says so meanwhile).

Real parts: the filesystem broker in a folder of this test, a publisher in
a second process, the gateway's job-events consumer on SQLite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import paid_job
from gateway.background.job_events import consume_job_events
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.lifecycle import get_job
from servers import wait_for
from shared.broker import Broker
from shared.jobs import JobStatus
from shared.messages import EventKind, JobEvent
from shared.topology import EVENTS_QUEUE

pytestmark = pytest.mark.timeout(120)

PUBLISHER = """
import sys
from shared.broker import Broker
from shared.topology import EVENTS_QUEUE
broker = Broker(sys.argv[1])
for i in range(int(sys.argv[2])):
    broker.publish(EVENTS_QUEUE, "x" * 400_000, message_id=f"m{i}")
broker.close()
"""


def test_a_message_file_is_whole_from_the_moment_a_consumer_could_take_it(tmp_path: Path):
    folder = tmp_path / "broker"
    Broker(f"filesystem://{folder}").connection().release()
    count = 60
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, f"filesystem://{folder}", str(count)],
        stderr=subprocess.PIPE,
        text=True,
    )
    suffix = f".{EVENTS_QUEUE.name}.msg"
    seen: set[str] = set()
    torn: list[str] = []
    while publisher.poll() is None or len(seen) < count:
        # What a consumer takes is every file with the queue's suffix, as soon as it is listed.
        for name in sorted(set(n for n in _names(folder) if n.endswith(suffix)) - seen):
            seen.add(name)
            text = (folder / name).read_text()
            try:
                json.loads(text)
            except ValueError:
                torn.append(f"{name}: {len(text)} characters")
        if publisher.poll() is not None and publisher.returncode != 0:
            break
    assert publisher.wait(timeout=60) == 0, publisher.stderr.read() if publisher.stderr else ""
    assert torn == [], f"{len(torn)} of {len(seen)} messages were listed half-written"
    assert len(seen) == count


def _names(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir()]


def test_the_job_events_consumer_outlives_a_message_it_cannot_read(tmp_path: Path, caplog):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    migrate(engine)
    sessions = session_factory(engine)
    job_id = paid_job(sessions, "outlives")
    url = f"filesystem://{tmp_path / 'broker'}"
    broker = Broker(url)
    stop, up = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=consume_job_events, args=(broker, sessions, stop, up), daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: (tmp_path / "broker" / "control").is_dir(), timeout=30, interval=0.05)
        # What a torn or foreign file looks like to the transport: not JSON at all.
        (tmp_path / "broker" / f"1_torn.{EVENTS_QUEUE.name}.msg").write_text("")
        wait_for(lambda: "consumer died" in caplog.text, timeout=30, interval=0.05)
        event = JobEvent(job_id, EventKind.STARTED, "e1", worker="w1", progress=0.0)
        broker.publish(EVENTS_QUEUE, event.to_json(), message_id=f"{job_id}:started")

        def processing() -> bool:
            with sessions() as session:
                return get_job(session, job_id).status == JobStatus.PROCESSING

        wait_for(processing, timeout=30, interval=0.1)
        assert thread.is_alive() and up.is_set()
    finally:
        stop.set()
        thread.join(timeout=30)
        broker.close()
        engine.dispose()
    assert not thread.is_alive()
