"""The GPU run's driver and stages, rehearsed on this CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_run.py"


def gpu_run(out: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, SCRIPT, "--out", out, "--device", "cpu", "--tiny", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "gpu.json").read_text())


# Every stage must run: a budget no busy CPU runs out of (two suites at once took 308 s of
# 400 and skipped the last stage), and a test timeout beyond it.
@pytest.mark.timeout(1300)
def test_every_stage_reports_into_two_files(tmp_path):
    stages = "environment,parity,production,worker,oom"
    summary = gpu_run(tmp_path / "out", "--only", stages, "--budget", "1000")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu.json", "gpu.log"]
    results = summary["stages"]
    assert list(results) == stages.split(",")
    assert all(result["status"] == "ok" for result in results.values()), results
    assert results["environment"]["basicsr"] == "1.4.2"
    assert results["parity"]["pass"] and results["parity"]["photo_fp32"]["vs_cpu_fp32"]["max"] <= 1
    assert results["production"]["model_s_best"] > 0
    worker = results["worker"]["worker"]
    assert worker["serial"]["all_correct"] and worker["pipelined"]["all_correct"]
    assert results["oom"]["pass"]


def test_a_failing_stage_does_not_stop_the_others_and_time_is_budgeted(tmp_path):
    no_weights = tmp_path / "empty"
    no_weights.mkdir()
    summary = gpu_run(
        tmp_path / "out",
        "--only",
        "environment,parity,oom",
        env={"SMI_WEIGHTS_DIR": str(no_weights)},
    )
    results = summary["stages"]
    assert results["environment"]["status"] == "ok"
    for stage in ("parity", "oom"):
        assert results[stage]["status"] == "error"
        assert "WeightsError" in results[stage]["error"]
    out_of_time = gpu_run(tmp_path / "late", "--only", "environment,parity", "--budget", "3")
    assert out_of_time["stages"]["parity"]["status"] == "skipped"
