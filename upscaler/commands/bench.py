"""``smi-bench``: how fast the pipeline upscales a real photo, and how clean its seams are.

    smi-bench --input-size 128 --tile 64 --baseline --json out/bench.json
    smi-bench --input-size 2000 --device cuda --precision fp16 --tile 512 --baseline
    smi-bench --device cpu --tile 0 --input-size 128 --baseline --no-seams   # bf16 beside fp32

The photo (``samples/chelsea.png`` unless ``--image``) is resized to N x N,
encoded as PNG and then taken through decode, inference, assembly and
encode, each timed. The precision (``auto`` unless ``--precision``) is
printed with what chose it. With ``--baseline`` the same input goes through
``RealESRGANer`` with identical weights, tile size and overlap, and both
tiled outputs are compared with an untiled run of the same implementation;
where our precision is not fp32, our pipeline in fp32 is timed too, all
three interleaved, and the reduced precision's output is compared with both
fp32 outputs (PSNR, mean and largest difference in levels).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from shared.images import decode_image
from upscaler.commands.baseline import reference_upscale, reference_upscaler
from upscaler.commands.cli import add_model_arguments, load_upscaler
from upscaler.models.registry import PROJECT_MODELS_DIR, ModelRegistry
from upscaler.output.images import encode_image
from upscaler.pipeline.options import PipelineOptions, default_device
from upscaler.pipeline.upscaler import Upscaler

DEFAULT_IMAGE = PROJECT_MODELS_DIR.parent / "samples" / "chelsea.png"


@dataclass(frozen=True)
class SeamError:
    """How far a tiled output is from the untiled output of the same implementation."""

    max_abs: int
    mean_abs: float
    psnr_db: float

    @classmethod
    def between(cls, tiled: np.ndarray, untiled: np.ndarray) -> SeamError:
        diff = tiled.astype(np.float64) - untiled.astype(np.float64)
        peak = float(np.iinfo(tiled.dtype).max)
        mse = float(np.mean(diff**2))
        psnr = math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
        return cls(int(np.abs(diff).max()), float(np.abs(diff).mean()), psnr)


def bench_photo(size: int, image: Path = DEFAULT_IMAGE) -> bytes:
    """A real photo resized to ``size`` x ``size``, as PNG bytes."""
    pixels = decode_image(image.read_bytes()).pixels
    shrink = size < min(pixels.shape[:2])
    resized = cv2.resize(
        pixels, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return encode_image(resized, "png")


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_ours(upscaler: Upscaler, source: bytes) -> tuple[dict[str, float], np.ndarray, Any]:
    """One timed run through every stage; returns the stage seconds, pixels and result."""
    started = time.perf_counter()
    pixels = decode_image(source).pixels
    decoded = time.perf_counter()
    result = upscaler.upscale(pixels)
    upscaled = time.perf_counter()
    encode_image(result.pixels, "png")
    finished = time.perf_counter()
    stages = {
        "decode_s": decoded - started,
        "infer_s": result.infer_s,
        "assemble_s": upscaled - decoded - result.infer_s,
        "encode_s": finished - upscaled,
        "total_s": finished - started,
    }
    return stages, pixels, result


def _time_reference(reference: Any, pixels: np.ndarray, device: str) -> tuple[float, np.ndarray]:
    _synchronize(device)
    started = time.perf_counter()
    output = reference_upscale(reference, pixels)
    _synchronize(device)
    return time.perf_counter() - started, output


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Time our pipeline (and RealESRGANer, runs interleaved so drift hits both alike)."""
    registry = ModelRegistry.from_env()
    upscaler = load_upscaler(args, registry)
    device, precision = str(upscaler.device), upscaler.precision
    spec = upscaler.spec
    weights = args.weights or registry.weights_path(spec)
    source = bench_photo(args.input_size, args.image)
    pixels = decode_image(source).pixels
    reference = exact = None
    if args.baseline:
        reference = reference_upscaler(
            spec,
            weights,
            tile=upscaler.options.tile,
            tile_pad=args.overlap,
            half=precision == "fp16",
            device=device,
        )
        if precision != "fp32":  # our own fp32 beside the reduced precision
            exact = load_upscaler(
                argparse.Namespace(**{**vars(args), "precision": "fp32"}), registry
            )

    started = time.perf_counter()
    for _ in range(args.warmup):
        upscaler.upscale(pixels)
    warmup_s = time.perf_counter() - started
    for _ in range(args.warmup if reference else 0):
        reference_upscale(reference, pixels)
        if exact is not None:
            exact.upscale(pixels)

    runs, baseline_times, exact_times = [], [], []
    for _ in range(args.repeat):
        stages, pixels, result = _time_ours(upscaler, source)
        runs.append(stages)
        if exact is not None:
            exact_stages, _, exact_result = _time_ours(exact, source)
            exact_times.append(exact_stages["infer_s"] + exact_stages["assemble_s"])
        if reference is not None:
            seconds, theirs_tiled = _time_reference(reference, pixels, device)
            baseline_times.append(seconds)
    best = min(runs, key=lambda run: run["total_s"])
    ours_upscale = [run["infer_s"] + run["assemble_s"] for run in runs]
    megapixels = args.input_size**2 / 1e6
    report: dict[str, Any] = {
        "model": spec.name,
        "weights": str(weights),
        "device": device,
        "device_name": (
            torch.cuda.get_device_name()
            if device.startswith("cuda")
            else platform.processor() or platform.machine()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "precision_choice": vars(upscaler.precision_choice),
        "input_size": args.input_size,
        "output_size": args.input_size * spec.scale,
        "tile": upscaler.options.tile,
        "overlap": upscaler.options.overlap,
        "batch": upscaler.options.batch,
        "lanes": upscaler.options.lanes,
        "compiled": upscaler.compiled,
        "fused": upscaler.fused,
        "tiles": result.tiles,
        "final_batch": result.final_batch,
        "repeat": args.repeat,
        "warmup_s": warmup_s,
        "stages": best,
        "upscale_s": min(ours_upscale),
        "upscale_median_s": statistics.median(ours_upscale),
        "input_megapixels_per_s": megapixels / best["total_s"],
        "images_per_hour": 3600 / best["total_s"],
    }
    if reference is not None:
        report["baseline"] = {
            "implementation": "realesrgan.RealESRGANer",
            "pre_pad": 0,
            "half": precision == "fp16",
            "upscale_s": min(baseline_times),
            "upscale_median_s": statistics.median(baseline_times),
        }
        report["speed_ratio_best"] = min(baseline_times) / min(ours_upscale)
        report["speed_ratio_median"] = statistics.median(baseline_times) / statistics.median(
            ours_upscale
        )
        if args.seams:
            report["seams"] = _seam_errors(upscaler, reference, pixels, result.pixels, theirs_tiled)
    if exact is not None and reference is not None:
        report["fp32"] = {
            "upscale_s": min(exact_times),
            "upscale_median_s": statistics.median(exact_times),
            "speed_ratio_best": min(exact_times) / min(ours_upscale),
            "speed_ratio_median": statistics.median(exact_times) / statistics.median(ours_upscale),
            # Each of our runs against the fp32 run just after it: the machine's drift cancels.
            "speed_ratios": sorted(
                e / (run["infer_s"] + run["assemble_s"])
                for e, run in zip(exact_times, runs, strict=True)
            ),
            "fidelity": {
                "vs_ours_fp32": vars(SeamError.between(result.pixels, exact_result.pixels)),
                "vs_realesrganer_fp32": vars(SeamError.between(result.pixels, theirs_tiled))
                if not reference.half
                else None,
            },
        }
    return report


def _seam_errors(
    upscaler: Upscaler,
    reference: Any,
    pixels: np.ndarray,
    ours_tiled: np.ndarray,
    theirs_tiled: np.ndarray,
) -> dict[str, Any]:
    """Each implementation's tiled output against its own untiled output."""
    ours_untiled = upscaler.upscale(pixels, options=PipelineOptions(tile=0, overlap=0)).pixels
    reference.tile_size = 0
    theirs_untiled = reference_upscale(reference, pixels)
    return {
        "ours": vars(SeamError.between(ours_tiled, ours_untiled)),
        "baseline": vars(SeamError.between(theirs_tiled, theirs_untiled)),
        "untiled_ours_vs_baseline_max_abs": int(
            np.abs(ours_untiled.astype(int) - theirs_untiled.astype(int)).max()
        ),
    }


def _print_report(report: dict[str, Any]) -> None:
    stages = report["stages"]
    print(
        f"model {report['model']} on {report['device']} ({report['device_name']}), "
        f"{report['precision']}, {report['threads']} threads, torch {report['torch']}"
        + (", fused oneDNN kernels" if report["fused"] else "")
        + (", compiled" if report["compiled"] else "")
    )
    print(f"precision {report['precision_choice']['reason']}")
    print(
        f"input {report['input_size']}x{report['input_size']} -> "
        f"{report['output_size']}x{report['output_size']}, tile {report['tile']} "
        f"overlap {report['overlap']} batch {report['batch']} lanes {report['lanes']} "
        f"({report['tiles']} tiles)"
    )
    print(f"{'stage':<10}{'seconds':>10}")
    for name in ("decode_s", "infer_s", "assemble_s", "encode_s", "total_s"):
        print(f"{name[:-2]:<10}{stages[name]:>10.3f}")
    print(
        f"input megapixels/s {report['input_megapixels_per_s']:.4f}, "
        f"images/hour {report['images_per_hour']:.1f}"
    )
    if "baseline" in report:
        ours, theirs = report["upscale_s"], report["baseline"]["upscale_s"]
        ours_median = report["upscale_median_s"]
        theirs_median = report["baseline"]["upscale_median_s"]
        print(
            f"upscale (infer+assemble), best of {report['repeat']}: ours {ours:.3f}s, "
            f"RealESRGANer {theirs:.3f}s, speed ratio {report['speed_ratio_best']:.2f}x"
        )
        print(
            f"upscale, median: ours {ours_median:.3f}s, RealESRGANer {theirs_median:.3f}s, "
            f"speed ratio {report['speed_ratio_median']:.2f}x"
        )
    if "fp32" in report:
        fp32, ratios = report["fp32"], report["fp32"]["speed_ratios"]
        precision = report["precision"]
        print(
            f"upscale, best / median: ours {precision} {report['upscale_s']:.3f}s / "
            f"{report['upscale_median_s']:.3f}s, ours fp32 {fp32['upscale_s']:.3f}s / "
            f"{fp32['upscale_median_s']:.3f}s: {precision} is {fp32['speed_ratio_best']:.2f}x / "
            f"{fp32['speed_ratio_median']:.2f}x as fast (run by run {ratios[0]:.2f}x to "
            f"{ratios[-1]:.2f}x)"
        )
        for against, error in fp32["fidelity"].items():
            if error is not None:
                print(
                    f"{precision} {against.replace('_', ' ')}: PSNR {error['psnr_db']:.2f} dB, "
                    f"mean {error['mean_abs']:.3f}, max {error['max_abs']} level(s)"
                )
    if "seams" in report:
        for who in ("ours", "baseline"):
            seam = report["seams"][who]
            print(
                f"seams {who:<9} max {seam['max_abs']:>4}  mean {seam['mean_abs']:.4f}  "
                f"PSNR {seam['psnr_db']:.2f} dB"
            )
        print(
            f"untiled ours vs RealESRGANer: max "
            f"{report['seams']['untiled_ours_vs_baseline_max_abs']} level(s)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=128, help="N for an N x N input")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to resize")
    add_model_arguments(parser)
    parser.add_argument("--baseline", action="store_true", help="also time RealESRGANer")
    parser.add_argument(
        "--no-seams",
        dest="seams",
        action="store_false",
        help="with --baseline, skip the untiled runs (too big for the device)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the best is kept")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed runs first (default: 1 on CUDA, 0 on CPU)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 1 if (args.device or default_device()).startswith("cuda") else 0
    report = run_benchmark(args)
    _print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
