"""One GPU run that proves the worker: checks and benchmarks in budgeted stages.

    python scripts/gpu_run.py --out DIR [--budget 450] [--device cuda]     # the GPU machine
    python scripts/gpu_run.py --out DIR --device cpu --tiny                 # the rehearsal here

Stages run most important first, each in a process of its own with a time
limit, so a crash, a hang or a poisoned CUDA context costs that stage
only. After every stage the results so far are written to ``DIR/gpu.json``
(and everything the stages print to ``DIR/gpu.log``): two files, whatever
happens. A stage whose estimate no longer fits the budget is skipped and
says so. ``--tiny`` runs the same stages on small images, to prove the
install and every stage's code before GPU time is spent.

Stages:
- environment: torch, CUDA, cuDNN, the card and its memory;
- parity: CUDA fp32 against CPU fp32 on a photo crop and on noise (at most
  1 level); fp16 and bf16 against CPU fp32, with thresholds from a CPU
  emulation of each precision on the same input; tiled against untiled;
  gray, RGBA and 16-bit layouts;
- production: the 2000x2000 model pass with the worker's own settings
  (tile and batch sized from free memory, fp16), and peak memory;
- baseline: ``RealESRGANer`` fp16 at tile 512 (and ours at its settings);
- worker: the real worker end to end (storage, decode, upscale, encode,
  storage) over a queue of 2000x2000 jobs, serial and pipelined, and
  ``RealESRGANer``'s own read-enhance-write loop over the same images;
- sweep: tile, batch, cuDNN benchmark, fp16/bf16, whole image;
- compiled: ``torch.compile`` with its compile time;
- oom: a real out-of-memory error and the fallback that survives it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

STAGES: list[tuple[str, float, float]] = [
    # name, estimated seconds on the GPU machine, limit
    ("environment", 15, 60),
    ("parity", 60, 150),
    ("production", 45, 120),
    ("baseline", 45, 120),
    ("worker", 90, 180),
    ("sweep", 90, 150),
    ("compiled", 120, 200),
    ("oom", 45, 90),
]


def sizes(tiny: bool) -> dict[str, int]:
    """Image sides for each stage: the product's on a GPU, a few dozen pixels here."""
    if tiny:
        return {"big": 48, "crop": 24, "noise": 16, "layout": 12, "jobs": 3, "oom": 64}
    return {"big": 2000, "crop": 160, "noise": 96, "layout": 48, "jobs": 8, "oom": 4096}


# ---------------------------------------------------------------- the stages


def stage_environment(ctx: Context) -> dict[str, Any]:
    import torch

    from upscaler.models._compat import install_torchvision_functional_tensor

    install_torchvision_functional_tensor()  # as the worker does before importing basicsr
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    for package in ("torchvision", "basicsr", "realesrgan", "kombu", "isal", "cv2", "numpy"):
        try:
            report[package] = getattr(__import__(package), "__version__", "installed")
        except Exception as exc:  # the stage reports what is missing instead of stopping
            report[package] = f"missing: {exc}"
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        report |= {
            "device": torch.cuda.get_device_name(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "memory_total_gib": total / 2**30,
            "memory_free_gib": free / 2**30,
        }
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
        print(smi.stdout)
    return report


def stage_parity(ctx: Context) -> dict[str, Any]:
    from upscaler.pipeline.options import PipelineOptions
    from upscaler.pipeline.upscaler import Upscaler

    whole = PipelineOptions(tile=0, overlap=0, batch=1)
    cpu = Upscaler.load(ctx.registry, precision="fp32", options=whole)
    inputs = {"photo": ctx.photo_crop(ctx.size["crop"]), "noise": ctx.noise(ctx.size["noise"])}
    report: dict[str, Any] = {}
    for name, pixels in inputs.items():
        reference = cpu.upscale(pixels).pixels
        for precision in ctx.precisions():
            device = Upscaler.load(
                ctx.registry, device=ctx.device, precision=precision, options=whole
            )
            diff = difference(device.upscale(pixels).pixels, reference)
            entry: dict[str, Any] = {"vs_cpu_fp32": diff}
            if precision == "fp32":
                entry["pass"] = diff["max"] <= 1
            else:
                emulated = emulate_precision(ctx, pixels, precision, reference)
                limit = {"mean": 2 * emulated["mean"] + 0.1, "max": 2 * emulated["max"] + 2}
                entry |= {"cpu_emulation_vs_fp32": emulated, "limit": limit}
                entry["pass"] = diff["mean"] <= limit["mean"] and diff["max"] <= limit["max"]
            report[f"{name}_{precision}"] = entry
    fastest = ctx.precisions()[-1]
    device = Upscaler.load(ctx.registry, device=ctx.device, precision=fastest, options=whole)
    crop = inputs["photo"]
    untiled = device.upscale(crop).pixels
    side = max(16, crop.shape[0] // 3)
    tiled = device.upscale(crop, options=PipelineOptions(tile=side, overlap=32)).pixels
    report["tiled_vs_untiled"] = difference(tiled, untiled) | {"tile": side, "overlap": 32}
    layouts = ctx.layouts(ctx.size["layout"])
    exact = Upscaler.load(ctx.registry, device=ctx.device, precision="fp32", options=whole)
    for name, pixels in layouts.items():
        ours, theirs = exact.upscale(pixels).pixels, cpu.upscale(pixels).pixels
        same_layout = ours.shape == theirs.shape and ours.dtype == theirs.dtype
        diff = difference(ours, theirs)
        report[f"layout_{name}"] = diff | {"pass": same_layout and diff["max"] <= 1}
    report["pass"] = all(v.get("pass", True) for v in report.values() if isinstance(v, dict))
    return report


def stage_production(ctx: Context) -> dict[str, Any]:
    import torch

    from upscaler.pipeline.upscaler import Upscaler

    upscaler = Upscaler.load(
        ctx.registry, device=ctx.device, precision=ctx.precisions()[-1]
    )  # tile and batch: the worker's own defaults for this device
    warm = upscaler.warm_up(ctx.size["big"], ctx.size["big"])
    pixels = ctx.photo_resized(ctx.size["big"])
    runs = [timed_upscale(upscaler, pixels) for _ in range(3)]
    report = {
        "precision": upscaler.precision,
        "tile": upscaler.options.tile,
        "batch": upscaler.options.batch,
        "warm_up_s": warm,
        "runs": runs,
        "model_s_best": min(r["model_s"] for r in runs),
        "upscale_s_best": min(r["upscale_s"] for r in runs),
        "upscale_s_median": statistics.median(r["upscale_s"] for r in runs),
    }
    if ctx.cuda:
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return report


def stage_baseline(ctx: Context) -> dict[str, Any]:
    from upscaler.commands.baseline import reference_upscale, reference_upscaler
    from upscaler.pipeline.options import PipelineOptions
    from upscaler.pipeline.upscaler import Upscaler

    half = ctx.cuda
    spec = ctx.registry.get()
    tile = 512 if not ctx.tiny else 16
    reference = reference_upscaler(
        spec, ctx.weights(spec), tile=tile, tile_pad=10, half=half, device=ctx.device
    )
    ours = Upscaler.load(
        ctx.registry,
        device=ctx.device,
        precision=ctx.precisions()[-1],
        options=PipelineOptions(tile=tile, overlap=10, batch=1),
    )
    pixels = ctx.photo_resized(ctx.size["big"])
    reference_upscale(reference, pixels)  # warm-up
    theirs = [ctx.timed(lambda: reference_upscale(reference, pixels)) for _ in range(2)]
    ours.warm_up(ctx.size["big"], ctx.size["big"])
    mine = [timed_upscale(ours, pixels)["upscale_s"] for _ in range(2)]
    return {
        "tile": tile,
        "tile_pad": 10,
        "realesrganer_s": theirs,
        "ours_same_settings_s": mine,
        "ratio_same_settings": min(theirs) / min(mine),
    }


def stage_worker(ctx: Context) -> dict[str, Any]:
    import cv2
    import numpy as np
    from worker_bench import compare, crops

    from upscaler.commands.baseline import reference_upscale, reference_upscaler
    from upscaler.output.images import encode_image
    from upscaler.worker.config import WorkerConfig

    environ = {"SMI_WORKER_DEVICE": ctx.device, "SMI_WORKER_PROGRESS_INTERVAL_S": "1"}
    config = dataclasses.replace(WorkerConfig.from_env(environ), broker_url="")
    images = [ctx.resize(c, ctx.size["big"]) for c in crops(ctx.size["jobs"], 64)]
    report: dict[str, Any] = {"jobs": len(images), "side": ctx.size["big"]}
    report["worker"] = compare(config, ctx.registry, images, 1)
    # RealESRGANer's way: read, enhance (its fastest setting on this card), write, one by one.
    spec = ctx.registry.get()
    reference = reference_upscaler(
        spec, ctx.weights(spec), tile=0, half=ctx.cuda, device=ctx.device
    )
    encoded = [encode_image(image, "png") for image in images]
    reference_upscale(reference, images[0])  # warm-up

    def their_loop() -> None:
        for data in encoded:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert bgr is not None
            out = reference_upscale(reference, np.ascontiguousarray(bgr[..., ::-1]))
            cv2.imencode(".png", np.ascontiguousarray(out[..., ::-1]))

    seconds = ctx.timed(their_loop)
    report["realesrganer_loop_s"] = seconds
    report["realesrganer_images_per_hour"] = 3600 * len(images) / seconds
    best = report["worker"]["pipelined"]["best_s"]
    report["pipelined_images_per_hour"] = 3600 * len(images) / best
    report["end_to_end_vs_realesrganer"] = seconds / best
    return report


def stage_sweep(ctx: Context) -> dict[str, Any]:
    import torch

    from upscaler.pipeline.options import PipelineOptions, default_options
    from upscaler.pipeline.upscaler import Upscaler

    pixels = ctx.photo_resized(ctx.size["big"])
    spec = ctx.registry.get()
    auto = default_options(ctx.device, spec, ctx.precisions()[-1]).tile
    small = 512 if not ctx.tiny else 16
    configs: list[tuple[str, str, PipelineOptions, bool]] = [
        ("auto tile, batch 1", "fp16", PipelineOptions(auto, 32, 1), True),
        ("auto tile, cudnn.benchmark off", "fp16", PipelineOptions(auto, 32, 1), False),
        ("auto tile, bf16", "bf16", PipelineOptions(auto, 32, 1), True),
        ("whole image", "fp16", PipelineOptions(0, 0, 1), True),
        (f"tile {small}, batch 1", "fp16", PipelineOptions(small, 32, 1), True),
        (f"tile {small}, batch 4", "fp16", PipelineOptions(small, 32, 4), True),
        (f"tile {2 * small}, batch 1", "fp16", PipelineOptions(2 * small, 32, 1), True),
        ("auto tile, fp32", "fp32", PipelineOptions(auto, 32, 1), True),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, precision, options, benchmark in configs:
        if ctx.remaining() < 15:
            results[name] = {"skipped": "out of time"}
            continue
        if precision not in ctx.precisions():
            precision = "fp32"
        upscaler = None
        try:
            upscaler = Upscaler.load(
                ctx.registry, device=ctx.device, precision=precision, options=options
            )
            torch.backends.cudnn.benchmark = benchmark
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats()
            upscaler.warm_up(ctx.size["big"], ctx.size["big"])
            runs = [timed_upscale(upscaler, pixels) for _ in range(2)]
            results[name] = {
                "precision": precision,
                "tile": options.tile,
                "batch": options.batch,
                "model_s": min(r["model_s"] for r in runs),
                "upscale_s": min(r["upscale_s"] for r in runs),
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None,
            }
        except Exception as exc:  # one configuration's failure is a result, not the end
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            upscaler = None
            if ctx.cuda:
                torch.cuda.empty_cache()
    return results


def stage_compiled(ctx: Context) -> dict[str, Any]:
    from upscaler.pipeline.upscaler import Upscaler

    upscaler = Upscaler.load(
        ctx.registry, device=ctx.device, precision=ctx.precisions()[-1], compile=True
    )
    compile_s = upscaler.warm_up(ctx.size["big"], ctx.size["big"])
    pixels = ctx.photo_resized(ctx.size["big"])
    runs = [timed_upscale(upscaler, pixels) for _ in range(2)]
    return {
        "tile": upscaler.options.tile,
        "compile_s": compile_s,
        "model_s": min(r["model_s"] for r in runs),
        "upscale_s": min(r["upscale_s"] for r in runs),
    }


def stage_oom(ctx: Context) -> dict[str, Any]:
    import numpy as np

    from upscaler.pipeline.options import PipelineOptions
    from upscaler.pipeline.upscaler import Upscaler

    side = ctx.size["oom"]
    # fp32, one window: a 4096x4096 input wants ~150 GiB of activations.
    probe = Upscaler.load(
        ctx.registry,
        device=ctx.device,
        precision="fp32",
        options=PipelineOptions(tile=0, overlap=32, batch=1),
    )
    pixels = np.ascontiguousarray(ctx.photo_resized(side))
    started = time.perf_counter()
    result = probe.upscale(pixels)
    return {
        "seconds": time.perf_counter() - started,
        "out_of_memory_events": result.out_of_memory_events,
        "notes": result.notes,
        "pass": result.pixels.shape[:2] == (side * 4, side * 4),
    }


# ---------------------------------------------------------------- helpers


class Context:
    """What every stage shares: device, sizes, the registry, test images, the clock."""

    def __init__(self, device: str, tiny: bool, deadline: float) -> None:
        from upscaler.models.registry import ModelRegistry

        self.device = device
        self.cuda = device.startswith("cuda")
        self.tiny = tiny
        self.size = sizes(tiny)
        self.deadline = deadline
        self.registry = ModelRegistry.from_env()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def precisions(self) -> list[str]:
        return ["fp32", "bf16", "fp16"] if self.cuda else ["fp32"]

    def weights(self, spec: Any) -> Path:
        return self.registry.weights_path(spec)

    def photo(self) -> Any:
        from shared.images import decode_image

        return decode_image((ROOT / "samples" / "chelsea.png").read_bytes()).pixels

    def photo_crop(self, side: int) -> Any:
        import numpy as np

        photo = self.photo()
        top, left = max(0, photo.shape[0] // 2 - side // 2), max(0, photo.shape[1] // 2 - side)
        return np.ascontiguousarray(photo[top : top + side, left : left + side])

    def photo_resized(self, side: int) -> Any:
        return self.resize(self.photo(), side)

    @staticmethod
    def resize(pixels: Any, side: int) -> Any:
        import cv2

        return cv2.resize(pixels, (side, side), interpolation=cv2.INTER_CUBIC)

    @staticmethod
    def noise(side: int) -> Any:
        import numpy as np

        return np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)

    def layouts(self, side: int) -> dict[str, Any]:
        import numpy as np

        rgb = self.photo_crop(side)
        gray = np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8))
        alpha = np.linspace(0, 255, side * side).reshape(side, side).astype(np.uint8)
        return {
            "gray": gray,
            "rgba": np.dstack([rgb, alpha]),
            "16-bit": rgb.astype(np.uint16) * 257,
        }

    def timed(self, work: Callable[[], Any]) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        work()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started


def timed_upscale(upscaler: Any, pixels: Any) -> dict[str, float]:
    started = time.perf_counter()
    result = upscaler.upscale(pixels)
    return {"upscale_s": time.perf_counter() - started, "model_s": result.infer_s}


def difference(ours: Any, theirs: Any) -> dict[str, Any]:
    import numpy as np

    if ours.shape != theirs.shape:
        return {"max": 10**9, "mean": float("inf"), "shapes": [ours.shape, theirs.shape]}
    diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
    return {"max": int(diff.max()), "mean": float(diff.mean())}


def emulate_precision(ctx: Context, pixels: Any, precision: str, reference: Any) -> dict[str, Any]:
    """On the CPU: weights, input and every convolution's output rounded to ``precision``.

    Tensor cores multiply in reduced precision and accumulate in fp32; this
    rounds at the same points (what is stored between layers), so its
    distance from fp32 is what the GPU's should be, give or take rounding.
    """
    import numpy as np
    import torch

    from upscaler.models.weights import load_network

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    spec = ctx.registry.get()
    network = copy.deepcopy(load_network(spec, ctx.weights(spec))).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(parameter.to(dtype).float())
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: out.to(dtype).float())
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        out = network(image.to(dtype).float())
    emulated = (out[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return difference(emulated, reference)


# ---------------------------------------------------------------- the driver


def run_stage(name: str, out: Path, device: str, tiny: bool, deadline: float) -> int:
    """In a process of its own: run one stage, write its result (or its error) as JSON."""
    started = time.perf_counter()
    try:
        ctx = Context(device, tiny, deadline)
        result = {"status": "ok", **globals()[f"stage_{name}"](ctx)}
    except Exception as exc:
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = time.perf_counter() - started
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


def drive(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="smi-gpu-stages-"))  # $OUT holds two files only
    deadline = time.monotonic() + args.budget
    summary: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "device": args.device,
        "tiny": args.tiny,
        "budget_s": args.budget,
        "stages": {},
    }
    log = (out / "gpu.log").open("a")
    wanted = args.only.split(",") if args.only else [name for name, _, _ in STAGES]
    for name, estimate, limit in STAGES:
        if name not in wanted:
            continue
        remaining = deadline - time.monotonic()
        if remaining < (5 if args.tiny else estimate):
            summary["stages"][name] = {"status": "skipped", "why": f"{remaining:.0f}s left"}
            write_json(out / "gpu.json", summary)
            continue
        print(f"== {name} ({remaining:.0f}s left)", flush=True)
        log.write(f"\n== {name}\n")
        log.flush()
        command = [sys.executable, __file__, "--out", str(scratch), "--device", args.device]
        command += ["--stage", name, "--deadline-in", str(remaining)]
        command += ["--tiny"] if args.tiny else []
        try:
            done = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=min(limit, remaining)
            )
            result_file = scratch / f"{name}.json"
            if result_file.exists():
                summary["stages"][name] = json.loads(result_file.read_text())
            else:
                summary["stages"][name] = {"status": "crashed", "exit": done.returncode}
        except subprocess.TimeoutExpired:
            summary["stages"][name] = {"status": "timed out", "limit_s": min(limit, remaining)}
        print(f"   {summary['stages'][name].get('status')}", flush=True)
        write_json(out / "gpu.json", summary)
    summary["seconds"] = args.budget - (deadline - time.monotonic())
    write_json(out / "gpu.json", summary)
    log.close()
    print(json.dumps(summary, indent=1, default=str)[:6000])
    return 0


def write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small images: the rehearsal")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for every stage")
    parser.add_argument("--only", help="comma-separated stages to run (default: all)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-in", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        deadline = time.monotonic() + (args.deadline_in or args.budget)
        return run_stage(args.stage, Path(args.out), args.device, args.tiny, deadline)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
