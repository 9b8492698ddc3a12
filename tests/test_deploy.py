"""The deployment files, checked offline: Kubernetes schemas, the KEDA scaler, compose, images.

Kubernetes' own kinds are validated against their published schemas
(kubernetes-validate, strict: an unknown field fails); KEDA's CRDs and the
compose file are checked for what this service relies on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.topology import UPSCALE_QUEUE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = "1.31.0"


def manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def of_kind(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [m for m in manifests() if m["kind"] == kind and name in (None, m["metadata"]["name"])]


@pytest.mark.parametrize(
    "manifest",
    [m for m in manifests() if not m["apiVersion"].startswith("keda.sh/")],
    ids=lambda m: f"{m['kind']}/{m['metadata']['name']}",
)
def test_kubernetes_objects_match_their_schemas(manifest):
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_gateways_have_probes_resources_and_a_disruption_budget():
    (gateway,) = of_kind("Deployment", "smi-gateway")
    pod = gateway["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert gateway["spec"]["replicas"] >= 2
    (budget,) = of_kind("PodDisruptionBudget", "smi-gateway")
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert budget["spec"]["minAvailable"] >= 1
    (service,) = of_kind("Service", "smi-gateway")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    for deployment in of_kind("Deployment"):
        template = deployment["spec"]["template"]
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert labels.items() <= template["metadata"]["labels"].items()
        for each in template["spec"]["containers"]:
            assert each["resources"]["limits"], deployment["metadata"]["name"]


def test_workers_scale_on_the_upscale_queue_and_drain_within_their_grace_period():
    (worker,) = of_kind("Deployment", "smi-worker")
    spec = worker["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["terminationGracePeriodSeconds"] >= 600  # SIGTERM: finish the jobs in hand
    (scaler,) = of_kind("ScaledObject", "smi-worker")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "smi-worker"
    assert scaler["spec"]["minReplicaCount"] >= 1  # someone always consumes
    (trigger,) = scaler["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == UPSCALE_QUEUE.name
    assert trigger["metadata"]["mode"] == "QueueLength" and int(trigger["metadata"]["value"]) > 0
    (auth,) = of_kind("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (secret,) = of_kind("Secret", auth["spec"]["secretTargetRef"][0]["name"])
    assert auth["spec"]["secretTargetRef"][0]["key"] in secret["stringData"]


def test_every_setting_the_pods_read_is_one_the_processes_know():
    known = set(re.findall(r"SMI_[A-Z0-9_]+", (ROOT / "README.md").read_text()))
    (config,) = of_kind("ConfigMap", "smi-config")
    (secret,) = of_kind("Secret", "smi-secrets")
    for name in [*config["data"], *secret["stringData"]]:
        assert not name.startswith("SMI_") or name in known, name


def test_compose_runs_two_gateways_background_a_gpu_worker_and_their_services():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq", "minio", "migrate", "gateway", "background", "worker"} <= set(
        services
    )
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["gateway"]["environment"]["SMI_BACKGROUND_IN_PROCESS"] == "false"
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert services["gateway"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("gateway", "background", "migrate"):
        assert services[name]["image"] == "smi-gateway"
    assert services["worker"]["image"] == "smi-worker"


def test_images_install_what_the_tests_ran():
    constraints = (ROOT / "constraints.txt").read_text()
    pins = dict(line.split("==", 1) for line in constraints.splitlines() if line and line[0] != "#")
    from importlib import metadata

    for name in ("starlette", "stripe", "sqlalchemy", "kombu", "torch", "prometheus-client"):
        assert pins[name] == metadata.version(name), name
    assert pins["opencv-python-headless"] == pins["opencv-python"]
    for dockerfile in ("Dockerfile.gateway", "Dockerfile.gpu"):
        text = (ROOT / dockerfile).read_text()
        assert "ARG BASE_IMAGE=" in text and "FROM ${BASE_IMAGE}" in text
        assert "-c constraints.txt" in text and "--no-deps wheels/*.whl" in text
    assert "opencv-python-headless" in (ROOT / "Dockerfile.gateway").read_text()


def test_prometheus_scrapes_each_process_and_the_gateways_with_the_metrics_token(tmp_path):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The gateway's /metrics holds revenue, refunds and disputes: only with the token.
    token = jobs["smi-gateway"]["authorization"]
    assert token["type"] == "Bearer"
    assert token["credentials_file"].endswith("/smi-secrets/SMI_METRICS_TOKEN")
    (secret,) = of_kind("Secret", "smi-secrets")
    assert "SMI_METRICS_TOKEN" in secret["stringData"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert "SMI_METRICS_TOKEN" in compose["services"]["gateway"]["environment"]
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert 'up{job="smi-gateway"}' in alerts and "alerts.yml" in config["rule_files"]
    # Each job keeps its own pods' port; no pod asks an annotation scrape (which sends
    # no token) to scrape it as well.
    for name, port in (("smi-gateway", "http"), ("smi-worker", "metrics")):
        keep = {
            rule["source_labels"][0]: rule["regex"]
            for rule in jobs[name]["relabel_configs"]
            if rule.get("action") == "keep"
        }
        (deployment,) = of_kind("Deployment", name)
        pod = deployment["spec"]["template"]
        assert keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == name
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == name
        assert keep["__meta_kubernetes_pod_container_port_name"] == port
        assert port in {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
        assert not any(
            a.startswith("prometheus.io/") for a in pod["metadata"].get("annotations", {})
        )
    # promtool (Debian builds it without Kubernetes discovery) checks the rest of it on
    # a copy whose targets are static.
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make ops-tools` installs Debian's prometheus package"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
        del job["kubernetes_sd_configs"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", "--syntax-only", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
