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
from shared.images import DEFAULT_MAX_PIXELS
from shared.storage import default_storage_url
from upscaler.pipeline.options import DEFAULT_OVERLAP, Overrides, default_device
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
        data_dir = Path(env.text("DATA_DIR", "var"))
        device = env.text("WORKER_DEVICE", "") or default_device()
        precision = env.text("WORKER_PRECISION", "") or AUTO
        preview_precision = env.text("WORKER_PREVIEW_PRECISION", "") or AUTO
        for name, value in (
            ("WORKER_PRECISION", precision),
            ("WORKER_PREVIEW_PRECISION", preview_precision),
        ):
            if value not in PRECISION_SETTINGS:
                env.problem(f"SMI_{name} must be auto, fp32, fp16 or bf16, not {value!r}")
        tile = env.text("WORKER_TILE", "auto")
        if tile != "auto" and not tile.isdigit():
            env.problem(f"SMI_WORKER_TILE must be auto or a whole number of pixels, not {tile!r}")
        batch = int(env.number("WORKER_BATCH", 0, minimum=0))
        lanes = int(env.number("WORKER_LANES", 0, minimum=0))
        if lanes > 1 and device != "cpu":
            env.problem(f"SMI_WORKER_LANES > 1 is for the CPU, not {device}")
        config = cls(
            broker_url=env.text("BROKER_URL", default_broker_url(data_dir)),
            storage_url=env.text("STORAGE_URL", default_storage_url(data_dir)),
            name=env.text("WORKER_NAME", "") or f"{socket.gethostname()}:{os.getpid()}",
            device=device,
            precision=precision,
            tile=int(tile) if tile.isdigit() else None,
            overlap=int(env.number("WORKER_OVERLAP", DEFAULT_OVERLAP, minimum=0)),
            batch=batch or None,
            lanes=lanes or None,
            compile=env.flag("WORKER_COMPILE", False),
            pipeline=env.flag("WORKER_PIPELINE", True),
            max_pixels=int(env.number("MAX_SOURCE_PIXELS", DEFAULT_MAX_PIXELS, minimum=1)),
            max_attempts=int(env.number("WORKER_MAX_ATTEMPTS", 3, minimum=1, maximum=20)),
            retry_backoff_s=env.number("WORKER_RETRY_BACKOFF_S", 2.0, minimum=0),
            heartbeat_s=env.number("WORKER_HEARTBEAT_S", 15.0, minimum=0.1),
            progress_interval_s=env.number("WORKER_PROGRESS_INTERVAL_S", 1.0, minimum=0),
            broker_heartbeat_s=env.number("WORKER_BROKER_HEARTBEAT_S", 30.0, minimum=0),
            metrics_port=int(env.number("WORKER_METRICS_PORT", 0, minimum=0, maximum=65535))
            if env.text("WORKER_METRICS_PORT", "")
            else None,
            stall_s=env.number("WORKER_STALL_S", 600.0, minimum=1),
            preview_precision=preview_precision,
        )
        env.check()
        return config

    def overrides(self) -> Overrides:
        """The tiling this worker's operator set; the rest is the device's default."""
        return Overrides(tile=self.tile, overlap=self.overlap, batch=self.batch, lanes=self.lanes)
