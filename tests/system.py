"""The whole system as real processes: Stripe emulator, gateways, workers, SMTP, image host.

    with running_system(tmp_path, database_url, broker_url) as system:
        job = system.buy("photo.png")
        system.wait_for_status(job, "completed")

Each process is started from its console script with ``SMI_*`` settings,
exactly as an operator would; its output goes to a log file that failing
assertions quote (``system.logs()``).
"""

from __future__ import annotations

import functools
import html
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from conftest import sample
from servers import MailSink, free_port, serve, wait_for
from upscaler.output.images import encode_image

BIN = Path(sys.executable).parent
API_KEY = "sk_test_system"
WEBHOOK_SECRET = "whsec_system"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
SUCCESS_CARD = "4242424242424242"


@functools.cache
def dense_png() -> bytes:
    """4096x4096 16-bit RGBA in a tenth of a megabyte: 128 MB of pixels once decoded."""
    pixels = np.zeros((4096, 4096, 4), np.uint16)
    pixels[::64, :, :3] = 40_000
    pixels[:, :, 3] = 65_535
    return encode_image(pixels, "png")


def image_host() -> Starlette:
    """The storefront's image server: small crops of the bundled photos."""
    images = {
        "photo.png": encode_image(np.ascontiguousarray(sample("chelsea")[100:124, 180:212]), "png"),
        "large.png": encode_image(np.ascontiguousarray(sample("coffee")[100:196, 200:296]), "png"),
        "wide.png": encode_image(np.ascontiguousarray(sample("chelsea")[40:232, 100:356]), "png"),
    }

    async def route(request: Request) -> Response:
        name = request.path_params["name"]
        data = dense_png() if name == "dense16.png" else images.get(name)
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    async def shop(request: Request) -> Response:
        # A shop on its own origin; the gateway (another origin) is given as ?gateway=,
        # the page's language as ?lang=.
        gateway = html.escape(request.query_params["gateway"])
        lang = html.escape(request.query_params.get("lang", "en"))
        figures = "".join(
            f'<figure><img src="/{name}" alt="{name}" data-smi-image="/{name}" width="128">'
            f"<figcaption>{name}</figcaption></figure>"
            for name in images
        )
        page = (
            f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><title>Shop</title>"
            f"</head><body><h1>A shop</h1>{figures}"
            f'<script src="{gateway}/static/smi-checkout.js" defer></script></body></html>'
        )
        return HTMLResponse(page)

    return Starlette(routes=[Route("/shop.html", shop), Route("/{name}", route)])


@dataclass
class System:
    tmp: Path
    env: dict[str, str]
    emulator: str
    images: str
    mail: MailSink
    stripe: stripe.StripeClient
    gateways: list[str] = field(default_factory=list)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    # Each job's Checkout session id: what only its buyer knows, and shows for the download.
    buyer_keys: dict[str, str] = field(default_factory=dict)  # job id -> the buyer's key

    @property
    def gateway(self) -> str:
        return self.gateways[0]

    # -- processes -----------------------------------------------------------

    def spawn(self, name: str, *command: str | Path, **extra_env: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(part) for part in command],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        self.processes.append((name, process))
        return process

    def start_gateway(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        name = f"gateway-{len(self.gateways) + 1}"
        self.spawn(name, BIN / "smi-gateway", "--port", str(port), SMI_PUBLIC_URL=url)
        wait_for(lambda: _healthy(url), timeout=60)
        self.gateways.append(url)
        return url

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The newest process started under ``name``."""
        return next(process for known, process in reversed(self.processes) if known == name)

    def restart_gateway(self, index: int = 0, kill: bool = False, **extra_env: str) -> None:
        """Stop gateway ``index`` (SIGKILL if ``kill``; it may be dead already), start it
        again on its own address with ``extra_env``, and wait until it answers."""
        name, url = f"gateway-{index + 1}", self.gateways[index]
        process = self.process(name)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        process.wait(timeout=30)
        port = url.rsplit(":", 1)[1]
        self.spawn(name, BIN / "smi-gateway", "--port", port, SMI_PUBLIC_URL=url, **extra_env)
        wait_for(lambda: _healthy(url), timeout=60)

    def start_worker(self, name: str = "worker", **extra_env: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, BIN / "smi-worker", SMI_WORKER_NAME=name, **extra_env)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.tmp.glob("*.log"))
        )

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- a customer ----------------------------------------------------------

    def checkout(self, image: str = "photo.png", gateway: int = 0) -> dict[str, Any]:
        response = httpx.post(
            f"{self.gateways[gateway]}/api/checkout",
            json={"image_url": f"{self.images}/{image}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        body = dict(response.json())
        self.buyer_keys[body["job_id"]] = body["buyer_key"]
        return body

    def pay(self, checkout: dict[str, Any], card: str = SUCCESS_CARD) -> dict[str, Any]:
        session_id = checkout["checkout_url"].rsplit("/", 1)[1]
        return dict(
            httpx.post(
                f"{self.emulator}/_emulator/checkout/{session_id}/pay",
                data={"card": card, "email": "buyer@example.com"},
                timeout=30,
            ).json()
        )

    def buy(self, image: str = "photo.png", gateway: int = 0) -> str:
        """Checkout and pay with the test card that succeeds; returns the job id."""
        checkout = self.checkout(image, gateway)
        paid = self.pay(checkout)
        assert paid["outcome"] == "paid", paid
        return str(checkout["job_id"])

    def status(self, job_id: str, gateway: int = 0) -> dict[str, Any]:
        key = self.buyer_keys.get(job_id)
        response = httpx.get(
            f"{self.gateways[gateway]}/api/jobs/{job_id}",
            headers={"X-Buyer-Key": key} if key else {},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for_status(self, job_id: str, wanted: str, timeout: float = 120) -> dict[str, Any]:
        try:
            return dict(
                wait_for(
                    lambda: (s := self.status(job_id))["status"] == wanted and s,
                    timeout=timeout,
                    interval=0.2,
                )
            )
        except AssertionError:
            raise AssertionError(
                f"job {job_id} is {self.status(job_id)['status']}, not {wanted}\n{self.logs()}"
            ) from None

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.gateway}{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
            **kwargs,
        )

    def source_file(self, job_id: str) -> Path:
        """The stored copy of the image a job sells (kept once by its content, so every
        job of this system that sells the same image reads the same file)."""
        job = self.admin("GET", f"/admin/jobs/{job_id}").json()["job"]
        return self.tmp / "storage" / job["source_key"]


@contextmanager
def running_system(
    tmp: Path,
    database_url: str,
    broker_url: str,
    gateways: int = 1,
    webhooks: bool = True,
    **settings: str,
) -> Iterator[System]:
    """Emulator, image host, SMTP sink and ``gateways`` gateway processes (no worker yet).

    Without ``webhooks`` the emulator delivers nothing: the test delivers events itself.
    """
    emulator_port = free_port()
    with ExitStack() as stack:
        images = stack.enter_context(serve(image_host()))
        mail = stack.enter_context(MailSink())
        env = {
            **os.environ,
            "SMI_STRIPE_TEST_SECRET_KEY": API_KEY,
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "100000",
            "SMI_CHECKOUT_BURST": "1000",
            "SMI_STRIPE_API_BASE": f"http://127.0.0.1:{emulator_port}",
            "SMI_DATABASE_URL": database_url,
            "SMI_BROKER_URL": broker_url,
            "SMI_STORAGE_URL": f"file://{tmp / 'storage'}",
            "SMI_DATA_DIR": str(tmp / "data"),
            "SMI_SOURCE_HOSTS": images.removeprefix("http://"),
            "SMI_STOREFRONT_ORIGINS": images,
            "SMI_SMTP_URL": mail.url,
            "SMI_ADMIN_TOKEN": ADMIN_TOKEN,
            "SMI_WORKER_DEVICE": "cpu",
            "SMI_WORKER_TILE": "64",
            "SMI_WORKER_HEARTBEAT_S": "1",
            "SMI_WORKER_PROGRESS_INTERVAL_S": "0",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        system = System(
            tmp=tmp,
            env=env,
            emulator=f"http://127.0.0.1:{emulator_port}",
            images=images,
            mail=mail,
            stripe=stripe.StripeClient(
                API_KEY, base_addresses={"api": f"http://127.0.0.1:{emulator_port}"}
            ),
        )
        stack.callback(system.stop)
        if database_url.startswith("postgresql"):
            done = subprocess.run(
                [BIN / "smi-gateway", "migrate"], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
        # The emulator delivers each event to the first gateway; a second gateway
        # shares the database and the broker, and works the queues beside it.
        first_port = free_port()
        deliveries = ["--webhook-url", f"http://127.0.0.1:{first_port}/webhooks/stripe"]
        system.spawn(
            "emulator",
            BIN / "smi-stripe-emulator",
            "--port",
            str(emulator_port),
            *(deliveries if webhooks else []),
            "--webhook-secret",
            WEBHOOK_SECRET,
        )
        first = f"http://127.0.0.1:{first_port}"
        system.spawn(
            "gateway-1", BIN / "smi-gateway", "--port", str(first_port), SMI_PUBLIC_URL=first
        )
        wait_for(lambda: _healthy(first), timeout=60)
        system.gateways.append(first)
        for _ in range(gateways - 1):
            system.start_gateway()
        yield system


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False
