"""Webhook throughput: signed ``checkout.session.completed`` events into a real gateway.

    .venv/bin/python scripts/webhook_bench.py --seconds 20 --concurrency 16 --duplicates 1

Starts ``smi-gateway serve`` (uvicorn) on loopback against a fresh PostgreSQL
database, creates the jobs directly, then has wrk (``apt-get install wrk``)
post one signed event per job (plus ``--duplicates`` extra copies of each,
shuffled in) over ``--concurrency`` connections for ``--seconds``. Prints
deliveries/s and latency percentiles, and checks that every event sent took
effect once: its job ``pending`` with exactly one upscale message and one
audit row; nothing lost, nothing doubled.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_support import free_port, temporary_database, wait_until_up
from sqlalchemy import func, select

from devtools.emulator.webhooks import sign_payload
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.lifecycle import NewJob, create_job
from gateway.store.tables import AuditEntry, Job, OutboxMessage, WebhookEvent

SECRET = "whsec_bench"


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


# wrk sends the pre-signed deliveries in order from one C thread for a fixed time: a
# Python load generator would take most of a core of this 2-core machine.
WRK_SCRIPT = r"""
local deliveries, total, sent = {}, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    local signature, body = line:match("^([^\t]*)\t(.*)$")
    total = total + 1
    deliveries[total] = { signature, body }
  end
end
function request()
  sent = sent + 1
  local delivery = deliveries[math.min(sent, total)]  -- past the end: a harmless duplicate
  local headers = { ["Content-Type"] = "application/json", ["Stripe-Signature"] = delivery[1] }
  if os.getenv("BENCH_CLOSE") == "1" then headers["Connection"] = "close" end
  return wrk.format("POST", nil, headers, delivery[2])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def deliver(
    url: str, payloads: list[bytes], args: argparse.Namespace, folder: Path
) -> dict[str, float]:
    """Post the payloads in order for ``args.seconds`` with wrk; counts and latencies (ms)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("webhook_bench: needs wrk (apt-get install wrk)")
    # wrk takes the first request to size its buffers and never sends it: a throwaway
    # event of a type the gateway ignores goes first.
    throwaway = json.dumps({"id": "evt_bench_sizing", "type": "bench.ignored"}).encode()
    lines = [f"{sign_payload(p, SECRET)}\t{p.decode()}" for p in [throwaway, *payloads]]
    (folder / "deliveries.txt").write_text("\n".join(lines) + "\n")
    (folder / "deliver.lua").write_text(WRK_SCRIPT)
    done = subprocess.run(
        [
            *(wrk, "-t1", f"-c{args.concurrency}", f"-d{args.seconds}s", "--timeout", "30s"),
            *("-s", str(folder / "deliver.lua"), url, "--", str(folder / "deliveries.txt")),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_CLOSE": "0" if args.keepalive else "1"},
        timeout=args.seconds + 120,
    )
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    requests, duration_us, errors, p50_us, p99_us, max_us = map(int, result.split()[1:])
    if errors:
        raise RuntimeError(f"{errors} deliveries failed:\n{done.stdout}")
    if requests >= len(payloads):
        raise SystemExit(
            "webhook_bench: every delivery was sent before the time was up; raise --jobs"
        )
    return {
        "deliveries": requests,
        "seconds": duration_us / 1e6,
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
        "max_ms": max_us / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000, help="more than --seconds can deliver")
    parser.add_argument("--seconds", type=int, default=20, help="how long wrk delivers")
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

    port = free_port()
    gateway = None
    with temporary_database() as database_url:
        name = database_url.rsplit("/", 1)[1]
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
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}/webhooks/stripe"
            folder = Path(f"/tmp/{name}")
            folder.mkdir(parents=True, exist_ok=True)
            timed = deliver(url, payloads, args, folder)
            # Deliveries still in flight when wrk stopped may or may not have been counted.
            margin = args.concurrency
            surely_sent = {json.loads(p)["id"] for p in payloads[: timed["deliveries"] - margin]}
            maybe_sent = {json.loads(p)["id"] for p in payloads[: timed["deliveries"] + margin]}

            time.sleep(1)  # the last answers' transactions are committed
            with sessions() as session:
                claimed = set(session.scalars(select(WebhookEvent.event_id)))
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
                "deliveries_timed": timed["deliveries"],
                "duplicates_per_event": args.duplicates,
                "concurrency": args.concurrency,
                "uvicorn_workers": args.workers,
                "keepalive": args.keepalive,
                "events_per_s": timed["deliveries"] / timed["seconds"],
                "p50_ms": timed["p50_ms"],
                "p99_ms": timed["p99_ms"],
                "max_ms": timed["max_ms"],
                "events_claimed": len(claimed),
                "sent_but_not_claimed": len(surely_sent - claimed),
                "claimed_but_not_sent": len(claimed - maybe_sent),
                "jobs_pending": pending,
                "upscale_messages": messages,
                "jobs_with_two_messages": doubled,
                "pending_audit_rows": paid_audits,
            }
            ok = (
                pending == messages == paid_audits == len(claimed)
                and surely_sent <= claimed <= maybe_sent
                and doubled == 0
            )
            report["nothing_lost_or_doubled"] = ok
            for key, value in report.items():
                print(
                    f"{key:28s} {value:.1f}" if isinstance(value, float) else f"{key:28s} {value}"
                )
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2) + "\n")
            return 0 if ok else 1
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
