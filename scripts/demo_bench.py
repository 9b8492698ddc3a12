"""The demo's purchase and preview, timed with the worker in each precision.

    .venv/bin/python scripts/demo_bench.py --rounds 2 [--precisions fp32,auto] [--json F]

Starts ``smi-demo`` (the shop, the gateway, the Stripe emulator and one CPU
worker on the embedded defaults, tile 64 as the demo sets it) once per
precision, the precisions alternating round after round so that a busy
spell on the machine falls on both. Each time: ``--previews`` previews of
128x128 squares of the shop's cat photo (the first, which builds the
kernels, not counted), then ``--purchases`` purchases of the same photo as a
buyer makes it: the checkout, the payment with the test card that succeeds,
the job's status polled every 0.1 s until completed, the result downloaded.
``fp32`` sets ``SMI_WORKER_PRECISION`` and ``SMI_WORKER_PREVIEW_PRECISION``
(what every worker ran before ``auto``); ``auto`` sets nothing. Prints the
median and range of each per precision, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_support import free_port

BIN = Path(sys.executable).parent
PHOTO = "cat.png"  # the shop's chelsea.png, 192x128
POLL_S = 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--previews", type=int, default=3)
    parser.add_argument("--purchases", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    worker_lines: dict[str, str] = {}
    for _ in range(args.rounds):
        for precision in args.precisions.split(","):
            runs = results.setdefault(precision, {"preview_s": [], "purchase_s": []})
            line = run_demo(precision, args.previews, args.purchases, runs)
            worker_lines[precision] = line
    report: dict[str, Any] = {"photo": PHOTO, "worker": worker_lines, "precisions": {}}
    for precision, runs in results.items():
        report["precisions"][precision] = {
            name: {
                "median": round(statistics.median(times), 2),
                "min": round(min(times), 2),
                "max": round(max(times), 2),
                "n": len(times),
            }
            for name, times in runs.items()
        }
    names = list(results)
    if len(names) == 2:
        before, after = (report["precisions"][name] for name in names)
        report["ratio_median"] = {
            kind: round(before[kind]["median"] / after[kind]["median"], 2) for kind in before
        }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def run_demo(precision: str, previews: int, purchases: int, runs: dict[str, list[float]]) -> str:
    """One ``smi-demo`` with the worker in ``precision``; returns the worker's ready line."""
    folder = Path(tempfile.mkdtemp(prefix="smi-demo-bench-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("SMI_")}
    if precision != "auto":
        env |= {"SMI_WORKER_PRECISION": precision, "SMI_WORKER_PREVIEW_PRECISION": precision}
    env |= {"SMI_PREVIEW_PER_CLIENT_PER_MINUTE": "1000", "SMI_PREVIEW_BURST": "100"}
    shop, gateway_port, emulator_port = free_port(), free_port(), free_port()
    demo = subprocess.Popen(
        [
            BIN / "smi-demo",
            *("--port", str(shop), "--gateway-port", str(gateway_port)),
            *("--emulator-port", str(emulator_port), "--data-dir", str(folder / "demo")),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "Sell My Images is running" in line:
                break
        else:
            raise SystemExit(f"smi-demo stopped (exit {demo.wait()})")
        gateway = f"http://127.0.0.1:{gateway_port}"
        emulator = f"http://127.0.0.1:{emulator_port}"
        image_url = f"http://127.0.0.1:{shop}/photos/{PHOTO}"
        for n in range(previews + 1):
            seconds = preview(gateway, image_url, x=(n * 17) % 64, y=0)
            if n:
                runs["preview_s"].append(seconds)
        for _ in range(purchases):
            runs["purchase_s"].append(purchase(gateway, emulator, image_url))
        log = (folder / "demo" / "logs" / "worker.log").read_text()
        ready = next(line for line in log.splitlines() if "ready on" in line)
        return str(json.loads(ready)["message"]) if ready.startswith("{") else ready
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=120)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


def preview(gateway: str, image_url: str, x: int, y: int) -> float:
    """Seconds from the request to both images stored, polled as often as ``POLL_S``."""
    started = time.perf_counter()
    answer = httpx.post(
        f"{gateway}/api/previews", json={"image_url": image_url, "x": x, "y": y}, timeout=60
    ).json()
    while answer["status"] == "pending":
        time.sleep(POLL_S)
        answer = httpx.get(f"{gateway}/api/previews/{answer['preview_id']}", timeout=30).json()
    if answer["status"] != "ready":
        raise SystemExit(f"preview {answer}")
    return time.perf_counter() - started


def purchase(gateway: str, emulator: str, image_url: str) -> float:
    """Seconds from the click on "Buy" to the downloaded result."""
    started = time.perf_counter()
    checkout = httpx.post(f"{gateway}/api/checkout", json={"image_url": image_url}, timeout=60)
    checkout.raise_for_status()
    body = checkout.json()
    session_id = body["checkout_url"].rsplit("/", 1)[1]
    paid = httpx.post(
        f"{emulator}/_emulator/checkout/{session_id}/pay",
        data={"card": "4242424242424242", "email": "buyer@example.com"},
        timeout=60,
    ).json()
    if paid.get("outcome") != "paid":
        raise SystemExit(f"payment {paid}")
    headers = {"X-Buyer-Key": body["buyer_key"]}
    while True:
        status = httpx.get(f"{gateway}/api/jobs/{body['job_id']}", headers=headers, timeout=30)
        job = status.json()
        if job["status"] == "completed":
            break
        if job["status"] not in ("awaiting_payment", "pending", "processing"):
            raise SystemExit(f"job {job}")
        time.sleep(POLL_S)
    download = httpx.get(job["download_url"], timeout=60)
    download.raise_for_status()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
