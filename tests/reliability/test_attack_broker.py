"""What an attack on free previews found around the broker, each kept shut by a test.

A preview's expiry: RabbitMQ drops a preview request after its minute on
the queue, but kombu's filesystem transport (the embedded broker of the demo
and of one machine) honours no TTL, so a worker made previews minutes after
their page gave up. The request now carries the moment it expires and the
worker drops it unmade after then, on every broker.

A reconnect: after RabbitMQ went away and came back, the gateway's first
publish went out on the dead connection and the preview answered 500, once
per process. A publish that finds its connection dead now sends again on a
new one; a broker that is really away is a typed 503 with ``Retry-After``,
and asking again publishes.

The real app on a real server (``tests/test_gateway_app.py``'s stack), a real
worker (``upscaler.worker.loop``) with the fast model, the embedded broker and
RabbitMQ (this run's virtual host, through a proxy the test cuts).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy import TcpProxy
from test_gateway_app import Stack, start_stack

import gateway.images.previews
from conftest import FAST_MODEL, RABBITMQ_URL, purge_queues
from servers import wait_for
from shared.broker import EXPIRES_HEADER, Broker
from shared.storage import Storage
from shared.topology import PREVIEW_QUEUE
from upscaler.models.registry import ModelRegistry
from upscaler.worker.config import WorkerConfig
from upscaler.worker.loop import UpscaleWorker

pytestmark = pytest.mark.timeout(300)


@contextmanager
def worker_on(broker_url: str, storage: Storage, registry: ModelRegistry) -> Iterator[None]:
    """A real worker (the fast model, on the CPU) in a thread until the block ends."""
    config = WorkerConfig.from_env(
        {"SMI_BROKER_URL": broker_url, "SMI_STORAGE_URL": storage.url, "SMI_WORKER_DEVICE": "cpu"}
    )
    broker = Broker(broker_url)
    worker = UpscaleWorker(broker, storage, registry, config)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop.set()
        thread.join(timeout=60)
        broker.close()
        assert not thread.is_alive(), "the worker did not stop"


def ask(stack: Stack, x: int = 0) -> httpx.Response:
    """What the page posts: a preview of the stack's 120x80 photo, its square at ``x``."""
    body = {"image_url": f"{stack.images}/photo.jpg", "x": x, "y": 0}
    return httpx.post(f"{stack.gateway}/api/previews", json=body, timeout=30)


def status(stack: Stack, preview_id: str) -> httpx.Response:
    return httpx.get(f"{stack.gateway}/api/previews/{preview_id}", timeout=30)


def test_on_the_embedded_broker_an_expired_preview_request_is_dropped_and_a_fresh_one_made(
    tmp_path: Path, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, caplog: Any
):
    # The gateway's minute, shortened so that the test need not wait for it.
    ttl_s = 5.0
    monkeypatch.setattr(gateway.images.previews, "PREVIEW_TTL_MS", int(ttl_s * 1000))
    caplog.set_level(logging.INFO, logger="upscaler.worker.loop")
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    storage = Storage(f"file://{tmp_path / 'storage'}")
    with start_stack(
        f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        tmp_path,
        broker_url=broker_url,
        SMI_BACKGROUND_IN_PROCESS="false",
        SMI_OFFER_MODELS=FAST_MODEL,
    ) as stack:
        asked = ask(stack)
        assert asked.status_code == 202, asked.text
        preview_id = asked.json()["preview_id"]
        prefix = f"previews/{preview_id}"
        time.sleep(ttl_s + 1)  # no worker yet: the request waits on the queue past its expiry

        with worker_on(broker_url, storage, registry):

            def dropped() -> bool:
                return any(
                    "dropped unmade" in record.getMessage()
                    and getattr(record, "preview_id", None) == preview_id
                    for record in caplog.records
                )

            handled = wait_for(
                lambda: dropped() or storage.exists(f"{prefix}/after.png"),
                timeout=60,
                interval=0.1,
            )
            assert handled
            time.sleep(1)  # time to have written anything, had it been made
            assert not storage.exists(f"{prefix}/before.png")
            assert not storage.exists(f"{prefix}/after.png"), "made after its page gave up"
            assert dropped()
            assert status(stack, preview_id).json()["status"] == "pending"

            # The buyer asks again: a stale pending preview is asked for anew, and made.
            again = ask(stack)
            assert again.status_code == 202 and again.json()["preview_id"] == preview_id
            made = wait_for(
                lambda: status(stack, preview_id).status_code == 200, timeout=120, interval=0.2
            )
            assert made
            assert status(stack, preview_id).json()["status"] == "ready"
            assert storage.exists(f"{prefix}/before.png")
    drops = [r for r in caplog.records if "dropped unmade" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]


def queued_previews(timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """Every preview request waiting on RabbitMQ (acknowledged): message id -> headers."""
    found: dict[str, dict[str, Any]] = {}
    with Broker(RABBITMQ_URL).connection() as connection:
        queue = connection.SimpleQueue(PREVIEW_QUEUE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = queue.get(block=True, timeout=0.5)
            except queue.Empty:
                if found:
                    break
                continue
            found[message.properties["message_id"]] = dict(message.headers or {})
            message.ack()
        queue.close()
    return found


@pytest.fixture
def rabbit_proxy() -> Iterator[TcpProxy]:
    """This run's RabbitMQ virtual host behind a proxy: ``cut()`` is an outage."""
    purge_queues()
    with TcpProxy("127.0.0.1", 5672) as proxy:
        yield proxy
    purge_queues()


def test_after_rabbitmq_comes_back_the_first_preview_is_no_500(
    tmp_path: Path, rabbit_proxy: TcpProxy
):
    broker_url = RABBITMQ_URL.replace(":5672/", f":{rabbit_proxy.port}/")
    with start_stack(
        f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        tmp_path,
        broker_url=broker_url,
        SMI_BACKGROUND_IN_PROCESS="false",
        SMI_PREVIEW_BURST="20",
    ) as stack:
        first = ask(stack, x=0)
        assert first.status_code == 202, first.text  # the gateway's publishing connection is up

        rabbit_proxy.cut()  # RabbitMQ goes away and comes back; nobody asked meanwhile
        time.sleep(0.5)
        rabbit_proxy.restore()
        after = ask(stack, x=1)
        assert after.status_code == 202, after.text

        rabbit_proxy.cut()  # away, and still away when asked
        down = ask(stack, x=2)
        assert down.status_code == 503, down.text
        assert int(down.headers["retry-after"]) > 0
        assert down.json()["error"]["type"] == "broker_unavailable"
        assert str(rabbit_proxy.port) not in down.text  # where the broker is goes to the log
        rabbit_proxy.restore()

        again = ask(stack, x=2)  # after Retry-After the page asks again: published this time
        assert again.status_code == 202, again.text
        ids = [answer.json()["preview_id"] for answer in (first, after, again)]
        queued = queued_previews()
        assert sorted(queued) == sorted(ids)
        for headers in queued.values():  # each carries the moment it expires
            assert 0 < float(headers[EXPIRES_HEADER]) - time.time() <= 60


def close_connections_of_this_vhost() -> int:
    """What RabbitMQ does on a restart or shutdown, to this run's virtual host only: close
    each of its connections from the broker's side (Connection.Close, CONNECTION_FORCED)."""
    vhost = RABBITMQ_URL.rsplit("/", 1)[1]
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    closed = 0
    for line in listed:
        pid, _, on = line.partition("\t")
        if on.strip() == vhost and pid.startswith("<"):
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "closed by the test"],
                capture_output=True,
                check=True,
            )
            closed += 1
    return closed


def test_after_rabbitmq_closes_the_connection_itself_the_next_preview_is_published(
    tmp_path: Path,
):
    """A broker-side close (py-amqp's ConnectionForced, not an OSError) is a lost connection
    like any other: the publisher reconnects and sends again, no 500."""
    with start_stack(
        f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        tmp_path,
        broker_url=RABBITMQ_URL,
        SMI_BACKGROUND_IN_PROCESS="false",
        SMI_PREVIEW_BURST="20",
    ) as stack:
        assert ask(stack, x=0).status_code == 202  # the publishing connection is up
        assert close_connections_of_this_vhost() >= 1
        answers = [ask(stack, x=x).status_code for x in (1, 2, 3)]
        assert answers == [202, 202, 202], answers
    purge_queues()
