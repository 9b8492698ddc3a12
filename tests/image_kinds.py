"""Small images of several kinds, for precision tests and ``scripts/bf16_fidelity.py``.

    >>> pixels = IMAGE_KINDS["line-art"]()      # 48x48x3 uint8 RGB

Photos are crops of the bundled samples; the microscopy crop is the bundled
immunohistochemistry image; the rest are synthesized (no file, same pixels
every time). ``PHOTOS`` must stay within 45 dB and 0.6 levels of
``RealESRGANer`` in fp32 when upscaled in bf16, every kind within 42 dB.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from shared.images import decode_image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SIDE = 48  # a few seconds of fp32 for RealESRGANer per image on two cores


def sample(name: str) -> np.ndarray:
    """A bundled sample as RGB uint8 pixels (grayscale ones as three equal channels)."""
    pixels = decode_image((SAMPLES / f"{name}.png").read_bytes()).pixels
    return np.dstack([pixels] * 3) if pixels.ndim == 2 else pixels


def _flat_saturated() -> np.ndarray:
    """Blocks of pure primaries and secondaries, black and white, a disc across them."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    colours += [(0, 0, 0), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    step = SIDE // 4
    for i in range(4):
        for j in range(4):
            pixels[i * step : (i + 1) * step, j * step : (j + 1) * step] = colours[
                (i * 4 + j * 3) % 8
            ]
    cv2.circle(pixels, (SIDE // 2, SIDE // 2), SIDE // 5, (255, 128, 0), -1)
    return pixels


def _line_art() -> np.ndarray:
    """Thin anti-aliased black and coloured strokes and a letter on white."""
    rng = np.random.default_rng(3)
    pixels = np.full((SIDE, SIDE, 3), 255, np.uint8)
    for k in range(12):
        start, end = (tuple(int(v) for v in rng.integers(0, SIDE, 2)) for _ in range(2))
        colour = (0, 0, 0) if k % 3 else tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(pixels, start, end, colour, 1 + k % 2, cv2.LINE_AA)
    cv2.circle(pixels, (SIDE // 2, SIDE // 3), SIDE // 4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(pixels, "Aa", (3, SIDE - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1)
    return pixels


def _noise() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)


def _fluorescence() -> np.ndarray:
    """Fluorescence microscopy as synthesized: a dark grainy field, saturated blobs, filaments."""
    rng = np.random.default_rng(5)
    field = rng.normal(12, 6, (SIDE, SIDE, 3))
    rows, cols = np.mgrid[:SIDE, :SIDE]
    for k in range(6):
        y, x = rng.uniform(0, SIDE, 2)
        radius = rng.uniform(2, 6)
        blob = np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * radius**2)) * rng.uniform(
            300, 600
        )
        for channel in [(1,), (0, 2), (0, 1)][k % 3]:
            field[..., channel] += blob
    filaments = np.zeros((SIDE, SIDE), np.float32)
    for _ in range(5):
        cv2.polylines(filaments, [rng.integers(0, SIDE, (4, 2)).astype(np.int32)], False, 255, 1)
    field[..., 1] += filaments * 0.8
    field += rng.normal(0, 10, field.shape) * (field > 40)
    return np.clip(field, 0, 255).astype(np.uint8)


def crop(name: str, y: int, x: int, side: int = SIDE) -> np.ndarray:
    """``side`` x ``side`` pixels of a bundled sample from row ``y``, column ``x``."""
    return np.ascontiguousarray(sample(name)[y : y + side, x : x + side])


Kind = Callable[[], np.ndarray]
PHOTOS: dict[str, Kind] = {
    "cat-fur": lambda: crop("chelsea", 90, 170),
    "coffee": lambda: crop("coffee", 150, 250),
    "face": lambda: crop("astronaut", 100, 180),
    "grass": lambda: crop("grass", 200, 200),
}
# Stained tissue under the microscope: rounding its pixels to bf16 alone moved this crop by
# 0.84 levels on average; plain autocast gave 41.6 dB here.
MICROSCOPY_CROP = ("ihc", 96, 96)
OTHERS: dict[str, Kind] = {
    "microscopy": lambda: crop(*MICROSCOPY_CROP),
    "fluorescence": _fluorescence,
    "flat-saturated": _flat_saturated,
    "line-art": _line_art,
    "noise": _noise,
}
IMAGE_KINDS = {**PHOTOS, **OTHERS}
