"""The worker's metrics and health, on a port of its own (``SMI_WORKER_METRICS_PORT``).

    server = serve_health(9100, worker.readiness, worker.liveness)   # /metrics, /healthz, /readyz
    JOBS.labels(outcome="completed").inc()

One worker is one process, so the client's default registry is exact. GPU
memory (and utilisation, where NVML answers) is read when scraped.
``/readyz`` answers 200 when the broker and storage answer and the model is
loaded, else 503 naming what does not; its body also carries what the
worker passes as ``details`` (each loaded model's precision and why).
``/healthz`` answers 200 while the worker's job loop moves, 503 once it has
not for ``SMI_WORKER_STALL_S`` (a hung job or consumer: the orchestrator
should restart the process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # no torch at import: the module is read by processes without it
    from upscaler.pipeline.precision import PrecisionChoice

log = logging.getLogger(__name__)

JOBS = Counter(
    "smi_worker_jobs",
    "Paid jobs this worker finished, by outcome (completed, failed, retried)",
    ["outcome"],
)
PREVIEWS = Counter("smi_worker_previews", "Previews made, by outcome", ["outcome"])
OUTPUT_MEGAPIXELS = Counter("smi_worker_output_megapixels", "Megapixels of upscaled output stored")
_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
JOB_SECONDS = Histogram(
    "smi_worker_job_seconds", "One job from its message to its stored result", buckets=_SECONDS
)
MODEL_SECONDS = Histogram(
    "smi_worker_model_seconds", "The network's time on one job (device time)", buckets=_SECONDS
)
STAGE_SECONDS = Histogram(
    "smi_worker_stage_seconds",
    "Each stage of a job: prepare (read, decode), upscale, encode, store",
    ["stage"],
    buckets=_SECONDS,
)

MODEL_PRECISION = Gauge(
    "smi_worker_model_precision",
    "1 for the precision each loaded model runs in, by what it serves (jobs, previews, "
    "both) and whether auto chose it",
    ["model", "used_for", "precision", "chosen"],
)
BF16_SPEEDUP = Gauge(
    "smi_worker_cpu_bf16_speedup",
    "fp32 time over bf16 time of the convolution auto timed at start (absent where "
    "nothing was timed)",
)


def record_precision(model: str, used_for: list[str], choice: PrecisionChoice) -> None:
    """A model was loaded in ``choice``'s precision, to serve ``used_for``."""
    MODEL_PRECISION.labels(
        model=model,
        used_for="+".join(used_for) or "jobs",
        precision=choice.precision,
        chosen="auto" if choice.automatic else "set",
    ).set(1)
    if choice.bf16_speedup is not None:
        BF16_SPEEDUP.set(round(choice.bf16_speedup, 3))


# Read from the card when scraped; absent without CUDA.
GPU_METRICS = ("smi_worker_gpu_memory_bytes", "smi_worker_gpu_utilization_ratio")

Readiness = Callable[[], dict[str, str | None]]  # check name -> None when fine, else why
Liveness = Callable[[], str | None]  # None while the process makes progress, else why not
Details = Callable[[], dict[str, Any]]  # more of /readyz's body: what the worker runs


class GpuCollector(Collector):
    """GPU memory in use and reserved by this process, and the card's utilisation."""

    def collect(self) -> Iterable[Any]:
        try:
            import torch
        except ImportError:
            return
        if not torch.cuda.is_available():
            return
        memory = GaugeMetricFamily(
            GPU_METRICS[0], "GPU memory of this process", labels=["device", "kind"]
        )
        busy = GaugeMetricFamily(
            GPU_METRICS[1],
            "Share of the last sample period the GPU was busy (NVML)",
            labels=["device"],
        )
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            memory.add_metric([device, "allocated"], torch.cuda.memory_allocated(index))
            memory.add_metric([device, "reserved"], torch.cuda.memory_reserved(index))
            with contextlib.suppress(Exception):  # NVML missing: memory only
                busy.add_metric([device], torch.cuda.utilization(index) / 100)
        yield memory
        yield busy


REGISTRY.register(GpuCollector())


def serve_health(
    port: int,
    readiness: Readiness,
    liveness: Liveness | None = None,
    host: str = "0.0.0.0",
    *,
    details: Details | None = None,
) -> ThreadingHTTPServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``port``, from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                stuck = liveness() if liveness is not None else None
                if stuck:
                    log.error("not live: %s", stuck)
                body = {"ok": not stuck, **({"stuck": stuck} if stuck else {})}
                self._answer(503 if stuck else 200, json.dumps(body).encode(), "application/json")
            elif self.path == "/readyz":
                checks = readiness()
                failing = {name: why for name, why in checks.items() if why}
                body = {"ready": not failing, "checks": {k: v or "ok" for k, v in checks.items()}}
                body.update(details() if details is not None else {})
                self._answer(503 if failing else 200, json.dumps(body).encode(), "application/json")
            else:
                self._answer(404, b'{"error": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds are not news

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
