"""The fused CPU forward pass computes what basicsr's RRDBNet computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FAST_MODEL, sample
from upscaler.models.archs import ARCHITECTURES
from upscaler.models.fused import FusedRRDBNet, fused_cpu_available
from upscaler.models.weights import load_network
from upscaler.pipeline.precision import bf16_kernels_available
from upscaler.pipeline.upscaler import PipelineOptions, Upscaler


def _photo_batch(size: int, count: int) -> torch.Tensor:
    photo = sample("chelsea")
    crops = [photo[i * size : (i + 1) * size, 150 : 150 + size] for i in range(count)]
    stacked = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    return stacked.contiguous(memory_format=torch.channels_last)


def test_the_oneDNN_kernels_are_there():
    # Every x86 and ARM wheel of PyTorch has them; without them the CPU path is the slow one.
    assert fused_cpu_available()


def test_same_output_as_basicsr_on_real_weights(registry):
    spec = registry.get("RealESRGAN_x4plus")
    network = load_network(spec, registry.weights_path(spec)).eval()
    windows = _photo_batch(20, 2)
    with torch.inference_mode():
        expected = network(windows)
        fused = FusedRRDBNet(network)(windows)
    assert fused.shape == expected.shape == (2, 3, 80, 80)
    assert torch.allclose(fused, expected, atol=1e-4), (fused - expected).abs().max()
    # Not trivially equal: the network really upscaled something.
    assert (expected - torch.nn.functional.interpolate(windows, scale_factor=4)).abs().mean() > 1e-2


@pytest.mark.parametrize("scale", [1, 2])
def test_pixel_unshuffle_variants_match_basicsr(scale):
    # No published weights exist for these variants in the manifest; basicsr's own
    # initialisation stands in, since only the order of operations is in question.
    torch.manual_seed(scale)
    network = (
        ARCHITECTURES["RRDBNet"]
        .build(scale, {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 1})
        .eval()
    )
    windows = _photo_batch(16, 1)
    with torch.inference_mode():
        expected = network(windows)
        fused = FusedRRDBNet(network)(windows)
    assert fused.shape == expected.shape == (1, 3, 16 * scale, 16 * scale)
    assert torch.allclose(fused, expected, atol=1e-5), (fused - expected).abs().max()


def test_only_fp32_windows_on_the_cpu_are_accepted(registry):
    spec = registry.get("RealESRGAN_x4plus")
    network = load_network(spec, registry.weights_path(spec))
    for dtype in (torch.float32, torch.bfloat16):
        with pytest.raises(ValueError, match="fp32 on the CPU"):
            FusedRRDBNet(network, dtype)(torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="fp32 or bf16"):
        FusedRRDBNet(network, torch.float16)


@pytest.mark.skipif(not bf16_kernels_available(), reason="oneDNN has no bf16 convolution here")
def test_in_bf16_the_ends_and_the_trunk_stay_fp32(registry):
    """bf16 inside, fp32 at both ends: the first layer sees exact pixels, the last writes
    fp32, and the result is near basicsr's fp32 output (fidelity: tests/test_precision.py)."""
    spec = registry.get("RealESRGAN_x4plus")
    network = load_network(spec, registry.weights_path(spec)).eval()
    fused = FusedRRDBNet(network, torch.bfloat16)
    assert fused.first.weight.dtype == fused.last.weight.dtype == torch.float32
    assert fused.blocks[0][0].convs[0].weight.dtype == torch.bfloat16
    assert fused.hr.weight.dtype == fused.up1.weight.dtype == torch.bfloat16
    windows = _photo_batch(16, 1)
    with torch.inference_mode():
        expected = network(windows)
        ours = fused(windows)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    difference = (ours - expected).abs() * 255
    assert difference.mean() < 0.5 and difference.max() < 8, difference.max()


def test_the_cpu_pipeline_uses_it_unless_told_not_to(registry):
    whole = PipelineOptions(tile=0)
    fused = Upscaler.load(registry, "RealESRGAN_x4plus", precision="fp32", options=whole)
    plain = Upscaler.load(
        registry, "RealESRGAN_x4plus", precision="fp32", options=whole, fuse=False
    )
    assert fused.fused and isinstance(fused.network, FusedRRDBNet)
    assert not plain.fused and isinstance(plain.network, torch.nn.Module)
    # An architecture without a fused pass runs its module.
    assert not Upscaler.load(registry, FAST_MODEL).fused
    pixels = np.ascontiguousarray(sample("coffee")[100:124, 200:230])
    difference = fused.upscale(pixels).pixels.astype(int) - plain.upscale(pixels).pixels.astype(int)
    assert np.abs(difference).max() <= 1
