"""``smi-demo``: the whole system on one machine with the embedded defaults.

    smi-demo [--port 8000] [--gateway-port PORT+1] [--emulator-port PORT+2] [--data-dir var/demo]

Serves a demo shop at ``--port`` (its own origin, as a real shop would be)
and starts the Stripe emulator, the gateway and one upscaling worker, each
as its own process with SQLite, the filesystem broker, local storage and
emails written to ``DATA_DIR/mail``; prints the address, and a one-time
password of the seller's dashboard (``DEMO_SELLER``, an owner), and waits. Each
run starts from an empty ``DATA_DIR`` (the emulator keeps its payments in
memory only, so older jobs would have none). Ctrl-C stops the worker
first (it finishes and reports the job in hand), then the gateway and the
emulator. Any ``SMI_*`` variable already set overrides the demo's value.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import httpx
import uvicorn

from devtools.shop import create_shop_app

BIN = Path(sys.executable).parent
DEMO_KEY = "sk_test_demo"
DEMO_WEBHOOK_SECRET = "whsec_demo"
DEMO_ADMIN_TOKEN = "demo-admin-token-change-me"
DEMO_SELLER = "seller@demo.example"
START_TIMEOUT_S = 180.0


def demo_environment(
    data_dir: Path, host: str, shop_port: int, gateway_port: int, emulator_port: int
) -> dict[str, str]:
    """The demo's settings, under whatever ``SMI_*`` the caller set already."""
    public = f"http://{host}:{gateway_port}"
    defaults = {
        "SMI_STRIPE_MODE": "test",
        "SMI_STRIPE_TEST_SECRET_KEY": DEMO_KEY,
        "SMI_STRIPE_TEST_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET,
        "SMI_STRIPE_API_BASE": f"http://{host}:{emulator_port}",
        "SMI_PUBLIC_URL": public,
        "SMI_SOURCE_HOSTS": f"{host}:{shop_port}",
        "SMI_STOREFRONT_ORIGINS": f"http://{host}:{shop_port}",
        "SMI_DATA_DIR": str(data_dir),
        "SMI_ADMIN_TOKEN": DEMO_ADMIN_TOKEN,
        "SMI_ADMIN_URL": public,
        "SMI_WORKER_HEARTBEAT_S": "5",
        # Small tiles, so the progress bar moves on a CPU (a GPU takes the photo in one tile).
        "SMI_WORKER_TILE": "64",
        "SMI_WORKER_OVERLAP": "16",
        "PYTHONUNBUFFERED": "1",
    }
    return {**defaults, **os.environ}


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Processes:
    """Children started in their own sessions, so Ctrl-C reaches only us; we stop them."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *command: str | Path) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(part) for part in command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append((name, process))

    def exited(self) -> list[tuple[str, int]]:
        return [(name, code) for name, p in self.running if (code := p.poll()) is not None]

    def stop(self, timeout_s: float = 120.0) -> None:
        """The last started first, each waited for: the worker reports before the gateway goes."""
        for _, process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="smi-demo", description=__doc__.splitlines()[0].replace("``", "")
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address everything listens on (127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="the demo shop's port (8000)")
    parser.add_argument("--gateway-port", type=int, help="the gateway's port (--port + 1)")
    parser.add_argument("--emulator-port", type=int, help="the Stripe emulator's port (--port + 2)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var/demo"),
        help="database, images, emails and logs, emptied at each start (var/demo)",
    )
    args = parser.parse_args(argv)
    gateway_port = args.gateway_port or args.port + 1
    args.emulator_port = args.emulator_port or args.port + 2
    for flag, port in (
        ("--port", args.port),
        ("--gateway-port", gateway_port),
        ("--emulator-port", args.emulator_port),
    ):
        if not port_is_free(args.host, port):
            print(f"smi-demo: port {port} is in use; pick another with {flag}")
            return 2
    data_dir = args.data_dir.resolve()
    if data_dir.exists():
        # The emulator keeps its payments in memory: the last run's jobs would point at
        # payments that no longer exist anywhere.
        print(
            f"Emptying {data_dir}: a demo starts afresh (its Stripe emulator forgets every "
            "payment when it stops, so the last run's orders cannot be kept)"
        )
        shutil.rmtree(data_dir)
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = demo_environment(data_dir, args.host, args.port, gateway_port, args.emulator_port)
    gateway = f"http://{args.host}:{gateway_port}"
    shop_url = f"http://{args.host}:{args.port}"
    shop, shop_thread = _serve_shop(args.host, args.port, gateway)
    children = Processes(logs, env)
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print("Starting the Stripe emulator, the gateway and a worker ...", flush=True)
    children.start(
        "emulator",
        BIN / "smi-stripe-emulator",
        "--host",
        args.host,
        "--port",
        str(args.emulator_port),
        "--webhook-url",
        f"{gateway}/webhooks/stripe",
        "--webhook-secret",
        env["SMI_STRIPE_TEST_WEBHOOK_SECRET"],
    )
    children.start("gateway", BIN / "smi-gateway", "--host", args.host, "--port", str(gateway_port))
    children.start("worker", BIN / "smi-worker")
    try:
        if not _wait_until_ready(children, gateway, lambda: stop_requested):
            return 1
        password = _seller_account(gateway, env["SMI_ADMIN_TOKEN"])
        print(
            f"\nSell My Images is running: open the demo shop at {shop_url}/\n"
            f"  pay with the test card 4242 4242 4242 4242 (4000 0000 0000 0002 is declined)\n"
            f"  gateway:              {gateway}/\n"
            f"  seller's dashboard:   {gateway}/dashboard/ as {DEMO_SELLER}, "
            f"one-time password {password}\n"
            f"  emails to customers:  {data_dir / 'mail'}/\n"
            f"  logs:                 {logs}/\n"
            f"  admin:                SMI_ADMIN_TOKEN={env['SMI_ADMIN_TOKEN']} "
            f"{BIN / 'smi-admin'} --url {gateway} jobs\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop_requested:
            if dead := children.exited():
                name, code = dead[0]
                print(f"smi-demo: the {name} stopped (exit {code}):\n{children.tail(name)}")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("Stopping: the worker finishes and reports the job in hand, then the rest ...")
        children.stop()
        shop.should_exit = True
        # Wait for the shop's server to close: a daemon thread still inside its event loop
        # while the interpreter shuts down can crash the process on its way out.
        shop_thread.join(timeout=10)
        print("Stopped.", flush=True)


def _seller_account(gateway: str, token: str) -> str:
    """The demo's owner account of the dashboard, made through the admin API (as
    ``smi-admin users add`` does); returns its one-time password."""
    answer = httpx.post(
        f"{gateway}/admin/users",
        json={"email": DEMO_SELLER, "role": "owner"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["password"])


def _serve_shop(host: str, port: int, gateway: str) -> tuple[uvicorn.Server, threading.Thread]:
    """The demo shop on its own origin, in a thread of this process."""
    server = uvicorn.Server(
        uvicorn.Config(create_shop_app(gateway), host=host, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="demo-shop", daemon=True)
    thread.start()
    return server, thread


def _wait_until_ready(children: Processes, gateway: str, stopping: object) -> bool:
    """Until the gateway answers and the worker has loaded its model."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if stopping():  # type: ignore[operator]
            return False
        if dead := children.exited():
            name, code = dead[0]
            print(f"smi-demo: the {name} did not start (exit {code}):\n{children.tail(name)}")
            return False
        worker_ready = "ready on" in children.tail("worker", 200)
        try:
            gateway_ready = httpx.get(f"{gateway}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            gateway_ready = False
        if worker_ready and gateway_ready:
            return True
        time.sleep(0.5)
    print(f"smi-demo: not ready after {START_TIMEOUT_S:.0f} s; see {children.logs}")
    return False
