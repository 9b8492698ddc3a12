"""``smi-compare``: upscale a bundled photo with real weights and show the difference.

Writes the 4x result and a side-by-side PNG (bicubic on the left,
Real-ESRGAN on the right) into the output folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from shared.images import decode_image
from upscaler.errors import UpscalerError
from upscaler.models.registry import PROJECT_MODELS_DIR, ModelRegistry
from upscaler.output.files import write_bytes_atomically
from upscaler.output.images import encode_image
from upscaler.pipeline.upscaler import Upscaler

SAMPLE = PROJECT_MODELS_DIR.parent / "samples" / "chelsea.png"
# The cat's eye and the fur around it: 160x160, about half a minute on two CPU cores.
CROP = (slice(40, 200), slice(140, 300))


def side_by_side(left: np.ndarray, right: np.ndarray, labels: tuple[str, str]) -> np.ndarray:
    """Two equal-size RGB images next to each other, each labelled in its corner."""
    gap = np.full((left.shape[0], 8, 3), 255, dtype=np.uint8)
    canvas = np.ascontiguousarray(np.hstack([left, gap, right]))
    for x, label in ((8, labels[0]), (left.shape[1] + 16, labels[1])):
        for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(
                canvas,
                label,
                (x, 28),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.8,
                colour,
                thickness,
                cv2.LINE_AA,
            )
    return canvas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smi-compare", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("out/demo"))
    args = parser.parse_args(argv)
    try:
        photo = decode_image(SAMPLE.read_bytes()).pixels[CROP]
        upscaler = Upscaler.load(ModelRegistry.from_env())
        started = time.perf_counter()
        result = upscaler.upscale(photo)
        seconds = time.perf_counter() - started
    except UpscalerError as exc:
        print(f"smi-compare: error: {exc}", file=sys.stderr)
        return 1
    height, width = result.pixels.shape[:2]
    bicubic = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
    upscaled_path = args.output_dir / "chelsea-4x.png"
    compare_path = args.output_dir / "chelsea-compare.png"
    write_bytes_atomically(upscaled_path, encode_image(result.pixels, "png"))
    comparison = side_by_side(bicubic, result.pixels, ("bicubic 4x", f"{upscaler.spec.name}"))
    write_bytes_atomically(compare_path, encode_image(comparison, "png"))
    print(
        f"{photo.shape[1]}x{photo.shape[0]} -> {width}x{height} with {upscaler.spec.name} "
        f"on {upscaler.device} in {seconds:.1f}s"
    )
    print(f"result:     {upscaled_path}")
    print(f"comparison: {compare_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
