"""The deployment files, checked offline: Kubernetes schemas and rules, KEDA, compose, images.

Kubernetes' own kinds are validated against their published schemas
(kubernetes-validate, strict: an unknown field fails), every pod against the
rules of the "restricted" Pod Security Standard (encoded below), and the
compose file against the Compose Specification's JSON schema (vendored in
tests/data/, see compose-spec.NOTICE). KEDA's objects are checked for what
this service relies on.
"""

from __future__ import annotations

import copy
import http.server
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.config import GatewayConfig
from servers import free_port
from shared.topology import UPSCALE_QUEUE
from upscaler.worker.config import WorkerConfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES = "1.31.0"
# What the worker must never see: the shop's money, its tokens, its database.
SHOP_SECRETS = {
    "SMI_STRIPE_LIVE_SECRET_KEY",
    "SMI_STRIPE_TEST_SECRET_KEY",
    "SMI_STRIPE_LIVE_WEBHOOK_SECRET",
    "SMI_STRIPE_TEST_WEBHOOK_SECRET",
    "SMI_ADMIN_TOKEN",
    "SMI_METRICS_TOKEN",
    "SMI_DOWNLOAD_SECRET",
    "SMI_DATABASE_URL",
    "SMI_SMTP_URL",
    "SMI_SELLER_WEBHOOK_SECRET",
}
# Secrets a shop may go without: the pods take them when their Secret has them
# (secretKeyRef optional), and the example Secret names them commented out.
OPTIONAL_SECRETS = {"SMI_DOWNLOAD_SECRET_PREVIOUS", "SMI_SELLER_WEBHOOK_SECRET"}


def load(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def applied() -> list[dict[str, Any]]:
    """What `kubectl apply -f deploy/k8s/` applies: the folder's own files, not its subfolders."""
    return [m for path in sorted(K8S.glob("*.yaml")) for m in load(path)]


def manifests() -> list[dict[str, Any]]:
    """Every manifest: applied, the migration Job and the examples."""
    return [m for path in sorted(K8S.rglob("*.yaml")) for m in load(path)]


def of_kind(
    kind: str, name: str | None = None, among: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    return [
        m
        for m in (manifests() if among is None else among)
        if m["kind"] == kind and name in (None, m["metadata"]["name"])
    ]


def workloads() -> list[dict[str, Any]]:
    return [m for m in manifests() if m["kind"] in ("Deployment", "Job", "StatefulSet")]


def example_secrets() -> dict[str, dict[str, str]]:
    return {
        m["metadata"]["name"]: m["stringData"]
        for m in load(K8S / "examples" / "secrets.example.yaml")
        if m["kind"] == "Secret"
    }


def secret_env(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each variable a container takes from a Secret: name -> (Secret, key)."""
    found: dict[str, tuple[str, str]] = {}
    secrets = example_secrets()
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            for key in secrets[name]:
                found[source.get("prefix", "") + key] = (name, key)
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            found[entry["name"]] = (ref["name"], ref["key"])
    return found


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variable a container takes from a Secret by key: name -> its secretKeyRef."""
    return {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


def container_of(name: str) -> dict[str, Any]:
    (workload,) = [w for w in workloads() if w["metadata"]["name"] == name]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


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
            assert "livenessProbe" in each, deployment["metadata"]["name"]


def test_the_background_pods_liveness_reads_the_file_its_process_touches(tmp_path):
    """The exec probe, run as written, passes on a fresh file and fails on an old or
    missing one (the process touches it every 10 s: tests/test_background.py)."""
    probe = container_of("smi-background")["livenessProbe"]["exec"]["command"]
    assert probe[-1] == "/var/lib/smi/background.alive"  # SMI_DATA_DIR of the image
    alive = tmp_path / "background.alive"
    python = shutil.which("python", path=str(Path(sys.executable).parent))

    def run() -> int:
        return subprocess.run([python, *probe[1:-1], str(alive)], capture_output=True).returncode

    assert run() != 0  # missing
    alive.touch()
    assert run() == 0
    old = alive.stat().st_mtime - 120
    os.utime(alive, (old, old))
    assert run() != 0


def test_workers_scale_on_ready_plus_unacknowledged_jobs_and_drain_within_their_grace_period():
    from upscaler.worker.loop import PIPELINE_PREFETCH

    (worker,) = of_kind("Deployment", "smi-worker")
    spec = worker["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"  # the warm-up
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert float(env["SMI_WORKER_STALL_S"]) > 0
    assert spec["terminationGracePeriodSeconds"] >= 600  # SIGTERM: finish the jobs in hand
    # The autoscaler owns the size: a `replicas` here would reset it on every apply.
    assert "replicas" not in worker["spec"]
    (scaler,) = of_kind("ScaledObject", "smi-worker")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "smi-worker"
    assert scaler["spec"]["minReplicaCount"] >= 1  # someone always consumes
    assert scaler["spec"]["pollingInterval"] > 0
    # Scaling down between 1 and N is the HPA's: cooldownPeriod only times 1 -> 0.
    behavior = scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    (trigger,) = scaler["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    metadata = trigger["metadata"]
    assert metadata["queueName"] == UPSCALE_QUEUE.name
    # Ready plus unacknowledged is only counted through the management API (http); in
    # AMQP mode KEDA sees the ready ones alone, 0 while every worker holds four.
    assert metadata["protocol"] == "http"
    assert metadata.get("excludeUnacknowledged", "false") == "false"
    assert metadata["mode"] == "QueueLength"
    assert int(metadata["value"]) == PIPELINE_PREFETCH  # what one worker holds
    (auth,) = of_kind("TriggerAuthentication", trigger["authenticationRef"]["name"])
    ((target),) = auth["spec"]["secretTargetRef"]
    assert target["parameter"] == "host"
    host = example_secrets()[target["name"]][target["key"]]
    assert urlsplit(host).scheme == "http" and urlsplit(host).port == 15672


def test_every_setting_the_pods_read_is_one_the_processes_know():
    known = set(re.findall(r"SMI_[A-Z0-9_]+", (ROOT / "README.md").read_text()))
    (config,) = of_kind("ConfigMap", "smi-config")
    names = [*config["data"]]
    names += [key for data in example_secrets().values() for key in data]
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            names += [entry["name"] for entry in container.get("env", [])]
    for name in names:
        assert not name.startswith("SMI_") or name in known, name
    assert not set(config["data"]) & SHOP_SECRETS  # a ConfigMap is no place for them


def test_no_applied_file_holds_a_secret_and_the_example_is_outside_them():
    """`kubectl apply -f deploy/k8s/` must not overwrite the real Secrets with placeholders."""
    assert of_kind("Secret", among=applied()) == []
    assert set(example_secrets()) == {
        "smi-gateway",
        "smi-metrics",
        "smi-worker",
        "smi-keda-rabbitmq",
    }
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    assert "deploy/k8s/examples/secrets.example.yaml" in operations


def test_each_process_gets_only_the_secrets_it_needs():
    secrets = example_secrets()
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for name, (secret, key) in secret_env(container).items():
                assert key in secrets[secret] or key in OPTIONAL_SECRETS, (
                    workload["metadata"]["name"],
                    name,
                )
    worker = secret_env(container_of("smi-worker"))
    assert set(worker) == {"SMI_BROKER_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert {secret for secret, _ in worker.values()} == {"smi-worker"}
    assert not set(secrets["smi-worker"]) & SHOP_SECRETS
    background = secret_env(container_of("smi-background"))
    assert "SMI_ADMIN_TOKEN" not in background and "SMI_METRICS_TOKEN" not in background
    assert {"SMI_DATABASE_URL", "SMI_BROKER_URL", "SMI_STRIPE_LIVE_SECRET_KEY"} <= set(background)
    gateway = secret_env(container_of("smi-gateway"))
    assert {"SMI_ADMIN_TOKEN", "SMI_METRICS_TOKEN", "SMI_STRIPE_LIVE_WEBHOOK_SECRET"} <= set(
        gateway
    )
    assert "SMI_ADMIN_TOKEN" not in secret_env(container_of("smi-migrate"))
    # Prometheus mounts a Secret that holds its token and nothing else.
    assert set(secrets["smi-metrics"]) == {"SMI_METRICS_TOKEN"}
    for workload in workloads():  # and nobody takes a whole Secret with envFrom
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert not any("secretRef" in s for s in container.get("envFrom", []))


def test_optional_secrets_are_optional_and_every_other_one_is_required():
    """A key missing from its Secret keeps the pod from starting (CreateContainerConfigError):
    right for a required one, wrong for one a shop may leave out."""
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for name, ref in secret_refs(container).items():
                optional = ref.get("optional", False)
                assert optional == (name in OPTIONAL_SECRETS), (workload["metadata"]["name"], name)
    example = (K8S / "examples" / "secrets.example.yaml").read_text()
    for key in OPTIONAL_SECRETS:
        assert f"  # {key}: " in example, key  # named, for whoever sets it
        assert key not in example_secrets()["smi-gateway"], key
    # A rotated download secret reaches whoever signs or checks links: the gateways, and
    # the background process, which signs the links of the emails it sends.
    for name in ("smi-gateway", "smi-background"):
        ref = secret_refs(container_of(name))["SMI_DOWNLOAD_SECRET_PREVIOUS"]
        assert (ref["name"], ref["key"]) == ("smi-gateway", "SMI_DOWNLOAD_SECRET_PREVIOUS")
    # SMI_SELLER_WEBHOOK_URL in the ConfigMap wants its secret in every pod that checks the
    # shop's configuration whole.
    for name in ("smi-gateway", "smi-background", "smi-migrate"):
        assert "SMI_SELLER_WEBHOOK_SECRET" in secret_refs(container_of(name)), name


def test_the_shipped_settings_tell_the_seller_and_give_the_worker_the_gateways_pixel_limit():
    (config,) = of_kind("ConfigMap", "smi-config")
    assert "@" in config["data"]["SMI_SELLER_EMAIL"]  # a placeholder the operator replaces
    assert "SMI_SELLER_EMAIL" in dotenv(DEPLOY / "env.example")
    # The ConfigMap reaches the gateways and the workers: one pixel limit for both.
    for name in ("smi-gateway", "smi-worker"):
        sources = container_of(name)["envFrom"]
        assert {"configMapRef": {"name": "smi-config"}} in sources, name
    pixels = config["data"]["SMI_MAX_SOURCE_PIXELS"]
    assert WorkerConfig.from_env({"SMI_MAX_SOURCE_PIXELS": pixels}).max_pixels == int(pixels)


def test_each_release_applies_the_config_map_then_a_fresh_migration_job():
    """The Job reads smi-config: applied before it, or a first install's pod never starts and
    a later one migrates with the last release's settings. A Job left from before would
    refuse the apply, or satisfy the wait at once: it is deleted first."""
    (job,) = load(K8S / "migrate" / "job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (config,) = load(K8S / "config.yaml")
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    steps = [
        "set -e",
        "kubectl apply -f deploy/k8s/config.yaml",
        "kubectl delete job smi-migrate --ignore-not-found",
        "kubectl apply -f deploy/k8s/migrate/job.yaml",
        "kubectl wait --for=condition=complete",
        "kubectl apply -f deploy/k8s/",
    ]
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", operations, re.S) if "job.yaml" in b]
    lines = [line.strip() for line in block.splitlines()]

    def at(step: str) -> int:
        return next(
            i for i, line in enumerate(lines) if line == step or line.startswith(step + " ")
        )

    assert [at(step) for step in steps] == sorted(at(step) for step in steps)
    commented = (K8S / "migrate" / "job.yaml").read_text()
    for step in steps:
        assert f"#   {step}" in commented, step


def test_the_migration_job_is_applied_first_on_its_own_and_again_each_release():
    assert of_kind("Job", among=applied()) == []  # a directory apply never migrates
    path = K8S / "migrate" / "job.yaml"
    (job,) = load(path)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "smi-migrate"
    # Its pod template cannot change once the Job exists: the finished one goes away.
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 24 * 3600
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["smi-gateway", "migrate"]
    named = "deploy/k8s/migrate/job.yaml"
    assert named in path.read_text() and named in (K8S / "gateway.yaml").read_text()
    assert named in (ROOT / "docs" / "OPERATIONS.md").read_text()
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["image"]
        == (container_of("smi-gateway")["image"])
    )


# The "restricted" Pod Security Standard (Kubernetes 1.31), every control of it and of
# the baseline it includes: https://kubernetes.io/docs/concepts/security/pod-security-standards/
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """What in a pod template the "restricted" profile refuses (empty: admitted)."""
    spec, found = template["spec"], []
    pod = spec.get("securityContext", {})
    annotations = template.get("metadata", {}).get("annotations", {})
    containers = [
        *spec.get("containers", []),
        *spec.get("initContainers", []),
        *spec.get("ephemeralContainers", []),
    ]
    contexts = [("pod", pod)] + [(c["name"], c.get("securityContext", {})) for c in containers]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"{field} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']} is {kinds - RESTRICTED_VOLUMES}")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"AppArmor {value}")
    for where, context in contexts:
        if context.get("windowsOptions", {}).get("hostProcess"):
            found.append(f"{where}: hostProcess")
        if context.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            found.append(f"{where}: AppArmor {context['appArmorProfile']['type']}")
        selinux = context.get("seLinuxOptions", {})
        if (
            selinux.get("type", "") not in SELINUX_TYPES
            or selinux.get("user")
            or selinux.get("role")
        ):
            found.append(f"{where}: SELinux options {selinux}")
        if context.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        if context.get("runAsNonRoot") is False:
            found.append(f"{where}: runAsNonRoot false")
        if context.get("seccompProfile", {}).get("type") == "Unconfined":
            found.append(f"{where}: seccomp Unconfined")
    if pod.get("runAsNonRoot") is not True:
        for where, context in contexts[1:]:
            if context.get("runAsNonRoot") is not True:
                found.append(f"{where}: runAsNonRoot is not true (nor the pod's)")
    if pod.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        for where, context in contexts[1:]:
            if context.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
                found.append(f"{where}: no RuntimeDefault or Localhost seccomp profile")
    for container in containers:
        name, context = container["name"], container.get("securityContext", {})
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {context['procMount']}")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
    return found


@pytest.mark.parametrize(
    "workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}"
)
def test_every_pod_passes_the_restricted_pod_security_standard(workload):
    template = workload["spec"]["template"]
    assert restricted_violations(template) == []
    # Beyond the standard: a read-only root, with an emptyDir wherever the process writes.
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    for container in template["spec"]["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        for writable in ("/tmp", "/var/lib/smi"):  # tempfiles; SMI_DATA_DIR in the images
            assert "emptyDir" in mounts[writable], (container["name"], writable)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["securityContext"].pop("runAsNonRoot"),
        lambda s: s["securityContext"].update(runAsUser=0),
        lambda s: s["securityContext"].pop("seccompProfile"),
        lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        lambda s: s["containers"][0]["securityContext"].update(privileged=True),
        lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=False),
        lambda s: s["containers"][0]["ports"].append({"containerPort": 1, "hostPort": 80}),
        lambda s: s.update(hostNetwork=True),
        lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    ],
)
def test_the_restricted_rules_refuse_what_the_standard_refuses(change):
    """The checker above, on the gateway's compliant pod with one thing undone."""
    (gateway,) = of_kind("Deployment", "smi-gateway")
    template = copy.deepcopy(gateway["spec"]["template"])
    assert restricted_violations(template) == []
    change(template["spec"])
    assert restricted_violations(template) != []


def test_every_image_is_pinned_to_a_release():
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            name, _, tag = container["image"].rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, container["image"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "latest" not in tag, (name, image)


def test_the_example_ingress_serves_the_public_url_over_tls():
    (ingress,) = load(K8S / "examples" / "ingress.yaml")
    (config,) = of_kind("ConfigMap", "smi-config")
    public = urlsplit(config["data"]["SMI_PUBLIC_URL"])
    assert public.scheme == "https"
    (tls,) = ingress["spec"]["tls"]
    assert public.hostname in tls["hosts"] and tls["secretName"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == public.hostname
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    (service,) = of_kind("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # The controller's pods are believed for X-Forwarded-For (SMI_TRUSTED_PROXIES).
    ipaddress.ip_network(config["data"]["SMI_TRUSTED_PROXIES"])


# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}: compose's interpolation.
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        found = env.get(name)
        if operator in (":-", "-") and (found is None or (operator == ":-" and not found)):
            return argument
        if operator in (":?", "?") and (found is None or (operator == ":?" and not found)):
            raise KeyError(f"{name}: {argument}")
        return found or ""

    return _VARIABLE.sub(value, text)


def dotenv(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def compose_with(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), env))


def container_env(service: dict[str, Any], dotenv_values: dict[str, str]) -> dict[str, str]:
    """A service's environment as compose makes it: env_file, then environment over it."""
    env: dict[str, str] = {}
    files = service.get("env_file", [])
    for file in [files] if isinstance(files, str) else files:
        assert (file if isinstance(file, str) else file["path"]) == ".env"
        env.update(dotenv_values)
    env.update({key: str(value) for key, value in service.get("environment", {}).items()})
    return env


def test_compose_follows_the_compose_specification_s_schema():
    schema = yaml.safe_load((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema itself is the strict one: an unknown service key is refused.
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["healtcheck"] = {}
    assert not validator.is_valid(broken)


def test_compose_runs_two_gateways_background_a_gpu_worker_and_their_services():
    compose = compose_with(dotenv(DEPLOY / "env.example"))
    services = compose["services"]
    assert {"postgres", "rabbitmq", "minio", "migrate", "gateway", "background", "worker"} <= set(
        services
    )
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["gateway"]["environment"]["SMI_BACKGROUND_IN_PROCESS"] == "false"
    # The GPU, reserved the Compose Specification's way.
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1
    assert services["gateway"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    release = dotenv(DEPLOY / "env.example")["SMI_RELEASE"]
    for name in ("gateway", "background", "migrate"):
        assert services[name]["image"] == f"smi-gateway:{release}"
    assert services["worker"]["image"] == f"smi-worker:{release}"
    with pytest.raises(KeyError, match="SMI_RELEASE"):  # no tag, no start
        compose_with({})


def test_compose_services_restart_and_each_has_a_health_check_that_fits_it():
    services = compose_with(dotenv(DEPLOY / "env.example"))["services"]
    one_shots = {"buckets", "migrate"}
    for name, service in services.items():
        check = service["healthcheck"]
        if name in one_shots:
            assert service["restart"] in ("no", "on-failure") and check == {"disable": True}
            continue
        assert service["restart"] in ("always", "unless-stopped"), name
        assert check["test"][0] == "CMD" and check.get("disable") is not True, name
    # The background process serves no HTTP: not the image's check on port 8000.
    background = " ".join(services["background"]["healthcheck"]["test"])
    assert "background.alive" in background and "8000" not in background
    assert "/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["gateway"]["healthcheck"]["test"])
    # The bucket is made once the store answers, and the shop starts after it.
    assert services["buckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["buckets"]["image"] == services["minio"]["image"]
    for name in ("gateway", "background", "worker"):
        assert services[name]["depends_on"]["buckets"]["condition"] == (
            "service_completed_successfully"
        )


def test_compose_hands_the_shop_s_settings_from_the_env_file_and_none_to_the_worker():
    example = dotenv(DEPLOY / "env.example")
    for name in (
        "SMI_STOREFRONT_ORIGINS",
        "SMI_SOURCE_HOSTS",
        "SMI_PUBLIC_URL",
        "SMI_METRICS_TOKEN",
        "SMI_ADMIN_TOKEN",
        "SMI_DOWNLOAD_SECRET",
        "SMI_STRIPE_TEST_SECRET_KEY",
        "SMI_SMTP_URL",  # customers get their emails, test mode or live
    ):
        assert name in example, name
    text = (DEPLOY / "env.example").read_text()
    for name in ("SMI_TRUSTED_PROXIES", "SMI_STRIPE_LIVE_SECRET_KEY"):
        assert f"# {name}=" in text, name  # named, for whoever needs it
    # What a shop writes there reaches its processes as written: a gateway, its background
    # and its migration start on the example's settings, and on a live shop's.
    services = compose_with(example)["services"]
    shop = {**example, "SMI_TRUSTED_PROXIES": "172.16.0.0/12"}
    for name in ("gateway", "background", "migrate"):
        env = container_env(services[name], shop)
        config = GatewayConfig.from_env(env)
        assert config.storefront_origins == ("https://shop.example.com",), name
        assert env["SMI_TRUSTED_PROXIES"] == "172.16.0.0/12" and config.metrics_token
        assert config.mail.smtp_url, name  # emails go to a mail server, not a lost folder
        # The compose store is reachable inside its network only: downloads are streamed.
        assert config.download_redirect == "stream", name
    # The worker: the broker and the store, no secret of the shop's, and a valid config.
    worker = container_env(services["worker"], shop)
    assert not set(worker) & SHOP_SECRETS
    assert WorkerConfig.from_env(worker).metrics_port == 9100
    # The seller hears of sales: the example sets where.
    assert GatewayConfig.from_env(container_env(services["gateway"], shop)).seller.email
    # The worker refuses what the gateways refuse: the pixel limit of .env, or the default.
    for env in (shop, {**shop, "SMI_MAX_SOURCE_PIXELS": "1000000"}):
        limits = {
            GatewayConfig.from_env(container_env(services["gateway"], env)).max_source_pixels,
            WorkerConfig.from_env(
                container_env(compose_with(env)["services"]["worker"], env)
            ).max_pixels,
        }
        assert len(limits) == 1, (env.get("SMI_MAX_SOURCE_PIXELS"), limits)


def test_settings_compose_sets_itself_are_named_where_an_env_file_would_be_ignored():
    """A service's `environment:` wins over its `env_file:`: those settings written in .env
    change nothing, so the example and the docs name them, and the example sets none."""
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    example = (DEPLOY / "env.example").read_text()
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    fixed = {
        name
        for service in services.values()
        if service.get("env_file")
        for name in service.get("environment", {})
        if name.startswith("SMI_")
    }
    assert fixed
    for name in fixed:
        assert name in example and f"`{name}`" in operations, name
        assert name not in dotenv(DEPLOY / "env.example"), name


def test_the_gateway_image_s_health_check_asks_the_port_it_serves_on():
    """The HEALTHCHECK line, run as the image runs it, follows SMI_GATEWAY_PORT."""
    dockerfile = (ROOT / "Dockerfile.gateway").read_text()
    (command,) = re.findall(r"^HEALTHCHECK CMD (.+)$", dockerfile, re.M)
    assert re.search(r"^ENV .*SMI_GATEWAY_PORT=8000", dockerfile, re.M)
    assert "--port" not in re.findall(r"^CMD (.+)$", dockerfile, re.M)[0]  # serve reads it

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bin_dir = str(Path(sys.executable).parent)
    try:

        def check(port: int) -> int:
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SMI_GATEWAY_PORT": str(port)}
            return subprocess.run(["sh", "-c", command], env=env, capture_output=True).returncode

        assert check(server.server_address[1]) == 0
        assert check(free_port()) != 0
    finally:
        server.shutdown()


def test_image_builds_leave_no_mirror_path_in_history_and_no_stage_image():
    script = (ROOT / "scripts" / "images.sh").read_text()
    assert "--build-arg PIP_EXTRA_INDEX_URL" not in script.replace('"', "")
    assert "--secret" in script and "image prune" in script
    for dockerfile in ("Dockerfile.gateway", "Dockerfile.gpu"):
        text = (ROOT / dockerfile).read_text()
        assert "ARG PIP_EXTRA_INDEX_URL" not in text, dockerfile
        wheel_stage = text.split("FROM ${BASE_IMAGE} AS wheel", 1)[1].split("\nFROM ", 1)[0]
        label = re.search(r"^LABEL (\S+=wheel)$", wheel_stage, re.M)
        assert label and f"STAGE_LABEL={label.group(1)}" in script, dockerfile
        for run in re.findall(r"^RUN .*pip install[^\n]*(?:\n\s.*)*", text, re.M):
            if "pip install" in run and "-c constraints.txt" in run:
                assert "--mount=type=secret,id=pipconf" in run, dockerfile


def test_podman_s_configuration_is_named_where_images_are_described():
    for doc in ("README.md", "docs/OPERATIONS.md"):
        assert "CONTAINERS_CONF=deploy/podman/containers.conf" in (ROOT / doc).read_text(), doc


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
    assert token["credentials_file"].endswith("/smi-metrics/SMI_METRICS_TOKEN")
    assert "SMI_METRICS_TOKEN" in example_secrets()["smi-metrics"]
    assert secret_env(container_of("smi-gateway"))["SMI_METRICS_TOKEN"] == (
        "smi-metrics",
        "SMI_METRICS_TOKEN",
    )
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert 'absent(up{job="smi-gateway"})' in alerts and "alerts.yml" in config["rule_files"]
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


def test_prometheus_sends_its_alerts_to_an_alertmanager():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (manager,) = config["alerting"]["alertmanagers"]
    targets = [target for static in manager["static_configs"] for target in static["targets"]]
    assert targets  # a placeholder: the operator's Alertmanager
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    assert "alerting.alertmanagers" in operations and "`severity`" in operations


def scrape_time_series() -> set[str]:
    """What a gateway reads from the database or the broker when scraped: every gateway
    pod reports the same whole figure."""
    import inspect

    from gateway import metrics

    names = set()
    for collector in (metrics.RecordsCollector, metrics.QueuesCollector):
        source = inspect.getsource(collector)
        for kind, name in re.findall(r'(Counter|Gauge)MetricFamily\(\s*"(smi_\w+)"', source):
            names.add(f"{name}_total" if kind == "Counter" else name)
    return names


def test_series_every_gateway_reports_whole_are_never_summed_over_pods():
    """Two gateways would show twice the revenue, jobs and backlog: max (or min), never sum."""
    import json

    names = scrape_time_series()
    assert {"smi_paid_minor_units_total", "smi_jobs", "smi_backlog", "smi_queue_messages"} <= names

    def reads(expr: str) -> bool:
        return any(re.search(rf"\b{name}\b", expr) for name in names)

    dashboard = json.loads((DEPLOY / "grafana" / "sell-my-images.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    read = [expr for expr in exprs if reads(expr)]
    assert len(read) >= 10
    for expr in read:
        assert expr.startswith(("max", "min")) and not re.search(r"\bsum\b", expr), expr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        if reads(rule["expr"]):
            assert not re.search(r"\bsum\b", rule["expr"]), rule["alert"]
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    assert "never `sum`" in operations


def test_the_deployment_files_cite_sections_of_the_operations_guide_that_exist():
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    files = [
        *(path for path in DEPLOY.rglob("*") if path.is_file() and path.suffix != ".json"),
        *(ROOT / "scripts").glob("*.sh"),
        *ROOT.glob("Dockerfile*"),
    ]
    cited = 0
    for path in files:
        text = re.sub(r"\n\s*#\s*", " ", path.read_text())  # comments wrapped over lines
        for section in re.findall(r'OPERATIONS\.md, "([^"]+)"', text):
            cited += 1
            assert re.search(
                rf"^#+ {re.escape(section)}$|\*\*{re.escape(section)}\*\*", operations, re.M
            ), (path.name, section)
    assert cited
