"""``smi-gateway`` and ``smi-stripe-emulator`` as an operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import inspect

from conftest import RABBITMQ_URL, drain, paid_job
from gateway.store.database import create_database_engine, migrate, session_factory
from servers import free_port, wait_for

BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_cli",
        "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_cli",
        **extra,
    }


def test_configuration_problems_are_listed_together():
    done = subprocess.run(
        [BIN / "smi-gateway", "migrate"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMI_")},
    )
    assert done.returncode == 2
    assert "SMI_STRIPE_TEST_SECRET_KEY is required" in done.stderr
    assert "SMI_STRIPE_TEST_WEBHOOK_SECRET is required" in done.stderr


def test_migrate_creates_the_schema(database_url):
    done = subprocess.run(
        [BIN / "smi-gateway", "migrate"],
        capture_output=True,
        text=True,
        env=env(SMI_DATABASE_URL=database_url),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    engine = create_database_engine(database_url)
    assert {"jobs", "outbox", "refunds"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_serve_and_the_emulator_start_and_answer(tmp_path):
    gateway_port, emulator_port = free_port(), free_port()
    processes = [
        subprocess.Popen(
            [
                BIN / "smi-stripe-emulator",
                "--port",
                str(emulator_port),
                "--webhook-url",
                f"http://127.0.0.1:{gateway_port}/webhooks/stripe",
                "--webhook-secret",
                "whsec_cli",
            ]
        ),
        subprocess.Popen(
            [BIN / "smi-gateway", "serve", "--port", str(gateway_port)],
            env=env(
                SMI_DATA_DIR=str(tmp_path), SMI_STRIPE_API_BASE=f"http://127.0.0.1:{emulator_port}"
            ),
        ),
    ]
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{gateway_port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, timeout=60)
        events = httpx.get(
            f"http://127.0.0.1:{emulator_port}/v1/events",
            headers={"Authorization": "Bearer sk_test_cli"},
        )
        assert events.json()["object"] == "list"
        assert (tmp_path / "gateway.sqlite3").exists()  # SQLite migrated on start
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


def test_the_standalone_background_publishes_and_stops_on_sigterm(database_url, rabbit):
    engine = create_database_engine(database_url)
    migrate(engine)
    job_id = paid_job(session_factory(engine), "standalone")
    engine.dispose()
    relay = subprocess.Popen(
        [BIN / "smi-gateway", "background"],
        env=env(SMI_DATABASE_URL=database_url, SMI_BROKER_URL=RABBITMQ_URL),
    )
    try:
        received = drain(rabbit, timeout=30)
    finally:
        relay.send_signal(signal.SIGTERM)
        code = relay.wait(timeout=30)
    assert [request.job_id for request in received] == [job_id]
    assert code == 0


def test_serve_with_several_workers_answers_and_stops_on_sigterm(tmp_path):
    port = free_port()
    gateway = subprocess.Popen(
        [BIN / "smi-gateway", "serve", "--port", str(port), "--workers", "2"],
        env=env(SMI_DATA_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, timeout=60)
        # New connections reach both processes (each has its own SO_REUSEPORT socket).
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"ok": True}
    finally:
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=60)
    assert gateway.returncode == 0, output
    assert output.count("Application startup complete") == 2
