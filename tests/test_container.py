"""The gateway image, built from the wheel as `make image-gateway` builds it, serving.

It runs with the host's network against this machine's PostgreSQL (a database
of its own) and RabbitMQ (this run's virtual host): ``smi-gateway migrate``,
then ``serve``, and ``/readyz`` must answer 200. The worker image (CUDA, 7 GB)
is built by hand, not here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import RABBITMQ_URL, postgres_database
from servers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    found = shutil.which("podman")
    assert found, "podman is missing: `make container-tools` installs it"
    return subprocess.run(
        [found, *args],
        capture_output=True,
        text=True,
        check=check,
        env={"CONTAINERS_CONF": str(CONTAINERS_CONF), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def test_the_gateway_image_builds_from_the_wheel_and_is_ready_with_postgresql_and_rabbitmq(
    tmp_path,
):
    built = subprocess.run(
        ["bash", "scripts/images.sh", "gateway"], cwd=ROOT, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # No PyTorch, no GUI libraries: OpenCV is the headless build.
    probe = podman(
        "run", "--rm", "smi-gateway", "python", "-c",
        "import importlib.util as u, cv2, gateway.app;"
        "assert u.find_spec('torch') is None; print(cv2.__file__)",
    )  # fmt: skip
    assert "cv2" in probe.stdout
    full_opencv = podman("run", "--rm", "smi-gateway", "pip", "show", "opencv-python", check=False)
    assert full_opencv.returncode != 0
    # The host's pip mirrors served the build as a secret: no path of theirs in the history,
    # and the build stage's image is gone.
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", "smi-gateway")
    assert "file://" not in history.stdout and "PIP_EXTRA_INDEX_URL" not in history.stdout
    stage = podman("images", "-a", "-q", "--filter", "label=org.sell-my-images.stage=wheel")
    assert stage.stdout.strip() == ""
    port = free_port()
    # As the restricted pods run it (deploy/k8s): a read-only root, every capability
    # dropped, no privilege escalation, writable /tmp and SMI_DATA_DIR only.
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o1777)  # an emptyDir's mode
    with postgres_database() as database:
        name = f"smi-gateway-test-{port}"
        podman(
            "run", "-d", "--rm", "--name", name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp", "-v", f"{data}:/var/lib/smi",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-e", f"SMI_DATABASE_URL={database}",
            "-e", f"SMI_BROKER_URL={RABBITMQ_URL}",
            "-e", "SMI_STRIPE_TEST_SECRET_KEY=sk_test_image",
            "-e", "SMI_STRIPE_TEST_WEBHOOK_SECRET=whsec_image",
            "-e", "SMI_STRIPE_API_BASE=http://127.0.0.1:9",
            "-e", f"SMI_PUBLIC_URL=http://127.0.0.1:{port}",
            "-e", "SMI_METRICS_TOKEN=metrics-token-image-0123",
            "smi-gateway", "sh", "-c",
            f"smi-gateway migrate && exec smi-gateway serve --host 127.0.0.1 --port {port}",
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            try:
                wait_for(ready, timeout=120, interval=1)
            except AssertionError:
                raise AssertionError(podman("logs", name, check=False).stderr[-4000:]) from None
            assert httpx.get(f"{url}/readyz", timeout=10).json()["checks"] == {
                "database": "ok",
                "broker": "ok",
                "storage": "ok",
                "background": "ok",
            }
            scraper = {"Authorization": "Bearer metrics-token-image-0123"}
            assert "smi_jobs" in httpx.get(f"{url}/metrics", headers=scraper, timeout=10).text
        finally:
            podman("stop", "-t", "10", name, check=False)
