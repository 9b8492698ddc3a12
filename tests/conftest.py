"""Shared fixtures: the project's model registry with real (converted) weights."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import settings
from kombu import Connection
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from devtools.s3server import LocalS3, local_s3
from gateway.money.fulfilment import fulfil_checkout
from gateway.money.stripe_objects import StripeCheckout
from gateway.store.lifecycle import NewJob, create_job
from shared.broker import Broker
from shared.images import decode_image
from shared.messages import UpscaleRequest
from shared.topology import ALL_QUEUES, UPSCALE_QUEUE
from upscaler.models.registry import PROJECT_MODELS_DIR, ModelRegistry
from upscaler.models.weights import import_ncnn_weights

# No per-example deadline: a 2-core machine shared with other work times
# examples unevenly. CI explores the same examples on every run, so a red
# build is reproducible; locally hypothesis keeps searching new ones.
settings.register_profile("local", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "local")

# No test may ever talk to Stripe itself: every gateway a test starts, in this
# process or as a command, gets an API address of loopback's discard port unless
# the test points it at its emulator.
os.environ["SMI_STRIPE_API_BASE"] = "http://127.0.0.1:9"

SAMPLES = PROJECT_MODELS_DIR.parent / "samples"
FAST_MODEL = "realesr-animevideov3"  # 18 convolutions: for tests about plumbing, not pixels


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    """The project's manifest; converts the ncnn weights once if they are not there yet."""
    registry = ModelRegistry.from_env({})
    for name in ("RealESRGAN_x4plus", FAST_MODEL):
        spec = registry.get(name)
        if not registry.converted_path(spec).is_file():
            import_ncnn_weights(registry, spec)
    return registry


def sample(name: str) -> np.ndarray:
    """A bundled photo as RGB uint8 pixels."""
    return decode_image((SAMPLES / f"{name}.png").read_bytes()).pixels


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; its pixel data is a few bytes of nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


@pytest.fixture(scope="session")
def cat_crop() -> np.ndarray:
    """48x48 of fur and eye from the bundled cat photo."""
    return np.ascontiguousarray(sample("chelsea")[90:138, 170:218])


# This machine's PostgreSQL (.ci/run starts it when it is down); trust authentication.
POSTGRES_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own, dropped afterwards."""
    name = f"smi_test_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:  # fails loudly when PostgreSQL is down
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://root@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
        return
    with postgres_database() as url:
        yield url


# This machine's RabbitMQ (.ci/run starts it when it is down), in a virtual host
# of this run's own: two runs at once, or a demo beside them, never share a queue.
RABBITMQ_VHOST = f"smi_test_{os.getpid()}_{secrets.token_hex(3)}"
RABBITMQ_URL = f"amqp://guest:guest@127.0.0.1:5672/{RABBITMQ_VHOST}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Make this run's virtual host (fails loudly when RabbitMQ is not running)."""
    for command in (
        ["add_vhost", RABBITMQ_VHOST],
        ["set_permissions", "-p", RABBITMQ_VHOST, "guest", ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", RABBITMQ_VHOST], capture_output=True)


# An S3-compatible server (moto's, a subprocess on a free port) started by the first test
# that asks for it, with one bucket for the run; each test gets a prefix of its own.
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[LocalS3]:
    """The run's S3 server, its bucket made; fails loudly when it cannot start."""
    with local_s3(tmp_path_factory.mktemp("s3")) as server:
        server.use_in_this_process()  # and, through os.environ, every process tests start
        yield server


@pytest.fixture
def s3_url(s3_server: LocalS3) -> str:
    """``s3://BUCKET/PREFIX`` of this test's own (the run's bucket, a fresh prefix)."""
    return s3_server.storage_url(f"t-{secrets.token_hex(6)}")


def purge_queues() -> None:
    """Declare our queues in this run's virtual host and empty them."""
    with Broker(RABBITMQ_URL).connection() as connection:  # fails loudly when RabbitMQ is down
        for queue in ALL_QUEUES:
            bound = queue(connection.default_channel)
            bound.declare()
            bound.purge()


@pytest.fixture
def rabbit() -> Iterator[Connection]:
    """A connection to RabbitMQ with our queues declared and empty."""
    purge_queues()
    with Broker(RABBITMQ_URL).connection() as connection:
        yield connection
    purge_queues()


def drain(connection: Connection, timeout: float = 5.0) -> list[UpscaleRequest]:
    """Every upscale request waiting on the queue (acknowledged), after up to ``timeout``."""
    received: list[UpscaleRequest] = []
    queue = connection.SimpleQueue(UPSCALE_QUEUE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = queue.get(block=True, timeout=0.3)
        except queue.Empty:
            if received:
                break
            continue
        received.append(UpscaleRequest.from_json(message.body))
        message.ack()
    queue.close()
    return received


def paid_job(sessions: sessionmaker[Session], name: str) -> str:
    """A job paid through ``fulfil_checkout``, with its upscale message in the outbox."""
    with sessions.begin() as session:
        job = create_job(
            session,
            NewJob(f"https://img.example/{name}.jpg", f"jobs/{name}/source.jpg", 10, 10, 50, "usd"),
        )
        job.stripe_session_id = f"cs_{name}"
        fulfil_checkout(
            session,
            StripeCheckout.parse(
                {
                    "id": f"cs_{name}",
                    "payment_status": "paid",
                    "amount_total": 50,
                    "currency": "usd",
                    "payment_intent": f"pi_{name}",
                    "metadata": {"job_id": job.id},
                }
            ),
            "test",
        )
        return job.id
