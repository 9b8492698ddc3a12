"""How fast an 8000x8000 upscaled photo is written as PNG: ours against OpenCV.

    python scripts/png_bench.py [--repeat 5] [--size 8000] [--json out/png-bench.json]

The image is real Real-ESRGAN output: the four bundled photos (at most
500x500 of each) upscaled 4x by our pipeline on this machine's CPU, cut
into 2000x2000 tiles and laid out 4x4, each tile flipped differently from
its neighbours so that deflate's 32 KiB window never sees a repeat. The
first run makes it (a few minutes on 2 cores) and keeps it in
``out/png-bench-source.npy``.

Every encoder's output is decoded again and compared with the pixels.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.images import decode_image  # noqa: E402
from upscaler.output import png  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "grass")
TILE = 2000


def upscaled_photos() -> list[np.ndarray]:
    """Each bundled photo's centre (at most 500x500), upscaled 4x by RealESRGAN_x4plus."""
    from upscaler.models.registry import ModelRegistry
    from upscaler.pipeline.upscaler import Upscaler

    upscaler = Upscaler.load(ModelRegistry.from_env())
    outputs = []
    for name in PHOTOS:
        pixels = decode_image((ROOT / "samples" / f"{name}.png").read_bytes()).pixels
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        top = max(0, (pixels.shape[0] - 500) // 2)
        left = max(0, (pixels.shape[1] - 500) // 2)
        crop = np.ascontiguousarray(pixels[top : top + 500, left : left + 500, :3])
        print(f"upscaling {name} {crop.shape[1]}x{crop.shape[0]} ...", flush=True)
        outputs.append(upscaler.upscale(crop).pixels)
    return outputs


def mosaic(outputs: list[np.ndarray], size: int) -> np.ndarray:
    """``size`` x ``size`` of 2000x2000 tiles, neighbours differing in photo or flip."""
    tiles = [cv2.resize(o, (TILE, TILE), interpolation=cv2.INTER_AREA) for o in outputs]
    flips: list[Callable[[np.ndarray], np.ndarray]] = [
        lambda t: t,
        lambda t: t[:, ::-1],
        lambda t: t[::-1],
        lambda t: t[::-1, ::-1],
    ]
    count = -(-size // TILE)
    rows = []
    for r in range(count):
        row = [flips[(r + c) % 4](tiles[(r * 3 + c) % len(tiles)]) for c in range(count)]
        rows.append(np.hstack(row))
    return np.ascontiguousarray(np.vstack(rows)[:size, :size])


def source_image(size: int) -> np.ndarray:
    cache = ROOT / "out" / "png-bench-source.npy"
    if cache.exists():
        pixels = np.load(cache)
    else:
        pixels = mosaic(upscaled_photos(), 8000)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, pixels)
    return np.ascontiguousarray(pixels[:size, :size])


def opencv_png(level: int) -> Callable[[np.ndarray], bytes]:
    def encode(pixels: np.ndarray) -> bytes:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # as our callers would have to
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, level])
        assert ok
        return data.tobytes()

    return encode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pixels = source_image(args.size)
    cores = png._cpu_count()
    encoders: dict[str, Callable[[np.ndarray], bytes]] = {
        f"ours ({png.DEFLATE_LIBRARY} level {png.DEFLATE_LEVEL}, {cores} threads)": png.encode_png,
        "ours, 1 thread": lambda p: png.encode_png(p, threads=1),
        "OpenCV level 3": opencv_png(3),
        "OpenCV level 1": opencv_png(1),
    }
    results = {}
    reference_size = None
    for name, encode in encoders.items():
        seconds, data = [], b""
        for _ in range(args.repeat):
            started = time.perf_counter()
            data = encode(pixels)
            seconds.append(time.perf_counter() - started)
        same = np.array_equal(decode_image(data, max_pixels=args.size**2).pixels, pixels)
        if name == "OpenCV level 3":
            reference_size = len(data)
        results[name] = {
            "best_s": min(seconds),
            "median_s": statistics.median(seconds),
            "bytes": len(data),
            "same_pixels": same,
        }
    print(f"{args.size}x{args.size} RGB, {pixels.nbytes / 1e6:.0f} MB of pixels, {cores} cores")
    print(f"{'encoder':<36} {'best':>7} {'median':>7} {'MB':>7} {'size':>6}  pixels")
    for name, r in results.items():
        ratio = r["bytes"] / reference_size if reference_size else float("nan")
        print(
            f"{name:<36} {r['best_s']:>6.2f}s {r['median_s']:>6.2f}s "
            f"{r['bytes'] / 1e6:>7.1f} {ratio:>5.3f}x  {'same' if r['same_pixels'] else 'DIFFER'}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": platform.processor() or platform.machine(), "cores": cores}
        args.json.write_text(json.dumps({**report, "results": results}, indent=2) + "\n")
    return 0 if all(r["same_pixels"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
