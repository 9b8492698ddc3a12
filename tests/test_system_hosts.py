"""The system as separate hosts: a worker loses its network mid-job.

The gateway, two workers, the S3 server and the Stripe emulator each run in
a network namespace of their own on a private /24 (tests/netns.py), with no
folder shared between them: storage is ``s3://`` on the S3 host, and each
process has its own data directory. This machine's PostgreSQL and RabbitMQ,
the SMTP sink and the storefront's image host listen on loopback only; the
hosts reach them through TCP proxies bound to the bridge's address in the
root namespace (tests/proxy.py).

Namespaces need root and iproute2: elsewhere the test says so and skips. CI
runs as root, so there it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import netns
import pytest
import s3fs
import stripe
from proxy import TcpProxy
from sqlalchemy import select
from system import ADMIN_TOKEN, API_KEY, BIN, WEBHOOK_SECRET, System, _healthy, image_host

from conftest import RABBITMQ_URL, postgres_database, purge_queues
from devtools.s3server import ACCESS_KEY, SECRET_KEY, LocalS3, local_s3
from gateway.store.database import create_database_engine, session_factory
from gateway.store.tables import AuditEntry, Job, OutboxMessage, Payment, Refund
from servers import MailSink, serve, wait_for
from shared.storage import result_key_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GATEWAY_PORT = 8000  # every host has its own addresses: fixed ports collide with nothing
S3_PORT = 9000
STRIPE_PORT = 12111
STORAGE_PREFIX = "shop"
# The worker that is cut works the 96x96 image in 144 windows of 32x32 pixels (16 times
# the pixels of the one window the other worker takes it in): its job outlasts the cut,
# worker-2's start and whole job, on however busy a machine, so it finishes after its
# link is back. (About 90 s against 15 s on two busy cores.)
SLOW_TILES = {"SMI_WORKER_TILE": "8", "SMI_WORKER_OVERLAP": "12"}
FAST_TILES = {"SMI_WORKER_TILE": "128", "SMI_WORKER_OVERLAP": "0"}


HOSTS = ("s3", "stripe", "gateway", "worker-1", "worker-2")


@pytest.fixture
def network() -> Iterator[netns.PrivateNetwork]:
    """The run's private network with its hosts, or a skip saying why there can be none.

    Only where this machine cannot make namespaces at all (not root, no ``ip``, the
    kernel refusing the first one) is it a skip; any other failure is the test's.
    """
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        try:
            network = stack.enter_context(netns.PrivateNetwork())
            network.host(HOSTS[0])
        except netns.NamespacesUnavailable as exc:
            pytest.skip(str(exc))
        for name in HOSTS[1:]:
            network.host(name)
        yield network


class Hosts:
    """The hosts of one run and what the test reads of them."""

    def __init__(
        self, system: System, s3: LocalS3, database_url: str, workers: list[netns.Host]
    ) -> None:
        self.system = system
        self.s3 = s3
        self.database_url = database_url
        self.workers = workers  # worker-1's host, worker-2's

    def log(self, name: str) -> list[dict[str, Any]]:
        """A process's log lines (JSON: its output is a file)."""
        lines = []
        for line in (self.system.tmp / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def said(self, name: str, message: str) -> int:
        """How many of a process's log lines say ``message``."""
        return sum(message in line.get("message", "") for line in self.log(name))

    def stored(self, key: str) -> tuple[bytes, dict[str, str]]:
        """An object's bytes and metadata, read from the S3 host."""
        fs = s3fs.S3FileSystem(
            endpoint_url=self.s3.endpoint,
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        path = f"{self.s3.bucket}/{STORAGE_PREFIX}/{key}"
        return bytes(fs.cat_file(path)), dict(fs.metadata(path))


@contextmanager
def hosts_running(tmp_path: Path, net: netns.PrivateNetwork) -> Iterator[Hosts]:
    """S3, Stripe and the gateway, each a host; the workers' hosts made, none started."""
    s3_host, stripe_host, gateway_host, *workers = net.hosts
    with ExitStack() as stack:
        bridge = net.address
        # This machine's services, on loopback only: reached through the bridge's address.
        local_database = stack.enter_context(postgres_database())
        postgres = stack.enter_context(TcpProxy("127.0.0.1", 5432, listen_host=bridge))
        rabbit = stack.enter_context(TcpProxy("127.0.0.1", 5672, listen_host=bridge))
        mail = stack.enter_context(MailSink())
        smtp = stack.enter_context(TcpProxy("127.0.0.1", mail.port, listen_host=bridge))
        images_local = stack.enter_context(serve(image_host()))
        images_port = int(images_local.rsplit(":", 1)[1])
        images = stack.enter_context(TcpProxy("127.0.0.1", images_port, listen_host=bridge))
        database_url = local_database.replace("127.0.0.1:5432", f"{bridge}:{postgres.port}")
        broker_url = RABBITMQ_URL.replace("127.0.0.1:5672", f"{bridge}:{rabbit.port}")
        assert database_url != local_database and broker_url != RABBITMQ_URL

        s3 = stack.enter_context(
            local_s3(
                tmp_path / "s3",
                host=s3_host.address,
                port=S3_PORT,
                wrap=s3_host.command(),
            )
        )
        stripe_url = stripe_host.url(STRIPE_PORT)
        gateway_url = gateway_host.url(GATEWAY_PORT)
        images_url = f"http://{bridge}:{images.port}"
        # What every host gets: the S3 host and the broker. Nothing of this process's
        # own S3 settings (another test's server) is inherited.
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("SMI_", "FSSPEC_", "AWS_"))
        }
        env = {
            **inherited,
            **s3.env,
            "SMI_STORAGE_URL": s3.storage_url(STORAGE_PREFIX),
            "SMI_BROKER_URL": broker_url,
            "PYTHONUNBUFFERED": "1",
        }
        system = System(
            tmp=tmp_path,
            env=env,
            emulator=stripe_url,
            images=images_url,
            mail=mail,
            stripe=stripe.StripeClient(API_KEY, base_addresses={"api": stripe_url}),
        )
        stack.callback(system.stop)
        system.spawn(
            "emulator",
            *stripe_host.command(
                BIN / "smi-stripe-emulator",
                "--host",
                stripe_host.address,
                "--port",
                str(STRIPE_PORT),
                "--webhook-url",
                f"{gateway_url}/webhooks/stripe",
                "--webhook-secret",
                WEBHOOK_SECRET,
            ),
        )
        gateway_env = {
            "SMI_DATA_DIR": str(tmp_path / "gateway-data"),
            "SMI_DATABASE_URL": database_url,
            "SMI_STRIPE_TEST_SECRET_KEY": API_KEY,
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SMI_STRIPE_API_BASE": stripe_url,
            "SMI_SOURCE_HOSTS": f"{bridge}:{images.port}",
            "SMI_STOREFRONT_ORIGINS": images_url,
            "SMI_SMTP_URL": f"smtp://{bridge}:{smtp.port}",
            "SMI_ADMIN_TOKEN": ADMIN_TOKEN,
            "SMI_PUBLIC_URL": gateway_url,
        }
        migrate = gateway_host.command(BIN / "smi-gateway", "migrate")
        done = system.spawn("migrate", *migrate, **gateway_env)
        assert done.wait(timeout=120) == 0, system.logs()
        system.spawn(
            "gateway-1",
            *gateway_host.command(
                BIN / "smi-gateway", "--host", gateway_host.address, "--port", str(GATEWAY_PORT)
            ),
            **gateway_env,
        )
        wait_for(lambda: _healthy(gateway_url), timeout=90)
        system.gateways.append(gateway_url)
        yield Hosts(system, s3, local_database, workers)


def start_worker(hosts: Hosts, index: int, **settings: str) -> None:
    """``worker-N`` on its host: its own data folder, no database, no Stripe key."""
    name = f"worker-{index + 1}"
    hosts.system.spawn(
        name,
        *hosts.workers[index].command(BIN / "smi-worker"),
        SMI_WORKER_NAME=name,
        SMI_DATA_DIR=str(hosts.system.tmp / f"{name}-data"),
        SMI_WORKER_DEVICE="cpu",
        SMI_WORKER_HEARTBEAT_S="1",
        SMI_WORKER_PROGRESS_INTERVAL_S="0",
        # The broker notices a host gone silent within two or three seconds.
        SMI_WORKER_BROKER_HEARTBEAT_S="1",
        **settings,
    )
    try:
        wait_for(lambda: hosts.said(name, "ready on"), timeout=180, interval=0.5)
    except AssertionError:
        raise AssertionError(f"{name} did not start\n{hosts.system.logs()}") from None


def test_a_worker_cut_off_mid_job_changes_nothing_when_it_comes_back(tmp_path, network):
    """worker-1's link goes down mid-job; its process runs on. RabbitMQ hears no heartbeat
    from it and gives the job to worker-2, which delivers it. worker-1 comes back with its
    own result later: it leaves the delivered one alone, and the gateway ignores its news.
    One payment, no refund, one completion applied, one email; the buyer's file unchanged."""
    purge_queues()
    with hosts_running(tmp_path, network) as hosts:
        system, cut_host = hosts.system, hosts.workers[0]
        start_worker(hosts, 0, **SLOW_TILES)
        job_id = system.buy("large.png")
        wait_for(lambda: system.status(job_id)["progress"] > 0, timeout=120, interval=0.1)

        cut_host.cut()
        start_worker(hosts, 1, **FAST_TILES)
        try:
            status = system.wait_for_status(job_id, "completed", timeout=180)
        finally:
            cut_host.restore()  # even after a failure: worker-1's late end goes in the logs
        key = result_key_for(job_id)
        delivered, metadata = hosts.stored(key)
        digest = hashlib.sha256(delivered).hexdigest()
        assert metadata["sha256"] == digest
        engine = create_database_engine(hosts.database_url)
        sessions = session_factory(engine)
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            result = (job.result_key, job.result_size, job.result_sha256)
        assert result == (key, len(delivered), digest)

        # worker-1 comes back and finishes its job: it finds the result stored and keeps it;
        # its completion reaches the gateway, which ignores it.
        try:
            wait_for(
                lambda: hosts.said("worker-1", "result already stored by another attempt"),
                timeout=300,
                interval=0.5,
            )
            wait_for(
                lambda: hosts.said("gateway-1", "job event completed: ignored"),
                timeout=60,
                interval=0.5,
            )
        except AssertionError:
            raise AssertionError(
                "worker-1 did not come back with its result after worker-2 delivered it\n"
                f"{system.logs()}"
            ) from None
        assert hosts.said("gateway-1", "job event completed: completed") == 1

        # Storage: the object worker-2 wrote, written once, unchanged; it is what is served.
        assert hosts.stored(key) == (delivered, metadata)
        writes = [
            r
            for r in hosts.s3.requests(settle_s=1.0)
            if r.method in ("PUT", "POST") and r.path.split("?")[0].endswith(f"/{key}")
        ]
        assert [w.status for w in writes if w.status < 300] == [200], writes
        download = httpx.get(status["download_url"], follow_redirects=True, timeout=60)
        assert download.status_code == 200 and download.content == delivered

        # The database: completed once, by worker-2, with the result it reported.
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "completed"
            assert (job.result_key, job.result_size, job.result_sha256) == result
            assert job.attempts == 1  # no watchdog, no retry: the broker gave the job back
            trail = session.scalars(
                select(AuditEntry).where(AuditEntry.job_id == job_id).order_by(AuditEntry.id)
            ).all()
            steps = [(e.from_status, e.to_status, e.source) for e in trail]
            completions = [(f, source) for f, t, source in steps if t == "completed"]
            assert completions == [("processing", "worker:worker-2")], steps
            assert session.scalars(select(Refund).where(Refund.job_id == job_id)).all() == []
            payments = session.scalars(select(Payment).where(Payment.job_id == job_id)).all()
            assert len(payments) == 1
            queued = session.scalars(
                select(OutboxMessage.kind).where(OutboxMessage.job_id == job_id)
            ).all()
            amount = job.amount_cents
        engine.dispose()
        assert len(queued) == len(set(queued)), queued  # each email and message once

        # Stripe: one payment, nothing refunded.
        charges = system.stripe.v1.charges.list().data
        assert len(charges) == 1 and charges[0].amount_refunded == 0, charges
        assert charges[0].payment_intent == payments[0].stripe_payment_intent_id
        assert system.stripe.v1.refunds.list().data == []
        intent = system.stripe.v1.payment_intents.retrieve(charges[0].payment_intent)
        assert intent.status == "succeeded" and intent.amount == amount

        # The buyer: one email of each kind, through the SMTP sink on loopback.
        wait_for(lambda: system.mail.of_kind("completed", job_id), timeout=60)
        for kind in ("payment_confirmation", "processing", "completed"):
            assert len(system.mail.of_kind(kind, job_id)) == 1, kind
        assert not system.mail.of_kind("refunded", job_id)
    purge_queues()
