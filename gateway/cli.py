"""``smi-gateway``: serve the gateway, migrate its database, or run its background work alone.

    smi-gateway [serve] [--host H] [--port P]   uvicorn; SQLite databases migrate on start
    smi-gateway migrate                         alembic upgrade head (PostgreSQL deployments)
    smi-gateway background                      relay, job events, emails, refunds, watchdog
                                                without the HTTP server

Configuration comes from ``SMI_*`` variables; every problem is listed at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import uvicorn

from gateway.app import create_app
from gateway.background import Background
from gateway.config import ConfigError, GatewayConfig
from gateway.database import create_database_engine, migrate, session_factory
from gateway.payments import Payments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-gateway", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate", "background"]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log every request (the gateway still logs each event)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    }
    if args.workers > 1:
        uvicorn.run("gateway.cli:app_from_env", factory=True, workers=args.workers, **server)
    else:
        uvicorn.run(create_app(config), **server)
    return 0


def app_from_env() -> object:
    """The application factory for multi-worker uvicorn."""
    return create_app(GatewayConfig.from_env())


def _run_background(config: GatewayConfig) -> int:
    engine = create_database_engine(config.database_url)
    if engine.dialect.name == "sqlite":
        migrate(engine)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    Background.start(config, session_factory(engine), Payments(config.stripe)).wait(stop)
    engine.dispose()
    return 0
