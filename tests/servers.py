"""Real servers on loopback for tests: any ASGI app under uvicorn in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import uvicorn


@contextmanager
def serve(app: Any, port: int = 0) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port unless given); yields its base URL."""
    # As smi-gateway serves: X-Forwarded-For is the app's to judge, not uvicorn's.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def deliver_at_once(gateways: list[str], payload: bytes, secret: str) -> list[Any]:
    """POST one signed webhook to every gateway in the list at the same moment (a thread
    each, released together); the answers, in the list's order."""
    import httpx

    from devtools.emulator.webhooks import sign_payload

    answers: list[Any] = [None] * len(gateways)
    start = threading.Barrier(len(gateways))

    def deliver(n: int) -> None:
        start.wait()
        answers[n] = httpx.post(
            f"{gateways[n]}/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": sign_payload(payload, secret)},
            timeout=60,
        )

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(len(gateways))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for servers that must know their own address).

    Taken below Linux's ephemeral range (32768-60999), where the kernel picks
    the source ports of outgoing connections: one of those could otherwise
    land on it between this check and the server binding it. Never the same
    port twice in one run: two servers of one test asked for theirs together
    once drew the same number, and the second could not bind. ``host``: the
    address the server will listen on.
    """
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found")


class MailSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def of_kind(self, kind: str, job_id: str | None = None) -> list[EmailMessage]:
        """Messages of one kind (``X-SMI-Email``), about one job when given."""
        with self._lock:
            return [
                m
                for m in self.messages
                if m["X-SMI-Email"] == kind and job_id in (None, m["X-SMI-Job"])
            ]

    def __enter__(self) -> MailSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
