"""Checkout throughput: "Buy" clicks into a real gateway, each a fetch, a store and a session.

    .venv/bin/python scripts/checkout_bench.py --checkouts 400 --concurrency 8

Starts the Stripe emulator, an image server (one 640x480 JPEG) and
``smi-gateway serve`` on loopback against a fresh PostgreSQL database, then
posts ``--checkouts`` checkouts over ``--concurrency`` connections. Each one
fetches the image, decodes and prices it, stores the source, creates the
job and a Checkout Session. Prints checkouts/s and latency percentiles, and
checks that every 201 has exactly one job, whose source is stored, and one
session at the emulator (the rate limits are raised: one client clicks for
everyone; sources are stored by content, so all share the photo's one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import stripe
from bench_support import free_port, serve_folder, temporary_database, wait_until_up
from PIL import Image
from sqlalchemy import func, select

from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.tables import Job

BIN = Path(sys.executable).parent


def write_photo(folder: Path) -> None:
    rng = np.random.default_rng(1)
    photo = np.clip(rng.normal(128, 40, (480, 640, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(folder / "photo.jpg", quality=90)


async def click(count: int, concurrency: int, url: str, image_url: str) -> tuple[list, float]:
    """``count`` checkouts over ``concurrency`` connections: (status, ms, job id) each."""
    results: list[tuple[int, float, str | None]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one_connection() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(url, json={"image_url": image_url})
                elapsed = (time.perf_counter() - started) * 1000
                job = response.json().get("job_id") if response.status_code == 201 else None
                results.append((response.status_code, elapsed, job))

        began = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        return results, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    processes: list[subprocess.Popen[bytes]] = []
    folder = Path(tempfile.mkdtemp(prefix="smi-checkout-bench-"))
    write_photo(folder)
    with temporary_database() as database_url, serve_folder(folder) as host:
        try:
            migrate(create_database_engine(database_url))
            emulator_port, port = free_port(), free_port()
            emulator = f"http://127.0.0.1:{emulator_port}"
            processes.append(
                subprocess.Popen(
                    [BIN / "smi-stripe-emulator", "--port", str(emulator_port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            env = {
                **os.environ,
                "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_bench",
                "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_bench",
                "SMI_STRIPE_API_BASE": emulator,
                "SMI_DATABASE_URL": database_url,
                "SMI_STORAGE_URL": f"file://{folder / 'storage'}",
                "SMI_DATA_DIR": str(folder / "data"),
                "SMI_BROKER_URL": f"filesystem://{folder / 'broker'}",
                "SMI_SOURCE_HOSTS": host,
                "SMI_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "SMI_BACKGROUND_IN_PROCESS": "false",
                # One client here clicks for everybody: the per-client limit would answer 429.
                "SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "1000000",
                "SMI_CHECKOUT_BURST": "100000",
                "SMI_CHECKOUT_GLOBAL_PER_MINUTE": "1000000",
            }
            command = [BIN / "smi-gateway", "serve", "--port", str(port), "--no-access-log"]
            command += ["--workers", str(args.workers)]
            processes.append(
                subprocess.Popen(
                    command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            wait_until_up(f"{emulator}/v1/checkout/sessions")
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}/api/checkout"
            image_url = f"http://{host}/photo.jpg"
            asyncio.run(click(args.concurrency, args.concurrency, url, image_url))  # warm up
            results, seconds = asyncio.run(click(args.checkouts, args.concurrency, url, image_url))

            created = [job for status, _, job in results if status == 201]
            statuses: dict[int, int] = {}
            for status, _, _ in results:
                statuses[status] = statuses.get(status, 0) + 1
            latencies = sorted(ms for status, ms, _ in results if status == 201)
            with session_factory(create_database_engine(database_url))() as session:
                jobs = set(session.scalars(select(Job.id)))
                with_session = session.scalar(
                    select(func.count()).select_from(Job).where(Job.stripe_session_id.is_not(None))
                )
                source_keys = list(session.scalars(select(Job.source_key)))
            client = stripe.StripeClient("sk_test_bench", base_addresses={"api": emulator})
            sessions = {
                s.metadata["job_id"]
                for s in client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter()
            }
            # Sources are stored by their content: every job here names the one photo's.
            stored = [key for key in source_keys if (folder / "storage" / key).is_file()]
            report = {
                "checkouts": args.checkouts,
                "concurrency": args.concurrency,
                "uvicorn_workers": args.workers,
                "statuses": statuses,
                "checkouts_per_s": len(created) / seconds,
                "p50_ms": statistics.median(latencies) if latencies else None,
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
                "jobs": len(jobs),
                "jobs_with_a_session": with_session,
                "sessions_at_stripe": len(sessions),
                "stored_sources": len(set(stored)),
                "jobs_whose_source_is_stored": len(stored),
            }
            warm = args.concurrency
            ok = (
                set(created) <= jobs
                and len(created) == len(set(created))
                and len(jobs) == len(created) + warm == with_session == len(stored)
                and set(created) <= sessions
            )
            report["every_checkout_once"] = ok
            print(json.dumps(report, indent=2))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
            return 0 if ok else 1
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
