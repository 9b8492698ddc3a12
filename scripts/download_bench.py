"""Large downloads through one gateway process, with webhooks timed at the same moment.

    .venv/bin/python scripts/download_bench.py --downloads 20 --size-mb 100

Starts ``smi-gateway serve`` (one process) on loopback against a fresh
PostgreSQL database, stores one random result of ``--size-mb`` (as
incompressible as a PNG) and completes ``--downloads`` jobs on it, then has
that many curl processes download their jobs' links at once, in each mode:

- ``stream-file``: results in a local folder, streamed by the gateway;
- ``stream-s3``: results in S3 (moto's server, a subprocess), streamed by the
  gateway (``SMI_DOWNLOAD_REDIRECT=stream``);
- ``redirect-s3``: results in S3, each link answered with a redirect to a
  presigned address that curl follows to the store (the default on S3).

Meanwhile one client posts signed ``checkout.session.completed`` webhooks to
the same process back to back, timing each. Prints, per mode, the gateway's
memory growth (its resident set, sampled every 50 ms, peak during the
downloads less its level just before), the transfer rate (all bytes over the
wall time, and each download's own) and the webhooks' p50/p99 before and
during the downloads. Every download is checked whole (size and sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_support import free_port, temporary_database, wait_until_up

from devtools.emulator.webhooks import sign_payload
from devtools.s3server import local_s3
from gateway.background.job_events import apply_job_event
from gateway.delivery.links import DownloadLinks
from gateway.store.database import create_database_engine, migrate, session_factory
from gateway.store.lifecycle import NewJob, create_job
from shared.messages import EventKind, JobEvent
from shared.storage import Storage

SECRET = "whsec_bench"
DOWNLOAD_SECRET = "download-bench-secret-0123456789"
RESULT_KEY = "bench/result.png"
MODES = ("stream-file", "stream-s3", "redirect-s3")


def completed_jobs(sessions, count: int, size: int, digest: str) -> list[str]:
    """``count`` paid jobs completed on the one stored result."""
    ids = []
    with sessions.begin() as session:
        for i in range(count):
            job = create_job(
                session,
                NewJob(f"https://img.example/d{i}.jpg", f"sources/d{i}.jpg", 500, 500, 60, "usd"),
            )
            job.status = "processing"
            ids.append(job.id)
    with sessions.begin() as session:
        for job_id in ids:
            event = JobEvent(
                job_id,
                EventKind.COMPLETED,
                f"{job_id}:done",
                result_key=RESULT_KEY,
                result_size=size,
                result_sha256=digest,
            )
            apply_job_event(session, event)
    return ids


def webhook_payloads(sessions, count: int) -> list[bytes]:
    """Signed-to-be deliveries of ``count`` unpaid jobs' completed checkouts."""
    payloads = []
    with sessions.begin() as session:
        for i in range(count):
            job = create_job(
                session,
                NewJob(f"https://img.example/w{i}.jpg", f"sources/w{i}.jpg", 500, 500, 60, "usd"),
            )
            job.stripe_session_id = f"cs_dl_bench_{i}"
            event = {
                "id": f"evt_dl_bench_{i}",
                "object": "event",
                "type": "checkout.session.completed",
                "data": {
                    "object": {
                        "id": f"cs_dl_bench_{i}",
                        "object": "checkout.session",
                        "payment_status": "paid",
                        "amount_total": 60,
                        "currency": "usd",
                        "payment_intent": f"pi_dl_bench_{i}",
                        "metadata": {"job_id": job.id},
                        "customer_details": {"email": f"buyer{i}@example.com"},
                    }
                },
            }
            payloads.append(json.dumps(event).encode())
    return payloads


class Webhooks(threading.Thread):
    """Posts deliveries back to back on one kept-alive connection, timing each."""

    def __init__(self, url: str, payloads: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.url, self.payloads = url, payloads
        self.times: list[tuple[float, float]] = []  # (when it was sent, seconds it took)
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            for payload in self.payloads:
                if self.stop.is_set():
                    return
                headers = {
                    "Stripe-Signature": sign_payload(payload, SECRET),
                    "Content-Type": "application/json",
                }
                sent = time.monotonic()
                answer = client.post(self.url, content=payload, headers=headers)
                self.times.append((sent, time.monotonic() - sent))
                self.failures += answer.status_code != 200

    def between(self, start: float, end: float) -> dict[str, float]:
        taken = sorted(s for at, s in self.times if start <= at < end)
        if not taken:
            return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
        return {
            "count": len(taken),
            "p50_ms": 1000 * taken[len(taken) // 2],
            "p99_ms": 1000 * taken[min(len(taken) - 1, int(len(taken) * 0.99))],
        }


class Memory(threading.Thread):
    """The resident set of a process, every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.stop.wait(0.05):
            try:
                line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS"))
            except (OSError, StopIteration):
                return
            self.samples.append((time.monotonic(), int(line.split()[1]) * 1024))

    def peak(self, start: float, end: float) -> int:
        return max((rss for at, rss in self.samples if start <= at <= end), default=0)

    def level(self, start: float, end: float) -> int:
        found = [rss for at, rss in self.samples if start <= at <= end]
        return int(statistics.median(found)) if found else 0


@contextmanager
def gateway(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    command = [str(Path(sys.executable).parent / "smi-gateway"), "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--no-access-log"],
        env={**env, "SMI_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(timeout=30)


def download_all(links: list[str], follow: bool, size: int, digest: str) -> dict[str, float]:
    """Every link by a curl process of its own, all at once; checks each file whole."""
    with tempfile.TemporaryDirectory() as folder:
        outputs = [Path(folder) / f"{n}.png" for n in range(len(links))]
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                [
                    *("curl", "-sS", "--max-time", "900", "-o", str(out)),
                    *(["-L"] if follow else []),
                    *("-w", "%{http_code} %{size_download} %{time_total}", link),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for link, out in zip(links, outputs, strict=True)
        ]
        results = [p.communicate()[0].split() for p in processes]
        wall = time.monotonic() - started
        for (code, got, _), out in zip(results, outputs, strict=True):
            if code != "200" or int(got) != size:
                raise RuntimeError(f"a download answered {code} with {got} bytes")
            if file_digest(out) != digest:
                raise RuntimeError("a download's bytes differ from the result")
            out.unlink()
    each = [size / float(t) / 1e6 for _, _, t in results]
    return {
        "wall_s": wall,
        "total_mb_per_s": len(links) * size / wall / 1e6,
        "each_mb_per_s_median": statistics.median(each),
        "each_mb_per_s_min": min(each),
    }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_mode(
    mode: str, base_env: dict[str, str], links_for, payloads: list[bytes], args, size, digest
) -> dict[str, object]:
    env = dict(base_env)
    if mode == "stream-s3":
        env["SMI_DOWNLOAD_REDIRECT"] = "stream"
    with gateway(env) as (url, process):
        links = links_for(url)
        webhooks = Webhooks(f"{url}/webhooks/stripe", payloads)
        memory = Memory(process.pid)
        memory.start()
        httpx.head(links[0], timeout=120)  # the first look at the result (its digest) is done
        webhooks.start()
        before = time.monotonic()
        time.sleep(args.idle_s)
        started = time.monotonic()
        moved = download_all(links, mode.startswith("redirect"), size, digest)
        ended = time.monotonic()
        webhooks.stop.set()
        memory.stop.set()
        webhooks.join(timeout=60)
        memory.join(timeout=5)
        if webhooks.failures:
            raise RuntimeError(f"{webhooks.failures} webhook deliveries failed")
        idle = webhooks.between(before, started)
        busy = webhooks.between(started, ended)
        rss_before = memory.level(started - 1.0, started)
        rss_peak = memory.peak(started, ended)
        return {
            "mode": mode,
            "downloads": len(links),
            "size_mb": size / 1e6,
            **{k: round(v, 2) for k, v in moved.items()},
            "gateway_rss_before_mb": round(rss_before / 2**20, 1),
            "gateway_rss_peak_mb": round(rss_peak / 2**20, 1),
            "gateway_rss_growth_mb": round((rss_peak - rss_before) / 2**20, 1),
            "webhooks_idle": {k: round(v, 1) for k, v in idle.items()},
            "webhooks_during": {k: round(v, 1) for k, v in busy.items()},
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=20)
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)}")
    parser.add_argument("--idle-s", type=float, default=5, help="webhooks timed before")
    parser.add_argument("--webhooks", type=int, default=20000, help="more than can be sent")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}")

    data = os.urandom(int(args.size_mb * 1e6))
    size, digest = len(data), hashlib.sha256(data).hexdigest()
    reports = []
    with tempfile.TemporaryDirectory() as scratch, temporary_database() as database_url:
        engine = create_database_engine(database_url)
        migrate(engine)
        sessions = session_factory(engine)
        jobs = completed_jobs(sessions, args.downloads, size, digest)
        payloads = webhook_payloads(sessions, args.webhooks)
        share = len(payloads) // len(modes)
        links = DownloadLinks(DOWNLOAD_SECRET, "http://x", 3600)
        tokens = [links.issue(job_id)[0] for job_id in jobs]
        base = {
            **os.environ,
            "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_bench",
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": SECRET,
            "SMI_DOWNLOAD_SECRET": DOWNLOAD_SECRET,
            "SMI_DATABASE_URL": database_url,
            "SMI_BROKER_URL": f"filesystem://{scratch}/broker",
            "SMI_BACKGROUND_IN_PROCESS": "false",
            "SMI_DATA_DIR": f"{scratch}/data",
            "SMI_LOG_FORMAT": "json",
        }

        def links_for(url: str) -> list[str]:
            return [f"{url}/downloads/{token}" for token in tokens]

        for n, mode in enumerate(modes):
            mine = payloads[n * share : (n + 1) * share]
            if mode == "stream-file":
                url = f"file://{scratch}/storage"
                Storage(url).put(RESULT_KEY, data)
                env = {**base, "SMI_STORAGE_URL": url}
                reports.append(run_mode(mode, env, links_for, mine, args, size, digest))
                continue
            with local_s3(Path(scratch) / "s3") as s3:
                url = s3.storage_url("bench")
                s3.use_in_this_process()
                Storage(url).put(RESULT_KEY, data)
                env = {**base, **s3.env, "SMI_STORAGE_URL": url}
                reports.append(run_mode(mode, env, links_for, mine, args, size, digest))
        engine.dispose()
    for report in reports:
        print(json.dumps(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
