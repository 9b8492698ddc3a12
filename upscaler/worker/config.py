"""The worker's configuration: one frozen object from ``SMI_*`` variables.

    >>> config = WorkerConfig.from_env({"SMI_BROKER_URL": "amqp://guest:guest@rabbit//"})
    >>> config.max_attempts
    3

Broker and storage defaults are the gateway's (the embedded folders under
``SMI_DATA_DIR``), so one machine runs the whole system with no settings.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.broker import default_broker_url
from shared.env import EnvReader
from shared.storage import default_storage_url
from upscaler.pipeline.options import Overrides, default_device
from upscaler.pipeline.precision import AUTO, PRECISION_SETTINGS


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one worker process needs, validated."""

    broker_url: str
    storage_url: str
    name: str
    device: str
    precision: str  # paid jobs: auto (upscaler/pipeline/precision.py), fp32, fp16 or bf16
    tile: int | None  # None: the default for the device (sized from free memory on CUDA)
    overlap: int
    batch: int | None
    lanes: int | None
    compile: bool
    pipeline: bool  # overlap decoding, the device and encoding across jobs
    max_pixels: int
    max_attempts: int
    retry_backoff_s: float
    heartbeat_s: float
    progress_interval_s: float
    # AMQP heartbeats on the consuming connections (0: none): the broker takes back the
    # jobs of a worker that has gone silent (its network cut) within about two of them.
    broker_heartbeat_s: float = 30.0
    max_jobs: int = 0  # stop after this many jobs (0: never); for tests and rolling restarts
    metrics_port: int | None = None  # /metrics, /healthz, /readyz (None: not served)
    # /healthz fails once the job loop has not moved for this long (a hung device or read).
    stall_s: float = 600.0
    # Free previews: auto by default, so that they take the fast path even where paid
    # jobs are set to fp32.
    preview_precision: str = AUTO

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WorkerConfig:
        """Build and validate; ``ConfigError`` lists every problem."""
        env = EnvReader(environ)
        data_dir = Path(env.text("DATA_DIR"))
        device = env.text("WORKER_DEVICE", default_device())
        precision = env.text("WORKER_PRECISION")
        preview_precision = env.text("WORKER_PREVIEW_PRECISION")
        for name, value in (
            ("WORKER_PRECISION", precision),
            ("WORKER_PREVIEW_PRECISION", preview_precision),
        ):
            if value not in PRECISION_SETTINGS:
                env.problem(f"SMI_{name} must be auto, fp32, fp16 or bf16, not {value!r}")
        tile = env.text("WORKER_TILE")
        if tile != "auto" and not tile.isdigit():
            env.problem(f"SMI_WORKER_TILE must be auto or a whole number of pixels, not {tile!r}")
        batch = env.integer("WORKER_BATCH")
        lanes = env.integer("WORKER_LANES")
        if lanes > 1 and device != "cpu":
            env.problem(f"SMI_WORKER_LANES > 1 is for the CPU, not {device}")
        config = cls(
            broker_url=env.text("BROKER_URL", default_broker_url(data_dir)),
            storage_url=env.text("STORAGE_URL", default_storage_url(data_dir)),
            name=env.text("WORKER_NAME", f"{socket.gethostname()}:{os.getpid()}"),
            device=device,
            precision=precision,
            tile=int(tile) if tile.isdigit() else None,
            overlap=env.integer("WORKER_OVERLAP"),
            batch=batch or None,
            lanes=lanes or None,
            compile=env.flag("WORKER_COMPILE"),
            pipeline=env.flag("WORKER_PIPELINE"),
            max_pixels=env.integer("MAX_SOURCE_PIXELS"),
            max_attempts=env.integer("WORKER_MAX_ATTEMPTS"),
            retry_backoff_s=env.number("WORKER_RETRY_BACKOFF_S"),
            heartbeat_s=env.number("WORKER_HEARTBEAT_S"),
            progress_interval_s=env.number("WORKER_PROGRESS_INTERVAL_S"),
            broker_heartbeat_s=env.number("WORKER_BROKER_HEARTBEAT_S"),
            metrics_port=env.optional_integer("WORKER_METRICS_PORT"),
            stall_s=env.number("WORKER_STALL_S"),
            preview_precision=preview_precision,
        )
        env.check()
        return config

    def overrides(self) -> Overrides:
        """The tiling this worker's operator set; the rest is the device's default."""
        return Overrides(tile=self.tile, overlap=self.overlap, batch=self.batch, lanes=self.lanes)
