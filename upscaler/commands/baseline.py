"""The reference implementation, ``realesrgan.RealESRGANer``, on our weights.

Used by ``smi-bench --baseline`` and the tests as the yardstick for both
pixels and speed. It takes and returns BGR-ordered arrays, as OpenCV does.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.models._compat import install_torchvision_functional_tensor
from upscaler.models.registry import ModelSpec


def reference_upscaler(
    spec: ModelSpec,
    weights: Path,
    *,
    tile: int = 0,
    tile_pad: int = 10,
    pre_pad: int = 0,
    half: bool = False,
    device: str = "cpu",
) -> Any:
    """A ``RealESRGANer`` for ``spec`` with ``weights`` loaded."""
    install_torchvision_functional_tensor()
    import torch
    from realesrgan import RealESRGANer

    return RealESRGANer(
        scale=spec.scale,
        model_path=str(weights),
        model=spec.build(),
        tile=tile,
        tile_pad=tile_pad,
        pre_pad=pre_pad,
        half=half,
        device=torch.device(device),
    )


def reference_upscale(upsampler: Any, pixels: np.ndarray) -> np.ndarray:
    """Run ``RealESRGANer.enhance`` on RGB-ordered pixels; returns RGB-ordered pixels.

    Its per-tile ``print`` calls are swallowed so benchmarks stay readable.
    """
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    bgr = pixels[..., [2, 1, 0, 3][:channels]] if channels >= 3 else pixels
    with contextlib.redirect_stdout(io.StringIO()):
        output, _ = upsampler.enhance(np.ascontiguousarray(bgr), outscale=upsampler.scale)
    return output[..., [2, 1, 0, 3][:channels]] if channels >= 3 else output
