"""The commands as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST_MODEL, SAMPLES
from shared.images import decode_image
from upscaler.output.images import encode_image
from upscaler.pipeline.precision import bf16_kernels_available

BIN = Path(sys.executable).parent


def run(command: str, *args: object, env: dict[str, str] | None = None):
    return subprocess.run(
        [str(BIN / command), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def small_photo(tmp_path) -> Path:
    pixels = decode_image((SAMPLES / "coffee.png").read_bytes()).pixels[150:182, 250:290]
    path = tmp_path / "cup.jpg"
    path.write_bytes(encode_image(np.ascontiguousarray(pixels), "jpeg"))
    return path


def test_upscale_writes_a_4x_image(registry, small_photo, tmp_path):
    output = tmp_path / "cup-4x.png"
    done = run(
        "smi-upscale",
        small_photo,
        output,
        "--model",
        FAST_MODEL,
        "--tile",
        "16",
        "--overlap",
        "4",
        "--batch",
        "2",
    )
    assert done.returncode == 0, done.stderr
    result = decode_image(output.read_bytes())
    assert (result.width, result.height, result.mode) == (160, 128, "RGB")
    assert "tile" in done.stderr  # the progress bar
    assert "160x128 RGB 8-bit" in done.stderr
    # The precision and what chose it (this network has no bf16 path that keeps fidelity).
    assert "fp32 on cpu (auto: fp32 (this network has no bf16 CPU path" in done.stderr


def test_upscale_with_the_default_model_and_quiet(registry, small_photo, tmp_path):
    output = tmp_path / "cup-4x.webp"
    done = run("smi-upscale", small_photo, output, "--tile", "0", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert decode_image(output.read_bytes()).format == "webp"


def test_upscale_of_a_broken_file_fails_clearly_and_writes_nothing(registry, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes((SAMPLES / "grass.png").read_bytes()[:5000])
    output = tmp_path / "never.png"
    done = run("smi-upscale", broken, output, "--model", FAST_MODEL)
    assert done.returncode == 1
    assert done.stderr.startswith("smi-upscale: error: damaged or truncated")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [broken]


def test_upscale_refuses_alpha_into_jpeg_before_working(registry, tmp_path):
    rgba = tmp_path / "logo.png"
    rgba.write_bytes(encode_image(np.zeros((8, 8, 4), dtype=np.uint8), "png"))
    done = run("smi-upscale", rgba, tmp_path / "logo.jpg", "--model", FAST_MODEL)
    assert done.returncode == 1 and "JPEG cannot hold an alpha channel" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: nothing to refuse")
def test_upscale_on_cuda_without_a_gpu_is_one_clear_line(small_photo, tmp_path):
    done = run("smi-upscale", small_photo, tmp_path / "x.png", "--device", "cuda")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "smi-upscale: error: no CUDA GPU is visible to PyTorch, so cuda is refused"
    ]


def test_upscale_refuses_an_output_folder_that_does_not_exist_before_working(small_photo, tmp_path):
    output = tmp_path / "missing" / "cup-4x.png"
    done = run("smi-upscale", small_photo, output, "--model", FAST_MODEL)
    assert done.returncode == 1
    assert f"{output.parent} does not exist" in done.stderr
    assert not output.parent.exists()


def test_upscale_of_an_unknown_model_lists_the_known_ones(small_photo, tmp_path):
    done = run("smi-upscale", small_photo, tmp_path / "x.png", "--model", "nope")
    assert done.returncode == 1 and "RealESRGAN_x4plus" in done.stderr


def test_models_list_shows_weights_status(registry):
    done = run("smi-models", "list")
    assert done.returncode == 0
    line = next(row for row in done.stdout.splitlines() if row.startswith("RealESRGAN_x4plus "))
    assert "(default)" in line and "RRDBNet" in line
    assert "official" in line or "converted from ncnn" in line


def test_models_fetch_offline_fails_clearly(tmp_path):
    (tmp_path / "manifest.toml").write_text(
        'default = "m"\n[models.m]\narch = "SRVGGNetCompact"\nscale = 4\n'
        'url = "http://127.0.0.1:9/m.pth"\nsha256 = "' + "0" * 64 + '"\n'
    )
    done = run("smi-models", "fetch", "m", "--timeout", "5", env={"SMI_MODELS_DIR": str(tmp_path)})
    assert done.returncode == 1 and "cannot download m" in done.stderr
    weights = tmp_path / "weights"
    assert not weights.exists() or not any(weights.iterdir())


def test_models_import_ncnn_converts_into_the_weights_folder(tmp_path):
    done = run("smi-models", "import-ncnn", FAST_MODEL, env={"SMI_WEIGHTS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"{FAST_MODEL}.ncnn.pth").stat().st_size > 1_000_000


def test_bench_prints_stages_and_writes_json(registry, tmp_path):
    report_path = tmp_path / "bench.json"
    done = run(
        "smi-bench",
        "--input-size",
        "40",
        "--model",
        FAST_MODEL,
        "--tile",
        "16",
        "--overlap",
        "4",
        "--baseline",
        "--json",
        report_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert set(report["stages"]) == {"decode_s", "infer_s", "assemble_s", "encode_s", "total_s"}
    assert report["output_size"] == 160 and report["images_per_hour"] > 0
    assert report["baseline"]["upscale_s"] > 0
    assert report["seams"]["untiled_ours_vs_baseline_max_abs"] <= 1
    assert "speed ratio" in done.stdout and "seams ours" in done.stdout


@pytest.mark.skipif(not bf16_kernels_available(), reason="oneDNN has no bf16 convolution here")
def test_bench_puts_bf16_beside_our_fp32_with_its_fidelity(registry, tmp_path):
    report_path = tmp_path / "bench.json"
    done = run(
        "smi-bench",
        *("--input-size", "16", "--model", "RealESRGAN_x4plus", "--device", "cpu"),
        *("--precision", "bf16", "--tile", "0", "--baseline", "--no-seams", "--repeat", "2"),
        *("--json", report_path),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["precision"] == "bf16" and report["precision_choice"]["reason"] == "bf16: set"
    fp32 = report["fp32"]
    assert fp32["upscale_s"] > 0 and len(fp32["speed_ratios"]) == 2
    for against in ("vs_ours_fp32", "vs_realesrganer_fp32"):
        assert fp32["fidelity"][against]["psnr_db"] > 42
    assert "precision bf16: set" in done.stdout
    assert "ours bf16" in done.stdout and "ours fp32" in done.stdout
    assert "bf16 vs realesrganer fp32: PSNR" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU here: cuda is accepted")
def test_the_worker_image_s_settings_without_a_gpu_say_so_and_cpu_still_works(tmp_path):
    """SMI_WORKER_DEVICE=cuda (as the image sets it) on a machine without a GPU: one clear
    log line, JSON like every other line of a container's log, and exit 1; ``--device cpu``
    then runs in the precision auto chose for this CPU, and says why."""
    env = {
        **os.environ,
        "SMI_WORKER_DEVICE": "cuda",
        "SMI_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "SMI_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "SMI_LOG_FORMAT": "json",
    }
    bin_dir = Path(sys.executable).parent
    refused = subprocess.run(
        [bin_dir / "smi-worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1
    lines = [json.loads(line) for line in refused.stderr.strip().splitlines()]
    assert lines[-1]["level"] == "ERROR" and lines[-1]["logger"] == "upscaler.worker.loop"
    assert lines[-1]["message"] == (
        "smi-worker: no CUDA GPU is visible to PyTorch, so cuda is refused"
    )
    env["SMI_LOG_FORMAT"] = "text"
    started = subprocess.Popen(
        [bin_dir / "smi-worker", "--device", "cpu"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert started.stderr is not None
        for line in started.stderr:
            if "ready on" in line:
                assert re.search(r"ready on cpu \((fp32|bf16), .*; auto: ", line), line
                break
        else:
            raise AssertionError("the worker never said it was ready")
    finally:
        started.terminate()
        started.wait(timeout=60)
