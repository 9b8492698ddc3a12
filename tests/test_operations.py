"""What an operator relies on: metrics that count exactly what happened, readiness that names
what is down, alert rules and a dashboard that stand up to their tools.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from proxy import TcpProxy
from system import BIN, running_system
from test_recovery import Loop, hand_driven

from conftest import RABBITMQ_URL, postgres_database, purge_queues
from servers import free_port, wait_for
from shared.messages import EventKind
from upscaler.worker import metrics as worker_metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRICS_TOKEN = "metrics-token-operations-0123"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}  # what Prometheus sends


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url``'s /metrics: (name, sorted labels) -> value."""
    response = httpx.get(f"{url}/metrics", headers=SCRAPER, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def declared(text: str) -> set[str]:
    """Every series name an exposition declares, with or without samples yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {
        name
        for family in text_string_to_metric_families(text)
        for name in (family.name, *(family.name + s for s in suffixes.get(family.type, ())))
    }


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make ops-tools` installs Debian's prometheus package"
    return found


def test_the_alert_rules_are_valid_and_fire_on_what_they_should():
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(
            [promtool(), *command], cwd=DEPLOY / "prometheus", capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # Every alert has a runbook section in docs/OPERATIONS.md.
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    operations = (DEPLOY.parent / "docs" / "OPERATIONS.md").read_text()
    for alert in re.findall(r"- alert: (\w+)", rules):
        assert f"### {alert}" in operations, alert


@pytest.fixture
def loop(database_url, tmp_path) -> Iterator[Loop]:
    with hand_driven(database_url, tmp_path, SMI_METRICS_TOKEN=METRICS_TOKEN) as hand:
        yield hand


def test_a_purchase_and_a_refund_move_the_counters_by_exactly_those(loop):
    before = scrape(loop.stack.gateway)
    job_id = loop.buy()
    loop.event(job_id, EventKind.FAILED, error="CorruptImageError: broken")
    assert loop.refunder().refund_due() == 1
    wait_for(
        lambda: loop.admin("GET", "/admin/events", params={"type": "charge.refunded"}).json()[
            "events"
        ]
    )
    after = scrape(loop.stack.gateway)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("smi_payments_total", currency="usd") == 1
    assert moved("smi_paid_minor_units_total", currency="usd") == 50
    assert moved("smi_refunds", status="succeeded", origin="ours") == 1
    assert moved("smi_refunded_minor_units", currency="usd") == 50
    assert moved("smi_checkouts_total", outcome="created") == 1
    assert (
        moved("smi_webhook_events_total", type="checkout.session.completed", outcome="applied") == 1
    )
    assert moved("smi_jobs", status="refunded") == 1
    assert moved("smi_webhook_seconds_count") >= 3
    assert value(after, "smi_broker_up") == 1


def test_the_dashboard_asks_only_for_metrics_that_exist(loop):
    loop.buy()
    gateway = declared(httpx.get(f"{loop.stack.gateway}/metrics", headers=SCRAPER, timeout=30).text)
    worker = declared(generate_latest(REGISTRY).decode())
    exposed = gateway | worker | set(worker_metrics.GPU_METRICS)
    dashboard = json.loads((DEPLOY / "grafana" / "sell-my-images.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(smi_[a-z_]+)", target["expr"])
    }
    assert asked and asked <= exposed, sorted(asked - exposed)
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    in_rules = set(re.findall(r"\b(smi_[a-z_]+)", rules))
    assert in_rules <= exposed, sorted(in_rules - exposed)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readyz_names_the_broker_while_it_is_away_and_metrics_add_up_over_processes(tmp_path):
    """Real processes: a gateway of 2 processes reaches RabbitMQ through a proxy the test cuts."""
    purge_queues()
    try:
        with (
            TcpProxy("127.0.0.1", 5672) as proxy,
            postgres_database() as url,
            running_system(
                tmp_path, url, RABBITMQ_URL.replace(":5672/", f":{proxy.port}/")
            ) as system,
        ):
            port = free_port()
            gateway = f"http://127.0.0.1:{port}"
            system.spawn(
                "gateway-multi",
                BIN / "smi-gateway",
                "--port",
                str(port),
                "--workers",
                "2",
                SMI_PUBLIC_URL=gateway,
                SMI_METRICS_TOKEN=METRICS_TOKEN,
            )
            wait_for(lambda: _status(gateway, "/readyz") == 200, timeout=60)
            ready = httpx.get(f"{gateway}/readyz", timeout=30).json()
            assert ready == {
                "ready": True,
                "checks": {
                    "database": "ok",
                    "broker": "ok",
                    "storage": "ok",
                    "background": "ok",
                },
            }
            worker_port = free_port()
            system.start_worker(SMI_WORKER_METRICS_PORT=str(worker_port))
            worker = f"http://127.0.0.1:{worker_port}"
            wait_for(lambda: _status(worker, "/readyz") == 200, timeout=120)
            # Two purchases and one refund, webhooks to the first gateway; the 2-process
            # one counts exactly those, whichever of its processes answers.
            before = scrape(gateway)
            jobs = [system.buy() for _ in range(2)]
            for job_id in jobs:
                system.wait_for_status(job_id, "completed")
            refund = system.admin("POST", f"/admin/jobs/{jobs[0]}/refund", json={"reason": "x"})
            assert refund.status_code == 202
            system.wait_for_status(jobs[0], "refunded")

            def moved(name: str, **labels: str) -> float:
                return value(scrape(gateway), name, **labels) - value(before, name, **labels)

            wait_for(lambda: moved("smi_payments_total", currency="usd") == 2, timeout=60)
            for _ in range(4):
                assert moved("smi_payments_total", currency="usd") == 2
                assert moved("smi_paid_minor_units_total", currency="usd") == 100
                assert moved("smi_refunds", status="succeeded", origin="ours") == 1
                assert moved("smi_refunded_minor_units", currency="usd") == 50
                assert moved("smi_jobs", status="completed") == 1
                assert moved("smi_jobs", status="refunded") == 1
            done = scrape(worker)
            assert value(done, "smi_worker_jobs_total", outcome="completed") == 2
            assert value(done, "smi_worker_job_seconds_count") == 2
            assert value(done, "smi_worker_output_megapixels_total") == pytest.approx(
                2 * 96 * 128 / 1e6
            )
            assert value(done, "smi_worker_stage_seconds_count", stage="encode") == 2
            # Every log line of each job's life, in every process, carries its id as a field.
            for job_id in jobs:
                lines = [
                    line
                    for log in tmp_path.glob("*.log")
                    for line in log.read_text(errors="replace").splitlines()
                    if job_id in line
                ]
                parsed = [json.loads(line) for line in lines]  # every one is JSON
                assert all(entry.get("job_id") == job_id for entry in parsed), lines
                from_worker = [e for e in parsed if e["logger"].startswith("upscaler")]
                assert from_worker and all(e.get("worker") == "worker" for e in from_worker)
                loggers = {entry["logger"] for entry in parsed}
                assert {"uvicorn.access", "upscaler.worker.loop"} <= loggers, loggers
                assert any(e["logger"].startswith("gateway.money") for e in parsed), loggers
            # Checkouts counted by whichever process took them, added up by any process.
            for _ in range(6):
                assert (
                    httpx.post(
                        f"{gateway}/api/checkout",
                        json={"image_url": f"{system.images}/photo.png"},
                        timeout=30,
                    ).status_code
                    == 201
                )
            seen = {
                value(scrape(gateway), "smi_checkouts_total", outcome="created") for _ in range(8)
            }
            assert seen == {6.0}, seen

            proxy.cut()
            # The gateway still serves (checkouts, payments, refunds; the outbox waits):
            # it stays ready and says the broker is away, as its metric does.
            wait_for(lambda: value(scrape(gateway), "smi_broker_up") == 0, timeout=60)
            down = httpx.get(f"{gateway}/readyz", timeout=30)
            assert down.status_code == 200 and down.json()["ready"] is True
            assert down.json()["checks"] == {
                "database": "ok",
                "broker": "unavailable",
                "storage": "ok",
                "background": "ok",
            }
            wait_for(lambda: _status(worker, "/readyz") == 503, timeout=60)
            worker_down = httpx.get(f"{worker}/readyz", timeout=30).json()["checks"]
            assert worker_down["broker"] != "ok" and worker_down["model"] == "ok"
            proxy.restore()
            wait_for(lambda: value(scrape(gateway), "smi_broker_up") == 1, timeout=60)
            wait_for(lambda: _status(worker, "/readyz") == 200, timeout=60)
    finally:
        purge_queues()


def _status(url: str, path: str) -> int:
    try:
        return httpx.get(f"{url}{path}", timeout=10).status_code
    except httpx.HTTPError:
        time.sleep(0.2)
        return 0


def test_a_gateway_without_its_broker_or_storage_stays_ready_and_says_so(tmp_path):
    """Readiness is what the process can serve: with the database up, checkouts, payments and
    refunds go on (the outbox waits for the broker), so the load balancer must keep it;
    the body, the metrics and the alerts name what is away."""
    broker = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    settings = {"SMI_METRICS_TOKEN": METRICS_TOKEN, "SMI_BROKER_URL": broker}
    with hand_driven(f"sqlite:///{tmp_path / 'smi.db'}", tmp_path, **settings) as loop:
        shutil.rmtree(tmp_path / "storage")
        (tmp_path / "storage").write_text("not a folder")  # storage fails its check
        ready = httpx.get(f"{loop.stack.gateway}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "ready": True,
            "checks": {"database": "ok", "broker": "unavailable", "storage": "unavailable"},
        }
        samples = scrape(loop.stack.gateway)
        assert value(samples, "smi_broker_up") == 0 and value(samples, "smi_storage_up") == 0
        assert loop.admin("GET", "/admin/jobs").status_code == 200  # it still serves


@pytest.mark.slow
def test_two_gateways_on_postgresql_share_their_rate_limits(tmp_path):
    """Two gateway processes, one database: a client's bucket and everyone's hold for the
    pair (each process keeping its own would let twice as many through)."""
    settings = {
        "SMI_CHECKOUT_BURST": "3",
        "SMI_CHECKOUT_PER_CLIENT_PER_MINUTE": "0.1",
        "SMI_CHECKOUT_GLOBAL_PER_MINUTE": "24",  # everyone's bucket: 4 at once
        "SMI_TRUSTED_PROXIES": "127.0.0.1",
    }
    broker = f"filesystem://{tmp_path / 'broker'}"
    with (
        postgres_database() as url,
        running_system(tmp_path, url, broker, gateways=2, **settings) as system,
    ):
        first, second = system.gateways

        def junk(n: int) -> int:  # an invalid checkout: counted in its client's bucket only
            gateway = (first, second)[n % 2]
            return httpx.post(f"{gateway}/api/checkout", json={}, timeout=30).status_code

        answers = [junk(n) for n in range(12)]
        assert (answers.count(400), answers.count(429)) == (3, 9), answers

        def ask_links(n: int) -> int:  # valid, from as many clients: everyone's bucket
            gateway = (first, second)[n % 2]
            return httpx.post(
                f"{gateway}/api/links",
                json={"email": f"buyer{n}@example.com"},
                headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
                timeout=30,
            ).status_code

        answers = [ask_links(n) for n in range(12)]
        assert (answers.count(202), answers.count(429)) == (4, 8), answers


def test_while_the_database_is_away_answers_are_503_and_the_scrape_says_so(tmp_path):
    """PostgreSQL behind a proxy the test cuts: every door that needs the database answers
    503 database_unavailable with Retry-After (never a 500, never an address), /readyz
    takes the gateway out, and /metrics still answers with smi_database_up 0."""
    with (
        postgres_database() as url,
        TcpProxy("127.0.0.1", 5432) as proxy,
    ):
        proxied = url.replace(":5432/", f":{proxy.port}/")
        settings = {"SMI_METRICS_TOKEN": METRICS_TOKEN}
        with hand_driven(proxied, tmp_path, **settings) as loop:
            job_id = loop.buy()
            proxy.cut()
            answers = [
                httpx.get(f"{loop.stack.gateway}/api/jobs/{job_id}", timeout=30),
                loop.admin("GET", "/admin/jobs"),
                httpx.post(f"{loop.stack.gateway}/api/links", json={"email": "a@b.example"}),
            ]
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["type"] == "database_unavailable"
                assert int(answer.headers["retry-after"]) > 0
                assert str(proxy.port) not in answer.text
            assert httpx.get(f"{loop.stack.gateway}/readyz", timeout=30).status_code == 503
            assert value(scrape(loop.stack.gateway), "smi_database_up") == 0
            proxy.restore()
            wait_for(lambda: value(scrape(loop.stack.gateway), "smi_database_up") == 1)
            assert loop.stack.status(job_id)["status"] == "pending"
