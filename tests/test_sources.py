"""Fetching the image to sell from hostile servers: compression bombs, dripped headers.

The servers are raw sockets on loopback, so they can send what no framework would.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from test_gateway_app import start_stack

from conftest import sample
from gateway.errors import SourceImageError
from gateway.images.sources import SourcePolicy, fetch_source
from upscaler.output.images import encode_image

PHOTO = encode_image(np.ascontiguousarray(sample("coffee")[100:180, 200:320]), "jpeg")


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on loopback that reads a request, then lets ``answer`` write anything."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return

            def handle(connection: socket.socket = connection) -> None:
                with connection:
                    try:
                        connection.recv(65536)
                        answer(connection)
                    except OSError:
                        pass  # the client gave up on us: that is the point

            threading.Thread(target=handle, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def respond(body: bytes, **headers: str) -> Callable[[socket.socket], None]:
    def answer(connection: socket.socket) -> None:
        lines = [b"HTTP/1.1 200 OK", b"Content-Type: image/jpeg", b"Connection: close"]
        lines += [f"{name.replace('_', '-')}: {value}".encode() for name, value in headers.items()]
        connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    return answer


def drip(connection: socket.socket) -> None:
    """Headers one byte every 0.2 s: each byte restarts a per-read timeout."""
    connection.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(600):
        connection.sendall(b"X")
        time.sleep(0.2)


def policy(host: str, **changes: float) -> SourcePolicy:
    limits = {"max_bytes": 1_000_000, "max_pixels": 4096 * 4096, "timeout_s": 5.0, **changes}
    return SourcePolicy(
        (host,), int(limits["max_bytes"]), int(limits["max_pixels"]), limits["timeout_s"]
    )


def bomb(inflated_mb: int, layers: int = 1) -> bytes:
    """A gzip body of a few hundred kB that inflates to ``inflated_mb`` MB of zeros."""
    body = b"\0" * (inflated_mb * 1_000_000)
    for _ in range(layers):
        body = gzip.compress(body, compresslevel=9)
    return body


def test_a_plain_photo_and_a_gzipped_one_are_fetched():
    with raw_server(respond(PHOTO, Content_Length=str(len(PHOTO)))) as host:
        assert fetch_source(f"http://{host}/a.jpg", policy(host)).width == 120
    packed = gzip.compress(PHOTO)
    with raw_server(respond(packed, Content_Encoding="gzip")) as host:
        assert fetch_source(f"http://{host}/a.jpg", policy(host)).data == PHOTO


def test_a_compression_bomb_stops_at_the_limit_with_bounded_memory():
    """100 MB inflated from 100 kB, 1 MB allowed: refused, and the process stays small."""
    body = bomb(100)
    assert len(body) < 200_000
    with raw_server(respond(body, Content_Encoding="gzip")) as host:
        with pytest.raises(SourceImageError, match="larger than 1,000,000 bytes"):
            fetch_source(f"http://{host}/bomb.jpg", policy(host))
        # The same fetch in a fresh process: its peak memory barely moves.
        script = (
            "import resource, sys\n"
            "from gateway.images.sources import SourcePolicy, fetch_source\n"
            "from gateway.errors import SourceImageError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"policy = SourcePolicy(({host!r},), 1_000_000, 4096 * 4096, 10.0)\n"
            "try:\n"
            f"    fetch_source('http://{host}/bomb.jpg', policy)\n"
            "except SourceImageError:\n"
            "    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
        )
        grown_kb = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    assert int(grown_kb) < 30_000, f"grew by {grown_kb} kB"


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("gzip, gzip", "compressed more than once"), ("br", "encoding we do not read")],
)
def test_encodings_we_do_not_read_are_refused(encoding, message):
    answer = respond(bomb(10, layers=2), Content_Encoding=encoding)
    with raw_server(answer) as host, pytest.raises(SourceImageError, match=message):
        fetch_source(f"http://{host}/bomb.jpg", policy(host))


def test_deflate_is_read_too():
    with raw_server(respond(zlib.compress(PHOTO), Content_Encoding="deflate")) as host:
        assert fetch_source(f"http://{host}/a.jpg", policy(host)).data == PHOTO


def test_dripped_headers_stop_at_the_overall_deadline():
    with raw_server(drip) as host:
        started = time.monotonic()
        with pytest.raises(SourceImageError, match="too long"):
            fetch_source(f"http://{host}/slow.jpg", policy(host, timeout_s=1.0))
        assert time.monotonic() - started < 2.5


def test_slow_sources_do_not_hold_up_webhooks_or_status_polls(tmp_path):
    """45 checkouts from a dripping server at once; a status poll still answers at once.

    About threads, not the database: on SQLite only.
    """
    database_url = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    with raw_server(drip) as host:
        settings = {"SMI_SOURCE_HOSTS": host, "SMI_FETCH_TIMEOUT_S": "5"}
        with start_stack(database_url, tmp_path, **settings) as stack:
            job = stack.checkout(image_url=f"http://{host}/x.jpg")  # a slow one, to have a job id
            assert job.status_code == 422

            def slow_checkout(_: int) -> int:
                return stack.checkout(image_url=f"http://{host}/x.jpg").status_code

            with ThreadPoolExecutor(45) as pool:
                answers = pool.map(slow_checkout, range(45))
                time.sleep(1.0)  # they are all inside the gateway now
                started = time.monotonic()
                polled = httpx.get(f"{stack.gateway}/api/jobs/job_nope", timeout=30)
                waited = time.monotonic() - started
                hooked = httpx.post(f"{stack.gateway}/webhooks/stripe", content=b"{}", timeout=30)
                statuses = list(answers)
    assert polled.status_code == 404 and waited < 1.0, waited
    assert hooked.status_code == 400  # unsigned: refused, but answered at once
    assert set(statuses) <= {422, 503}


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch):
    """DNS rebinding: a name that answers a public address to the check, then loopback."""
    seen: list[bytes] = []

    def record(connection: socket.socket) -> None:
        seen.append(b"request")
        respond(PHOTO)(connection)

    real = socket.getaddrinfo
    answers = iter(["93.184.215.14"])  # public, and unreachable from here: refused or silent

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.1")  # the second answer: our own machine
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with raw_server(record) as local:
        port = local.rsplit(":", 1)[1]
        with pytest.raises(SourceImageError):
            fetch_source(
                f"http://rebind.test:{port}/a.jpg", policy(f"rebind.test:{port}", timeout_s=1)
            )
    assert seen == []  # the loopback server was never reached
