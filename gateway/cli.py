"""``smi-gateway``: serve the gateway, migrate its database, or run its background work alone.

    smi-gateway [serve] [--host H] [--port P]   uvicorn (P: SMI_GATEWAY_PORT, else 8000);
                                                SQLite databases migrate on start
    smi-gateway migrate                         alembic upgrade head (PostgreSQL deployments)
    smi-gateway background                      relay, job events, emails, refunds, watchdog
                                                without the HTTP server

Configuration comes from ``SMI_*`` variables; every problem is listed at once.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import FrameType

import uvicorn

from gateway.app import create_app
from gateway.background import Background
from gateway.config import ConfigError, GatewayConfig
from gateway.services import Services
from gateway.store.database import create_database_engine, migrate
from shared import settings
from shared.logs import configure_service_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-gateway", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate", "background"]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=int(settings.read("GATEWAY_PORT")),
        help="default: SMI_GATEWAY_PORT, else 8000",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log every request (the gateway still logs each event)",
    )
    args = parser.parse_args(argv)
    configure_service_logging()
    return_large_buffers()
    try:
        config = GatewayConfig.from_env()
    except ConfigError as exc:
        print(f"smi-gateway: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        engine = create_database_engine(config.database_url)
        migrate(engine)
        print(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")
        return 0
    if args.command == "background":
        return _run_background(config)
    server = {
        "host": args.host,
        "port": args.port,
        "log_level": "info",
        "access_log": args.access_log,
        "log_config": None,  # its lines go through ours (JSON, with job ids)
        # X-Forwarded-For is the app's to judge (SMI_TRUSTED_PROXIES), never uvicorn's: by
        # default uvicorn believes it from loopback, and a client could name any address.
        "proxy_headers": False,
    }
    if args.workers > 1:
        return _serve_workers(args.host, args.port, args.workers, args.access_log)
    uvicorn.run(create_app(config), **server)
    return 0


def _serve_workers(host: str, port: int, workers: int, access_log: bool) -> int:
    """``workers`` uvicorn processes, each listening on its own ``SO_REUSEPORT`` socket.

    The kernel then spreads new connections evenly over the processes; with
    one shared socket (uvicorn's ``--workers``) it often hands every
    kept-alive connection to the same process, leaving the others idle.
    """
    # Each process counts into files here; whichever one a scrape reaches adds them up
    # (gateway.metrics). A fresh folder per start: old processes' counts must not linger.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = tempfile.mkdtemp(prefix="smi-metrics-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_serve_one, args=(host, port, access_log), name=f"gateway-{n}")
        for n in range(workers)
    ]
    for process in processes:
        process.start()

    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # uvicorn shuts down gracefully, then ends by the signal it was sent.
    stopped = {0, -signal.SIGTERM, -signal.SIGINT}
    failed = False
    while any(process.is_alive() for process in processes):
        for process in processes:
            process.join(timeout=0.5)
            code = process.exitcode
            clean = code == 0 or (stopping and code in stopped)
            if code is not None and not clean and not failed:
                failed = True
                forward(signal.SIGTERM, None)  # one failed: stop the others, report it
    return 1 if failed else 0


def _serve_one(host: str, port: int, access_log: bool) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    configure_service_logging()
    return_large_buffers()
    app = create_app(GatewayConfig.from_env())
    config = uvicorn.Config(
        app, log_level="info", access_log=access_log, log_config=None, proxy_headers=False
    )
    uvicorn.Server(config).run(sockets=[sock])


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_large_buffers() -> None:
    """Buffers of 128 kB and more (a body read, an image checked) go back to the system
    when freed.

    glibc raises its threshold for that after the first large free, and then
    keeps such buffers in per-thread arenas: a gateway whose dozens of request
    threads each checked an image kept hundreds of megabytes it no longer used.
    A fixed threshold ends that. Elsewhere than glibc nothing is changed.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _run_background(config: GatewayConfig) -> int:
    services = Services.open(config)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Its liveness probe reads this file's age (gateway.background).
    Background.start(services).wait(stop, alive=config.data_dir / "background.alive")
    services.close()
    return 0
