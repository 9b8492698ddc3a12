"""Network architectures the upscaler can run, described as data.

Each ``Architecture`` says how to build the network from the manifest's
parameters and what the pipeline may do with it. The networks themselves
are the reference definitions from basicsr and realesrgan, so weights load
with ``strict=True`` exactly as upstream trained them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from upscaler.models._compat import install_torchvision_functional_tensor
from upscaler.models.fused import FusedRRDBNet

Forward = Callable[[torch.Tensor], torch.Tensor]


def _build_rrdbnet(scale: int, params: Mapping[str, Any]) -> nn.Module:
    install_torchvision_functional_tensor()
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(scale=scale, **params)


def _build_srvgg(scale: int, params: Mapping[str, Any]) -> nn.Module:
    install_torchvision_functional_tensor()
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    if params.get("upscale", scale) != scale:
        raise ValueError(f"SRVGGNetCompact upscale {params['upscale']} != model scale {scale}")
    return SRVGGNetCompact(**{**params, "upscale": scale})


def _rrdb_input_multiple(scale: int) -> int:
    # RRDBNet pixel-unshuffles x2 and x1 inputs, so their sides must divide evenly.
    return {1: 4, 2: 2}.get(scale, 1)


@dataclass(frozen=True)
class Architecture:
    """What the pipeline needs to know about one network family."""

    name: str
    build: Callable[[int, Mapping[str, Any]], nn.Module]
    supports_half: bool
    supports_tiling: bool
    input_multiple: Callable[[int], int]
    # Peak bytes of activations per window pixel at x4 in fp32 (half in fp16),
    # from which a CUDA tile is sized (``upscaler.pipeline.options.fit_to_memory``).
    activation_bytes: int
    # A faster CPU forward pass over the same weights, in fp32 or bf16 (the dtype given),
    # where there is one; ``auto`` picks bf16 on the CPU only through it.
    fused_cpu: Callable[[nn.Module, torch.dtype], Forward] | None = None


ARCHITECTURES: Mapping[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            name="RRDBNet",
            build=_build_rrdbnet,
            supports_half=True,
            supports_tiling=True,
            input_multiple=_rrdb_input_multiple,
            # Measured: the live tensors' high-water mark over a forward pass of
            # x4plus and x4plus_anime_6B at 64x64 and 96x96, 9,472 bytes a pixel
            # (the 4x-upsampled 64-channel maps dominate; x2 needs less).
            activation_bytes=9472,
            fused_cpu=FusedRRDBNet,
        ),
        Architecture(
            name="SRVGGNetCompact",
            build=_build_srvgg,
            supports_half=True,
            supports_tiling=True,
            input_multiple=lambda scale: 1,
            activation_bytes=512,  # measured the same way on realesr-animevideov3
        ),
    )
}
