"""Preview latency: from the page's request to both images stored, with a real CPU worker.

    .venv/bin/python scripts/preview_bench.py --previews 12

Starts an image server (a 640x480 crop of the bundled cat), ``smi-gateway
serve`` and one ``smi-worker`` on the embedded defaults (SQLite, the
filesystem broker, local storage) and asks for ``--previews`` previews of
different 128x128 squares one after another, polling every 50 ms as the
page would (every second). Prints p50/p95 of the time to ready, and the
worker's own time per preview from its log.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_support import free_port, serve_folder, wait_until_up

from shared.images import decode_image
from upscaler.output.images import encode_image

BIN = Path(sys.executable).parent
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previews", type=int, default=12)
    parser.add_argument("--model", default="RealESRGAN_x4plus")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="smi-preview-bench-"))
    photo = decode_image((SAMPLES / "chelsea.png").read_bytes()).pixels
    (folder / "photo.png").write_bytes(encode_image(photo, "png"))
    height, width = photo.shape[:2]

    with serve_folder(folder) as host:
        return measure(args, folder, host, width, height)


def measure(args: argparse.Namespace, folder: Path, host: str, width: int, height: int) -> int:
    """Start a gateway and a worker, and time previews one after another."""
    port = free_port()
    env = {
        **os.environ,
        "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_bench",
        "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_bench",
        "SMI_STRIPE_API_BASE": "http://127.0.0.1:9",  # previews never call Stripe
        "SMI_DATA_DIR": str(folder / "data"),
        "SMI_SOURCE_HOSTS": host,
        "SMI_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SMI_OFFER_MODELS": args.model,
        "SMI_PREVIEW_PER_CLIENT_PER_MINUTE": "100000",
        "SMI_PREVIEW_BURST": "1000",
        "SMI_WORKER_DEVICE": "cpu",
    }
    log = (folder / "worker.log").open("wb")
    processes = [
        subprocess.Popen(
            [BIN / "smi-gateway", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen([BIN / "smi-worker"], env=env, stdout=log, stderr=subprocess.STDOUT),
    ]
    gateway = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{gateway}/healthz")
        while b"ready on" not in (folder / "worker.log").read_bytes():
            time.sleep(0.2)
        times = []
        for n in range(args.previews + 1):  # the first warms the model up: not counted
            x = (n * 37) % (width - 128)
            y = (n * 53) % (height - 128)
            started = time.perf_counter()
            answer = httpx.post(
                f"{gateway}/api/previews",
                json={"image_url": f"http://{host}/photo.png", "x": x, "y": y},
                timeout=60,
            ).json()
            while answer["status"] == "pending":
                time.sleep(0.05)
                answer = httpx.get(f"{gateway}/api/previews/{answer['preview_id']}").json()
            if answer["status"] != "ready":
                raise SystemExit(f"preview {answer['preview_id']} {answer['status']}")
            if n:
                times.append(time.perf_counter() - started)
        times.sort()
        report = {
            "previews": len(times),
            "model": args.model,
            "square": 128,
            "p50_s": round(statistics.median(times), 2),
            "p95_s": round(times[max(0, round(len(times) * 0.95) - 1)], 2),
            "max_s": round(times[-1], 2),
        }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return 0
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
