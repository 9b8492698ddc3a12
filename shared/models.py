"""The models a job may name, and what each makes: the scale is a property of the model.

    >>> scale_of("RealESRGAN_x2plus")
    2

Workers load the models from ``models/manifest.toml`` (``upscaler.models.registry``);
the gateway, which has neither PyTorch nor the manifest, prices and
describes them from here. ``tests/test_shared.py`` checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "RealESRGAN_x4plus"


@dataclass(frozen=True)
class ModelInfo:
    """What a buyer is sold: how much larger, and for which kind of picture."""

    scale: int
    kind: str  # "photo" or "illustration": the label the buyer reads


MODELS = {
    "RealESRGAN_x4plus": ModelInfo(4, "photo"),
    "RealESRGAN_x4plus_anime_6B": ModelInfo(4, "illustration"),
    "RealESRGAN_x2plus": ModelInfo(2, "photo"),
    "realesr-animevideov3": ModelInfo(4, "illustration"),
    "realesr-general-x4v3": ModelInfo(4, "photo"),
}


def scale_of(model: str) -> int:
    """How many times larger ``model`` makes each side; ``KeyError`` for an unknown model."""
    return MODELS[model].scale
