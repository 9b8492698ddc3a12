"""bf16 on the CPU: chosen only where it pays, and close to RealESRGANer in fp32 on every kind of
image."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from image_kinds import MICROSCOPY_CROP, OTHERS, PHOTOS, crop
from prometheus_client.parser import text_string_to_metric_families

from conftest import FAST_MODEL
from shared.broker import Broker
from shared.storage import Storage
from upscaler.commands.baseline import reference_upscale, reference_upscaler
from upscaler.commands.bench import SeamError
from upscaler.errors import InvalidOptionsError
from upscaler.pipeline.options import PipelineOptions
from upscaler.pipeline.precision import (
    BF16_MIN_SPEEDUP,
    bf16_kernels_available,
    bf16_pays,
    choose_precision,
)
from upscaler.pipeline.upscaler import Upscaler
from upscaler.worker.config import WorkerConfig
from upscaler.worker.loop import UpscaleWorker
from upscaler.worker.metrics import serve_health

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}


NATIVE_BF16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


# -- the choice -------------------------------------------------------------------------------


def test_bf16_is_chosen_only_past_a_clear_margin():
    assert not bf16_pays(None)  # no bf16 kernels at all
    assert not bf16_pays(0.37)  # emulated with fp32 instructions
    assert not bf16_pays(BF16_MIN_SPEEDUP - 0.01)
    assert bf16_pays(BF16_MIN_SPEEDUP) and bf16_pays(2.0)


def test_a_set_precision_is_kept_and_auto_is_fp16_on_cuda():
    kept = choose_precision("fp32", "cpu", bf16_keeps_fidelity=True)
    assert (kept.precision, kept.automatic, kept.reason) == ("fp32", False, "fp32: set")
    cuda = choose_precision("auto", "cuda", bf16_keeps_fidelity=False)
    assert (cuda.precision, cuda.automatic) == ("fp16", True)


def test_networks_without_a_fidelity_keeping_bf16_path_stay_fp32(registry):
    choice = choose_precision("auto", "cpu", bf16_keeps_fidelity=False)
    assert choice.precision == "fp32" and "no bf16 CPU path" in choice.reason
    # SRVGGNetCompact has no fused kernels; basicsr's module is not fused with --no-fuse.
    assert Upscaler.load(registry, FAST_MODEL).precision == "fp32"
    unfused = Upscaler.load(registry, "RealESRGAN_x4plus", fuse=False)
    assert unfused.precision == "fp32" and not unfused.fused


def _in_a_process(isa: str, code: str) -> dict:
    """What ``code`` prints as JSON, run in a fresh process with oneDNN capped at ``isa``."""
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": isa},
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


AUTO_CHOICE = (
    "from upscaler.pipeline.precision import choose_precision\n"
    "choice = choose_precision('auto', 'cpu', bf16_keeps_fidelity=True)\n"
)


@pytest.mark.skipif(not X86, reason="ONEDNN_MAX_CPU_ISA names x86 instruction sets")
def test_without_bf16_kernels_auto_is_fp32_and_bf16_is_refused():
    """oneDNN held to AVX2 has no bf16 convolution (plain PyTorch then ran bf16 7x slower than
    fp32): nothing is timed, auto says why, and bf16 set by hand is refused, not run."""
    choice = _in_a_process(
        "AVX2",
        AUTO_CHOICE + "from upscaler.models.registry import ModelRegistry\n"
        "from upscaler.pipeline.upscaler import Upscaler\n"
        "from upscaler.errors import InvalidOptionsError\n"
        "try:\n"
        f"    Upscaler.load(ModelRegistry.from_env({{}}), '{FAST_MODEL}', precision='bf16')\n"
        "    forced = 'ran'\n"
        "except InvalidOptionsError as exc:\n"
        "    forced = str(exc)\n"
        "print(json.dumps({**vars(choice), 'forced': forced}))\n",
    )
    assert choice["precision"] == "fp32" and choice["automatic"]
    assert "no bf16 convolution" in choice["reason"] and choice["bf16_speedup"] is None
    assert "no bf16 convolutions" in choice["forced"]


@pytest.mark.skipif(not X86, reason="ONEDNN_MAX_CPU_ISA names x86 instruction sets")
def test_where_bf16_is_only_emulated_auto_times_it_and_stays_fp32():
    """AVX-512 without BF16 (Skylake to Cascade Lake servers): oneDNN emulates bf16 with fp32
    instructions, which the timing finds slower (0.35-0.38x here). On a CPU without AVX-512
    the cap changes nothing and there are no bf16 kernels at all: fp32 too."""
    choice = _in_a_process("AVX512_CORE_VNNI", AUTO_CHOICE + "print(json.dumps(vars(choice)))")
    assert choice["precision"] == "fp32" and choice["automatic"]
    if choice["bf16_speedup"] is not None:
        assert choice["bf16_speedup"] < BF16_MIN_SPEEDUP
        assert "bf16 needs" in choice["reason"]


@pytest.mark.skipif(
    not NATIVE_BF16 or "ONEDNN_MAX_CPU_ISA" in os.environ,
    reason="this CPU has no native bf16 (AVX512-BF16 or AMX)",
)
def test_on_a_cpu_with_native_bf16_auto_picks_it_for_the_fused_network(registry):
    upscaler = Upscaler.load(registry, "RealESRGAN_x4plus")
    choice = upscaler.precision_choice
    assert (upscaler.precision, upscaler.fused, choice.automatic) == (
        "bf16",
        True,
        True,
    )
    assert choice.bf16_speedup is not None and choice.bf16_speedup >= BF16_MIN_SPEEDUP
    assert "as fast as fp32 on this CPU" in choice.reason


def test_impossible_precisions_on_the_cpu_are_refused(registry):
    with pytest.raises(InvalidOptionsError, match="fp16 is not supported"):
        Upscaler.load(registry, FAST_MODEL, precision="fp16")
    with pytest.raises(InvalidOptionsError, match="auto, fp32, fp16 or bf16"):
        Upscaler.load(registry, FAST_MODEL, precision="fp8")


# -- fidelity -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bf16(registry) -> Upscaler:
    if not bf16_kernels_available():
        pytest.skip("oneDNN has no bf16 convolution on this CPU")
    return Upscaler.load(
        registry, "RealESRGAN_x4plus", precision="bf16", options=PipelineOptions(tile=0)
    )


@pytest.fixture(scope="module")
def fp32_reference(registry):
    spec = registry.get("RealESRGAN_x4plus")
    return reference_upscaler(spec, registry.weights_path(spec), tile=0, pre_pad=0)


@pytest.mark.parametrize("kind", PHOTOS)
def test_bf16_on_photos_is_within_45_db_and_0_6_levels_of_realesrganer_fp32(
    kind, bf16, fp32_reference
):
    pixels = PHOTOS[kind]()
    error = SeamError.between(
        bf16.upscale(pixels).pixels, reference_upscale(fp32_reference, pixels)
    )
    assert error.psnr_db >= 45 and error.mean_abs <= 0.6, (kind, error)


@pytest.mark.parametrize("kind", OTHERS)
def test_bf16_on_any_image_is_within_42_db_of_realesrganer_fp32(kind, bf16, fp32_reference):
    pixels = OTHERS[kind]()
    error = SeamError.between(
        bf16.upscale(pixels).pixels, reference_upscale(fp32_reference, pixels)
    )
    assert error.psnr_db >= 42, (kind, error)


def test_the_exact_pixels_into_the_first_layer_are_what_keeps_microscopy_close(
    registry, bf16, fp32_reference
):
    """Where the error enters: basicsr's module under plain autocast rounds the pixels to bf16
    before the first convolution and misses 42 dB on the microscopy crop; ours, the same
    convolutions in bf16 but the first (and the trunk and the last) in fp32, is far closer."""
    plain = Upscaler.load(
        registry, "RealESRGAN_x4plus", precision="bf16", options=PipelineOptions(tile=0), fuse=False
    )
    pixels = crop(*MICROSCOPY_CROP)
    theirs = reference_upscale(fp32_reference, pixels)
    ours = SeamError.between(bf16.upscale(pixels).pixels, theirs)
    autocast = SeamError.between(plain.upscale(pixels).pixels, theirs)
    assert ours.psnr_db >= autocast.psnr_db + 5, (ours, autocast)
    assert ours.mean_abs <= autocast.mean_abs / 2


# -- what the worker says -----------------------------------------------------------------------


def test_the_worker_shows_its_precision_in_readyz_and_metrics_and_previews_stay_fast(
    registry, tmp_path
):
    """Paid jobs set to fp32 (deliveries exact); previews left on auto. /readyz lists each
    model's precision and why, /metrics has one series per loaded precision."""
    config = WorkerConfig.from_env(
        {
            "SMI_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
            "SMI_STORAGE_URL": f"file://{tmp_path / 'storage'}",
            "SMI_WORKER_DEVICE": "cpu",
            "SMI_WORKER_PRECISION": "fp32",
        }
    )
    assert config.preview_precision == "auto"
    broker = Broker(config.broker_url)
    worker = UpscaleWorker(broker, Storage(config.storage_url), registry, config)
    worker.warm_up()
    server = serve_health(
        0,
        worker.readiness,
        host="127.0.0.1",
        details=lambda: {"precision": worker.precisions()},
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body = httpx.get(f"{base}/readyz", timeout=10).json()
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        server.shutdown()
        broker.close()
    rows = {tuple(row["for"]): row for row in body["precision"]}
    assert rows[("jobs",)]["precision"] == "fp32" and rows[("jobs",)]["reason"] == "fp32: set"
    previews = rows[("previews",)]
    assert previews["model"] == registry.get().name and previews["reason"].startswith("auto: ")
    assert worker.precision() is not None and worker.precision().precision == "fp32"
    assert set(body["checks"]) >= {"broker", "storage", "model"}  # unchanged beside it
    families = {family.name: family for family in text_string_to_metric_families(metrics)}
    model = registry.get().name
    loaded = {
        (series.labels["used_for"], series.labels["precision"], series.labels["chosen"])
        for series in families["smi_worker_model_precision"].samples
        if series.labels["model"] == model and series.value == 1
    }
    assert {("jobs", "fp32", "set"), ("previews", previews["precision"], "auto")} <= loaded
    if previews["precision"] == "bf16":
        (speedup,) = families["smi_worker_cpu_bf16_speedup"].samples
        assert speedup.value >= BF16_MIN_SPEEDUP


def test_auto_leaves_the_output_a_real_upscale_in_either_precision(registry):
    """Whatever auto picked here, the pipeline runs it end to end on a tiled image."""
    upscaler = Upscaler.load(registry, "RealESRGAN_x4plus", options=PipelineOptions(24, 8))
    pixels = crop("coffee", 150, 250)[:40, :40]
    result = upscaler.upscale(pixels)
    assert result.pixels.shape == (160, 160, 3) and result.pixels.dtype == np.uint8
    nearest = pixels.repeat(4, axis=0).repeat(4, axis=1)
    assert np.abs(result.pixels.astype(int) - nearest.astype(int)).mean() > 1
