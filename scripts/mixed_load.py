"""A busy shop for a bounded time: buyers, Stripe and the seller at once, then the money checked.

    .venv/bin/python scripts/mixed_load.py --seconds 120 --buyers 6

Two gateway processes share a fresh PostgreSQL database and a RabbitMQ
virtual host of their own (made and deleted here); one CPU worker upscales.
The Stripe emulator delivers every event twice at once and in batches,
newest first (signed, as Stripe does), to the first gateway. Meanwhile:

- buyers (``--buyers`` threads) ask for a preview (one of three squares
  of one image, as buyers of the same picture do), check out at either
  gateway, pay at Stripe (one in five with a card that is declined), come
  back with the session id, and poll their job with backoff (0.2 s,
  doubling to 2 s) until it is delivered;
- the seller lists jobs and events, reads the revenue report and the
  reconciliation, and refunds one delivered job in ten.

Then every paid job is waited for, and the money is checked from both
sides as the fault suite does (``tests/reliability/money.py``: Stripe's
sessions and refunds against our jobs, refunds and emails). Prints requests
per second by kind, p50/p99, errors (any answer not in the kind's expected
set), the webhooks the gateways took (their metrics) and each gateway's
memory at the end against the start; ``--json`` writes the same.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "reliability")]

from bench_support import temporary_database  # noqa: E402
from money import assert_money_safe  # noqa: E402
from system import ADMIN_TOKEN, SUCCESS_CARD, System, running_system  # noqa: E402

DECLINED_CARD = "4000000000000002"
# What each kind of request may answer when all is well.
EXPECTED: dict[str, set[int]] = {
    "preview": {200, 201, 202},
    "checkout": {201},
    "pay": {200},
    "return": {200},
    "status": {200},
    "admin jobs": {200},
    "admin events": {200},
    "admin revenue": {200},
    "admin reconciliation": {200},
    "admin refund": {200, 202, 409},  # 409: it was already being refunded
}


class Record:
    """Latencies and answers by kind, from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def call(self, kind: str, send: Any, url: str, **options: Any) -> httpx.Response | None:
        """``send(url, **options)`` (a client's ``get`` or ``post``), timed and checked."""
        started = time.perf_counter()
        try:
            response = send(url, **options)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[kind].append(f"{type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[kind].append(elapsed)
            if response.status_code not in EXPECTED[kind]:
                self.errors[kind].append(f"{response.status_code} {response.text[:200]}")
        return response


def buyer(system: System, record: Record, until: float, seed: int, paid: list[str]) -> None:
    dice = random.Random(seed)
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < until:
            gateway = system.gateways[dice.randrange(len(system.gateways))]
            # Buyers of one image look at a few squares of it (identical requests share one).
            square = {"image_url": f"{system.images}/wide.png", "x": dice.choice((0, 64, 128))}
            record.call("preview", client.post, f"{gateway}/api/previews", json={**square, "y": 0})
            photo = {"image_url": f"{system.images}/photo.png"}
            checkout = record.call("checkout", client.post, f"{gateway}/api/checkout", json=photo)
            if checkout is None or checkout.status_code != 201:
                continue
            body = checkout.json()
            job_id, key = body["job_id"], body["buyer_key"]
            with record.lock:
                system.buyer_keys[job_id] = key
            session_id = body["checkout_url"].rsplit("/", 1)[1]
            card = DECLINED_CARD if dice.random() < 0.2 else SUCCESS_CARD
            pay = record.call(
                "pay",
                client.post,
                f"{system.emulator}/_emulator/checkout/{session_id}/pay",
                data={"card": card, "email": f"buyer{seed}@example.com"},
            )
            if pay is None or pay.json().get("outcome") != "paid":
                continue
            with record.lock:
                paid.append(job_id)
            headers = {"X-Buyer-Key": key}
            record.call(
                "return",
                client.post,
                f"{gateway}/api/jobs/{job_id}/return",
                json={"session_id": session_id},
                headers=headers,
            )
            wait = 0.2
            while time.monotonic() < until + 120:
                status = record.call(
                    "status", client.get, f"{gateway}/api/jobs/{job_id}", headers=headers
                )
                if status is not None and status.json().get("status") in ("completed", "refunded"):
                    break
                time.sleep(wait)
                wait = min(wait * 2, 2.0)


def seller(system: System, record: Record, until: float, paid: list[str]) -> None:
    dice = random.Random(0)
    refunded: set[str] = set()
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        base = system.gateway
        while time.monotonic() < until:
            record.call("admin jobs", c.get, f"{base}/admin/jobs", params={"limit": 50})
            record.call("admin events", c.get, f"{base}/admin/events")
            record.call("admin revenue", c.get, f"{base}/admin/reports/revenue")
            record.call("admin reconciliation", c.get, f"{base}/admin/reconciliation")
            with record.lock:
                candidates = [job for job in paid if job not in refunded]
            if candidates and dice.random() < 0.3:
                job_id = dice.choice(candidates)
                refunded.add(job_id)
                record.call(
                    "admin refund",
                    c.post,
                    f"{base}/admin/jobs/{job_id}/refund",
                    json={"reason": "load"},
                )
            time.sleep(1.0)


def figures(times: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    ordered = sorted(times)
    return {
        "requests": len(times),
        "per_s": round(len(times) / elapsed, 2),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
        "errors": errors,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gateway_memory(system: System) -> dict[str, float]:
    """Each gateway's resident memory, MB (``smi-gateway`` runs uvicorn in its own process)."""
    return {
        name: round(rss_mb(process.pid), 1)
        for name, process in system.processes
        if name.startswith("gateway")
    }


def webhook_metrics(system: System) -> dict[str, float]:
    """Webhooks the gateways took, from their metrics: count and outcome."""
    taken: dict[str, float] = defaultdict(float)
    token = {"Authorization": "Bearer metrics-token-0123456789"}
    for gateway in system.gateways:
        for line in httpx.get(f"{gateway}/metrics", headers=token, timeout=30).text.splitlines():
            if line.startswith("smi_webhook_events_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                taken[outcome] += float(line.rsplit(" ", 1)[1])
    return dict(taken)


def rabbitmq_vhost() -> str:
    name = f"smi_load_{random.randrange(1 << 30):x}"
    for command in (
        ["add_vhost", name],
        ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--buyers", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    vhost = rabbitmq_vhost()
    try:
        with (
            temporary_database() as database,
            tempfile.TemporaryDirectory(prefix="smi-load-") as folder,
            running_system(
                Path(folder),
                database,
                f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
                gateways=2,
                SMI_METRICS_TOKEN="metrics-token-0123456789",
                SMI_PREVIEW_PER_CLIENT_PER_MINUTE="100000",
                SMI_PREVIEW_GLOBAL_PER_MINUTE="100000",
            ) as system,
        ):
            faults = {"webhook_copies": 2, "reorder_webhooks": True}
            httpx.post(f"{system.emulator}/_emulator/faults", json=faults, timeout=30)
            system.start_worker()
            before = gateway_memory(system)
            record, paid = Record(), []
            until = time.monotonic() + args.seconds
            threads = [
                threading.Thread(target=buyer, args=(system, record, until, seed, paid))
                for seed in range(1, args.buyers + 1)
            ]
            threads.append(threading.Thread(target=seller, args=(system, record, until, paid)))
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            after = gateway_memory(system)
            assert_money_safe(system, timeout=300)
            report: dict[str, Any] = {
                "seconds": round(elapsed, 1),
                "buyers": args.buyers,
                "paid_jobs": len(paid),
                "kinds": {
                    kind: {
                        "requests": len(times),
                        "per_s": round(len(times) / elapsed, 2),
                        "p50_ms": round(statistics.median(times) * 1000, 1),
                        "p99_ms": round(
                            sorted(times)[max(0, int(len(times) * 0.99) - 1)] * 1000, 1
                        ),
                        "errors": len(record.errors[kind]),
                    }
                    for kind, times in sorted(record.latencies.items())
                },
                "errors": {kind: errors[:5] for kind, errors in record.errors.items() if errors},
                "webhooks": webhook_metrics(system),
                "gateway_rss_mb_start": before,
                "gateway_rss_mb_end": after,
                "money_safe": True,
            }
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    print(f"{'kind':22s} {'requests':>8s} {'per s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} errors")
    for kind, row in report["kinds"].items():
        print(
            f"{kind:22s} {row['requests']:8d} {row['per_s']:7.2f} {row['p50_ms']:8.1f}"
            f" {row['p99_ms']:8.1f} {row['errors']}"
        )
    for key in ("seconds", "paid_jobs", "webhooks", "gateway_rss_mb_start", "gateway_rss_mb_end"):
        print(f"{key}: {report[key]}")
    if report["errors"]:
        print("errors:", json.dumps(report["errors"], indent=2))
    print("money checked from both sides: safe")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
