"""``smi-worker``: consume paid jobs from the broker and upscale them.

    smi-worker                         # SMI_BROKER_URL, SMI_STORAGE_URL, SMI_WORKER_* settings
    smi-worker --device cuda:1         # one process per GPU

SIGTERM or Ctrl-C finishes the jobs it has started, hands back the ones it
has not, then exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from collections.abc import Sequence
from types import FrameType

from shared.broker import Broker
from shared.env import ConfigError
from shared.logs import configure_service_logging
from shared.storage import Storage
from upscaler.errors import UpscalerError
from upscaler.models.registry import ModelRegistry
from upscaler.pipeline.precision import PRECISION_SETTINGS
from upscaler.worker.config import WorkerConfig
from upscaler.worker.loop import UpscaleWorker
from upscaler.worker.metrics import serve_health

log = logging.getLogger("upscaler.worker.loop")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: SMI_WORKER_DEVICE)")
    parser.add_argument(
        "--precision",
        choices=PRECISION_SETTINGS,
        help="paid jobs' precision (default: SMI_WORKER_PRECISION, else auto)",
    )
    parser.add_argument("--tile", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs")
    args = parser.parse_args(argv)
    configure_service_logging()
    try:
        config = WorkerConfig.from_env()
    except ConfigError as exc:
        log.error("smi-worker: %s", exc)
        return 2
    overrides = {
        "device": args.device,
        "precision": args.precision,
        "tile": args.tile,
        "batch": args.batch,
        "max_jobs": args.max_jobs,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    configure_service_logging(worker=config.name)  # every line says which worker
    broker = Broker(config.broker_url, heartbeat_s=config.broker_heartbeat_s)
    try:
        worker = UpscaleWorker(
            broker, Storage(config.storage_url), ModelRegistry.from_env(), config
        )
        warm_up_s = worker.warm_up()
    except UpscalerError as exc:
        # A missing GPU or weights: one log line like the others (JSON in a container).
        log.error("smi-worker: %s", exc)
        return 1

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping after the jobs in hand")
        worker.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if config.metrics_port is not None:
        health = serve_health(
            config.metrics_port,
            worker.readiness,
            worker.liveness,
            details=lambda: {"precision": worker.precisions()},
        )
        log.info("metrics and health on port %d", health.server_address[1])
    choice = worker.precision()
    log.info(
        "worker %s ready on %s (%s, %s, warm-up %.1fs; %s)",
        config.name,
        config.device,
        choice.precision if choice else config.precision,
        "pipelined" if config.pipeline else "one job at a time",
        warm_up_s,
        choice.reason if choice else "no model loaded",
    )
    try:
        worker.run()
    finally:
        broker.close()
    return 0
