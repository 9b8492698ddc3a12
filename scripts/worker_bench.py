"""The worker end to end: a queue of jobs through storage, decode, upscale, encode, storage.

    python scripts/worker_bench.py [--jobs 12] [--size 64] [--repeat 3] [--broker URL]

Each run publishes ``--jobs`` upscale requests for distinct crops of the
bundled photos, starts an ``UpscaleWorker`` (the real one, with the real
broker port: the embedded filesystem broker in a fresh folder unless
``--broker``) and times it from start to its last ``completed`` event.
Serial (one message at a time) and pipelined runs alternate, so drift on a
shared machine hits both alike. Every run checks that each job was
completed exactly once and its result decodes to the right size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.broker import Broker  # noqa: E402
from shared.images import decode_image  # noqa: E402
from shared.messages import EventKind, JobEvent, UpscaleRequest  # noqa: E402
from shared.storage import Storage  # noqa: E402
from shared.topology import EVENTS_QUEUE, UPSCALE_QUEUE  # noqa: E402
from upscaler.models.registry import ModelRegistry  # noqa: E402
from upscaler.output.images import encode_image  # noqa: E402
from upscaler.worker.config import WorkerConfig  # noqa: E402
from upscaler.worker.loop import UpscaleWorker  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "grass")


def crops(count: int, size: int) -> list[np.ndarray]:
    """``count`` distinct ``size`` x ``size`` RGB crops of the bundled photos."""
    photos = []
    for name in PHOTOS:
        pixels = decode_image((ROOT / "samples" / f"{name}.png").read_bytes()).pixels
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        height, width = pixels.shape[:2]
        if min(height, width) <= size:
            pixels = cv2.resize(pixels, (2 * max(size, width), 2 * max(size, height)))
        photos.append(np.ascontiguousarray(pixels[:, :, :3]))
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        top = (index * 37) % (height - size)
        left = (index * 53) % (width - size)
        out.append(np.ascontiguousarray(photo[top : top + size, left : left + size]))
    return out


def completed_events(broker: Broker, expected: int, timeout_s: float) -> list[JobEvent]:
    """Every event until ``expected`` jobs have completed or failed."""
    events: list[JobEvent] = []
    finished: set[str] = set()
    stop = threading.Event()

    def keep(delivery: Any) -> None:
        event = JobEvent.from_json(delivery.body)
        events.append(event)
        if event.kind in (EventKind.COMPLETED, EventKind.FAILED):
            finished.add(event.job_id)
            if len(finished) >= expected:
                stop.set()
        delivery.ack()

    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    broker.consume(EVENTS_QUEUE, keep, prefetch=50, stop=stop)
    timer.cancel()
    return events


def run_once(
    config: WorkerConfig,
    registry: ModelRegistry,
    images: list[np.ndarray],
    *,
    pipeline: bool,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """One worker through every job; returns its timings and checks."""
    with tempfile.TemporaryDirectory(prefix="smi-worker-bench-") as folder:
        broker_url = config.broker_url or f"filesystem://{folder}/broker"
        storage = Storage(f"file://{folder}/storage")
        config = dataclasses.replace(
            config,
            broker_url=broker_url,
            storage_url=storage.url,
            pipeline=pipeline,
            max_jobs=len(images),
        )
        broker = Broker(broker_url)
        for index, pixels in enumerate(images):
            job = f"bench_{index}"
            storage.put(f"jobs/{job}/source.png", encode_image(pixels, "png"))
            request = UpscaleRequest(job, f"jobs/{job}/source.png", f"jobs/{job}/result.png")
            broker.publish(UPSCALE_QUEUE, request.to_json(), message_id=job)
        worker = UpscaleWorker(broker, storage, registry, config)
        warm_up_s = worker.warm_up()
        started = time.perf_counter()
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        events = completed_events(broker, len(images), timeout_s)
        seconds = time.perf_counter() - started
        thread.join(timeout=60)
        completed = [e for e in events if e.kind == EventKind.COMPLETED]
        scale = worker._upscaler(registry.get().name).spec.scale
        sizes_ok = all(
            decode_image(storage.get(f"jobs/bench_{i}/result.png")).pixels.shape[:2]
            == (pixels.shape[0] * scale, pixels.shape[1] * scale)
            for i, pixels in enumerate(images)
        )
        broker.close()
    stage_names = ("prepare_s", "upscale_s", "model_s", "encode_s", "store_s")
    return {
        "pipeline": pipeline,
        "jobs": len(images),
        "seconds": seconds,
        "images_per_hour": 3600 * len(images) / seconds,
        "warm_up_s": warm_up_s,
        "completed_once": sorted(e.job_id for e in completed)
        == sorted(f"bench_{i}" for i in range(len(images))),
        "sizes_ok": sizes_ok,
        "stage_means_s": {
            name: statistics.mean(e.extra.get(name, 0.0) for e in completed)
            for name in stage_names
            if completed
        },
    }


def compare(
    config: WorkerConfig, registry: ModelRegistry, images: list[np.ndarray], repeat: int
) -> dict[str, Any]:
    """Serial and pipelined runs, interleaved; the best and median of each."""
    runs: dict[str, list[dict[str, Any]]] = {"serial": [], "pipelined": []}
    for _ in range(repeat):
        for name, pipeline in (("serial", False), ("pipelined", True)):
            run = run_once(config, registry, images, pipeline=pipeline)
            runs[name].append(run)
            print(
                f"{name:<10} {run['seconds']:7.2f}s  {run['images_per_hour']:8.0f} images/h  "
                f"{'ok' if run['completed_once'] and run['sizes_ok'] else 'WRONG'}",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for name, done in runs.items():
        seconds = [run["seconds"] for run in done]
        summary[name] = {
            "best_s": min(seconds),
            "median_s": statistics.median(seconds),
            "all_correct": all(run["completed_once"] and run["sizes_ok"] for run in done),
            "stage_means_s": done[-1]["stage_means_s"],
        }
    summary["speedup_best"] = summary["serial"]["best_s"] / summary["pipelined"]["best_s"]
    summary["speedup_median"] = summary["serial"]["median_s"] / summary["pipelined"]["median_s"]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=64, help="input side of each job")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--broker", help="broker URL (default: a fresh embedded broker)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    environ = {"SMI_WORKER_PROGRESS_INTERVAL_S": "0.5"}
    if args.device:
        environ["SMI_WORKER_DEVICE"] = args.device
    config = dataclasses.replace(WorkerConfig.from_env(environ), broker_url=args.broker or "")
    registry = ModelRegistry.from_env()
    images = crops(args.jobs, args.size)
    print(
        f"{args.jobs} jobs of {args.size}x{args.size} on {config.device}, {registry.default_name}"
    )
    summary = compare(config, registry, images, args.repeat)
    print(
        f"serial best {summary['serial']['best_s']:.2f}s "
        f"median {summary['serial']['median_s']:.2f}s; "
        f"pipelined best {summary['pipelined']['best_s']:.2f}s "
        f"median {summary['pipelined']['median_s']:.2f}s; "
        f"speedup {summary['speedup_best']:.2f}x best, {summary['speedup_median']:.2f}x median"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["serial"]["all_correct"] and summary["pipelined"]["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
