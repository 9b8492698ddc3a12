"""How far bf16 on the CPU is from RealESRGANer in fp32, on the images the tests hold.

    .venv/bin/python scripts/bf16_fidelity.py [--json out/bf16-fidelity.json]

Each kind of ``tests/image_kinds.py`` (48x48 photo crops, the microscopy
crop, synthesized fluorescence, flat saturated colours, line art, noise) is
upscaled untiled by ``RealESRGAN_x4plus`` three ways: ``RealESRGANer`` in
fp32 (the reference), our pipeline in bf16 (the fused kernels, with the
input layer, the trunk and the output layer in fp32) and basicsr's module
under plain ``torch.autocast`` to bf16 (``--no-fuse``). Prints PSNR, the
mean and largest difference in levels and the share within 2 levels of
each against the reference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

# The very images the tests hold (tests/test_precision.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from image_kinds import IMAGE_KINDS, PHOTOS

from upscaler.commands.baseline import reference_upscale, reference_upscaler
from upscaler.models.registry import ModelRegistry
from upscaler.pipeline.options import PipelineOptions
from upscaler.pipeline.upscaler import Upscaler


def distance(ours: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    difference = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
    mse = float(np.mean(difference**2))
    return {
        "psnr_db": round(math.inf if mse == 0 else 10 * math.log10(255**2 / mse), 2),
        "mean_abs": round(float(difference.mean()), 3),
        "max_abs": int(difference.max()),
        "within_2": round(float((difference <= 2).mean()), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    registry = ModelRegistry.from_env()
    spec = registry.get("RealESRGAN_x4plus")
    whole = PipelineOptions(tile=0)
    ways = {
        "ours_bf16": Upscaler.load(registry, spec.name, precision="bf16", options=whole),
        "autocast_bf16": Upscaler.load(
            registry, spec.name, precision="bf16", options=whole, fuse=False
        ),
    }
    reference = reference_upscaler(spec, registry.weights_path(spec), tile=0, pre_pad=0)
    report: dict[str, Any] = {}
    print(f"{'image':<16}{'ours bf16':>36}{'plain autocast bf16':>36}")
    for kind, make in IMAGE_KINDS.items():
        pixels = make()
        theirs = reference_upscale(reference, pixels)
        row = {
            name: distance(upscaler.upscale(pixels).pixels, theirs)
            for name, upscaler in ways.items()
        }
        report[kind] = {"photo": kind in PHOTOS, **row}
        cells = [
            f"{r['psnr_db']:6.2f} dB {r['mean_abs']:.3f} max {r['max_abs']:>2} "
            f"{100 * r['within_2']:5.1f}%"
            for r in row.values()
        ]
        print(f"{kind:<16}" + "".join(f"{cell:>36}" for cell in cells), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
