"""The model manifest (``shared/models.toml``) as frozen dataclasses.

>>> registry = ModelRegistry.load()
>>> spec = registry.get("RealESRGAN_x4plus")
>>> spec.scale, spec.arch.name
(4, 'RRDBNet')
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from shared.env import EnvReader
from shared.models import MANIFEST
from upscaler.errors import UnknownModelError, WeightsError
from upscaler.models.archs import ARCHITECTURES, Architecture

# The project's models/ folder: the weights (git-ignored) go in its weights/.
PROJECT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: a named network with its weights' provenance."""

    name: str
    description: str
    arch: Architecture
    scale: int
    params: Mapping[str, Any]
    url: str | None
    sha256: str | None
    size_bytes: int | None
    ncnn: str | None
    # Without weights of its own, this model is served as the upstream command's --outscale
    # does: that model's output, resized to this model's scale (Lanczos).
    outscale_from: str | None = None

    @property
    def input_multiple(self) -> int:
        """Input sides must be a multiple of this (pixel-unshuffle networks)."""
        return self.arch.input_multiple(self.scale)

    def build(self) -> nn.Module:
        """A fresh, untrained network of this model's shape."""
        return self.arch.build(self.scale, self.params)


@dataclass(frozen=True)
class ModelRegistry:
    """Every model in a manifest, and where their weight files live."""

    models: Mapping[str, ModelSpec]
    default_name: str
    weights_dir: Path

    @classmethod
    def load(cls, models_dir: Path | None = None, weights_dir: Path | None = None) -> ModelRegistry:
        """Read ``shared/models.toml`` (or ``models_dir/manifest.toml``, a manifest of one's
        own); raise ``ValueError`` if it is malformed. The weights are in ``weights_dir``,
        else the ``weights/`` beside that manifest (``models/weights/`` for the project's)."""
        manifest_path = MANIFEST if models_dir is None else models_dir / "manifest.toml"
        with manifest_path.open("rb") as fh:
            manifest = tomllib.load(fh)
        models = {name: _spec_from_entry(name, entry) for name, entry in manifest["models"].items()}
        for spec in models.values():
            source = models.get(spec.outscale_from or spec.name)
            if source is None or (spec.outscale_from and source.scale <= spec.scale):
                raise ValueError(
                    f"{manifest_path}: {spec.name} is outscaled from {spec.outscale_from!r}, "
                    "which must be a listed model of a larger scale"
                )
        default_name = manifest["default"]
        if default_name not in models:
            raise ValueError(f"{manifest_path}: default model {default_name!r} is not listed")
        return cls(
            models, default_name, weights_dir or (models_dir or PROJECT_MODELS_DIR) / "weights"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ModelRegistry:
        """The project's manifest, or ``SMI_MODELS_DIR`` / ``SMI_WEIGHTS_DIR`` when set."""
        env = EnvReader(environ)
        models_dir, weights_dir = env.text("MODELS_DIR"), env.text("WEIGHTS_DIR")
        return cls.load(
            Path(models_dir) if models_dir else None, Path(weights_dir) if weights_dir else None
        )

    def get(self, name: str | None = None) -> ModelSpec:
        """The named model, or the default; ``UnknownModelError`` if it is not listed."""
        name = name or self.default_name
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models.values())

    def official_path(self, spec: ModelSpec) -> Path:
        """Where ``smi-models fetch`` puts the official release file."""
        return self.weights_dir / f"{spec.name}.pth"

    def converted_path(self, spec: ModelSpec) -> Path:
        """Where ``smi-models import-ncnn`` puts weights converted from ncnn."""
        return self.weights_dir / f"{spec.name}.ncnn.pth"

    def weights_path(self, spec: ModelSpec) -> Path:
        """The weight file to use: the official one if present, else the converted one."""
        for path in (self.official_path(spec), self.converted_path(spec)):
            if path.is_file():
                return path
        hint = f"smi-models fetch {spec.name}"
        if spec.ncnn:
            hint += " (or, offline, smi-models import-ncnn)"
        raise WeightsError(f"no weights for {spec.name} in {self.weights_dir}; run {hint}")


def _spec_from_entry(name: str, entry: Mapping[str, Any]) -> ModelSpec:
    arch_name = entry["arch"]
    if arch_name not in ARCHITECTURES:
        raise ValueError(f"model {name}: unknown architecture {arch_name!r}")
    return ModelSpec(
        name=name,
        description=entry.get("description", ""),
        arch=ARCHITECTURES[arch_name],
        scale=int(entry["scale"]),
        params=dict(entry.get("params", {})),
        url=entry.get("url"),
        sha256=entry.get("sha256"),
        size_bytes=entry.get("size_bytes"),
        ncnn=entry.get("ncnn"),
        outscale_from=entry.get("outscale_from"),
    )
