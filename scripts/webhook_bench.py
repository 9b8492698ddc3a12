"""Webhook throughput: signed ``checkout.session.completed`` events into a real gateway.

    .venv/bin/python scripts/webhook_bench.py --jobs 2000 --concurrency 16 --duplicates 1

Starts ``smi-gateway serve`` (uvicorn) on loopback against a fresh PostgreSQL
database, creates the jobs directly, then posts one signed event per job
(plus ``--duplicates`` extra copies of each, interleaved) from
``--concurrency`` clients. Prints events/s and latency percentiles, and
checks that every job is ``pending`` with exactly one upscale message and
one audit row for the change: nothing lost, nothing doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select, text

from gateway.database import create_database_engine, migrate, session_factory
from gateway.emulator.webhooks import sign_payload
from gateway.jobs import NewJob, create_job
from gateway.tables import AuditEntry, Job, OutboxMessage

POSTGRES_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
SECRET = "whsec_bench"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_events(sessions, count: int) -> list[dict]:
    events = []
    with sessions.begin() as session:
        for i in range(count):
            job = create_job(
                session,
                NewJob(f"https://img.example/{i}.jpg", f"jobs/{i}/source.jpg", 500, 500, 60, "usd"),
            )
            job.stripe_session_id = f"cs_bench_{i}"
            events.append(
                {
                    "id": f"evt_bench_{i}",
                    "object": "event",
                    "type": "checkout.session.completed",
                    "data": {
                        "object": {
                            "id": f"cs_bench_{i}",
                            "object": "checkout.session",
                            "payment_status": "paid",
                            "amount_total": 60,
                            "currency": "usd",
                            "payment_intent": f"pi_bench_{i}",
                            "metadata": {"job_id": job.id},
                            "customer_details": {"email": f"buyer{i}@example.com"},
                        }
                    },
                }
            )
    return events


async def deliver(
    url: str, payloads: list[bytes], concurrency: int, keepalive: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=keepalive)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            payload = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(
                url,
                content=payload,
                headers={
                    "Stripe-Signature": sign_payload(payload, SECRET),
                    "Content-Type": "application/json",
                },
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text}")

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duplicates", type=int, default=1, help="extra copies of each event")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--no-keepalive",
        dest="keepalive",
        action="store_false",
        help="a new connection per delivery (spreads load over the workers)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    name = f"smi_bench_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = f"postgresql://root@127.0.0.1:5432/{name}"
    port = free_port()
    gateway = None
    try:
        engine = create_database_engine(database_url)
        migrate(engine)
        sessions = session_factory(engine)
        events = make_events(sessions, args.jobs)
        payloads = [json.dumps(e).encode() for e in events for _ in range(1 + args.duplicates)]
        random.Random(1).shuffle(payloads)
        env = {
            **os.environ,
            "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_bench",
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": SECRET,
            "SMI_DATABASE_URL": database_url,
            "SMI_BACKGROUND_IN_PROCESS": "false",
            "SMI_DATA_DIR": f"/tmp/{name}",
        }
        gateway = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "smi-gateway"),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        keepalive = args.concurrency if args.keepalive else 0
        asyncio.run(deliver(url, payloads[:50], args.concurrency, keepalive))  # warm-up
        latencies, seconds = asyncio.run(deliver(url, payloads[50:], args.concurrency, keepalive))

        with sessions() as session:
            pending = session.scalar(
                select(func.count()).select_from(Job).where(Job.status == "pending")
            )
            messages = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.kind == "upscale")
            )
            doubled = session.scalar(
                select(func.count()).select_from(
                    select(OutboxMessage.job_id)
                    .where(OutboxMessage.kind == "upscale")
                    .group_by(OutboxMessage.job_id)
                    .having(func.count() > 1)
                    .subquery()
                )
            )
            paid_audits = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.to_status == "pending")
            )
        report = {
            "jobs": args.jobs,
            "deliveries_timed": len(latencies),
            "duplicates_per_event": args.duplicates,
            "concurrency": args.concurrency,
            "uvicorn_workers": args.workers,
            "keepalive": args.keepalive,
            "events_per_s": len(latencies) / seconds,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": max(latencies) * 1000,
            "jobs_pending": pending,
            "upscale_messages": messages,
            "jobs_with_two_messages": doubled,
            "pending_audit_rows": paid_audits,
        }
        ok = pending == messages == paid_audits == args.jobs and doubled == 0
        report["nothing_lost_or_doubled"] = ok
        for key, value in report.items():
            print(f"{key:28s} {value:.1f}" if isinstance(value, float) else f"{key:28s} {value}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
