"""GPU checks that CI cannot run: CUDA parity, precision drift and a real out-of-memory fallback.

Run by ``scripts/gpu_bench.sh`` on a CUDA machine; exits non-zero on failure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from upscaler.images import decode_image
from upscaler.pipeline import PipelineOptions, Upscaler
from upscaler.registry import PROJECT_MODELS_DIR, ModelRegistry


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/gpu")
    out.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry.from_env()
    photo = decode_image((PROJECT_MODELS_DIR.parent / "samples" / "chelsea.png").read_bytes())
    crop = np.ascontiguousarray(photo.pixels[40:200, 140:300])
    report: dict[str, object] = {"device": torch.cuda.get_device_name()}
    whole = PipelineOptions(tile=0, overlap=0, batch=1)

    cpu = Upscaler.load(registry, options=whole).upscale(crop).pixels.astype(int)
    for precision in ("fp32", "fp16", "bf16"):
        gpu = Upscaler.load(registry, device="cuda", precision=precision, options=whole)
        pixels = gpu.upscale(crop).pixels.astype(int)
        diff = np.abs(pixels - cpu)
        report[f"{precision}_vs_cpu_fp32"] = {"max": int(diff.max()), "mean": float(diff.mean())}
    failures = []
    if report["fp32_vs_cpu_fp32"]["max"] > 1:  # type: ignore[index]
        failures.append("CUDA fp32 differs from CPU fp32 by more than 1 level")

    # A real out-of-memory error: a 4096x4096 input in one fp32 window needs
    # ~69 GiB for each 64-channel 16384x16384 activation.
    big = np.tile(photo.pixels, (14, 10, 1))[:4096, :4096]
    probe = Upscaler.load(registry, device="cuda", precision="fp32", options=whole)
    started = time.perf_counter()
    result = probe.upscale(np.ascontiguousarray(big))
    report["oom_fallback"] = {
        "seconds": time.perf_counter() - started,
        "events": result.out_of_memory_events,
        "notes": result.notes,
        "shape": list(result.pixels.shape),
    }
    if result.pixels.shape[:2] != (16384, 16384):
        failures.append("out-of-memory fallback lost pixels")
    report["failures"] = failures
    (out / "gpu_checks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
