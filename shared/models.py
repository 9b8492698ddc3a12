"""The models a job may name, and what each makes, from ``shared/models.toml``: every
fact of a model is there, once.

    >>> scale_of("RealESRGAN_x2plus")
    2
    >>> MODELS["RealESRGAN_x4plus_anime_6B"].kind
    'illustration'

The gateway, which has no PyTorch, prices and describes the models from here;
the workers build and load them from the same file
(``upscaler.models.registry``), which adds the architecture, its parameters
and the weights' provenance.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

MANIFEST = Path(__file__).with_name("models.toml")
KINDS = ("photo", "illustration")


@dataclass(frozen=True)
class ModelInfo:
    """What a buyer is sold: how much larger, and for which kind of picture."""

    scale: int
    kind: str  # "photo" or "illustration": the label the buyer reads
    description: str = ""


def _load() -> tuple[str, dict[str, ModelInfo]]:
    manifest = tomllib.loads(MANIFEST.read_text())
    models = {
        name: ModelInfo(int(entry["scale"]), str(entry["kind"]), str(entry.get("description", "")))
        for name, entry in manifest["models"].items()
    }
    for name, info in models.items():
        if info.kind not in KINDS:
            raise ValueError(f"{MANIFEST}: {name}'s kind must be one of {KINDS}, not {info.kind!r}")
    return str(manifest["default"]), models


DEFAULT_MODEL, MODELS = _load()


def scale_of(model: str) -> int:
    """How many times larger ``model`` makes each side; ``KeyError`` for an unknown model."""
    return MODELS[model].scale
