"""What an attack on free previews found around the broker, each kept shut by a test.

A reconnect: after RabbitMQ went away and came back, the gateway's first
publish went out on the dead connection and the preview answered 500, once
per process. A publish that finds its connection dead now sends again on a
new one; a broker that is really away is a typed 503 with ``Retry-After``,
and asking again publishes.

The real app on a real server (``tests/test_gateway_app.py``'s stack) and
RabbitMQ (this run's virtual host, through a proxy the test cuts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy import TcpProxy
from test_gateway_app import Stack, start_stack

from conftest import RABBITMQ_URL, purge_queues
from shared.broker import EXPIRES_HEADER, Broker
from shared.topology import PREVIEW_QUEUE

pytestmark = pytest.mark.timeout(300)


def ask(stack: Stack, x: int = 0) -> httpx.Response:
    """What the page posts: a preview of the stack's 120x80 photo, its square at ``x``."""
    body = {"image_url": f"{stack.images}/photo.jpg", "x": x, "y": 0}
    return httpx.post(f"{stack.gateway}/api/previews", json=body, timeout=30)


def status(stack: Stack, preview_id: str) -> httpx.Response:
    return httpx.get(f"{stack.gateway}/api/previews/{preview_id}", timeout=30)


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
