"""RRDBNet's forward pass on the CPU with oneDNN's fused convolutions.

The same arithmetic as basicsr's ``RRDBNet.forward`` on the same weights,
written as calls to ``mkldnn._convolution_pointwise``, the kernel that
``torch.compile`` emits on the CPU, so that nothing has to be compiled:

- each LeakyReLU runs inside the convolution before it, on the output while
  it is still in cache, instead of as a pass of its own over memory;
- each dense block's ``conv5(...) * 0.2 + x`` is one convolution with the
  0.2 folded into its weights and the sum done by the kernel, and
  ``feat + conv_body(...)`` likewise.

Convolutions are then ~90% of the time and run near the machine's fp32
rate; the rest is mostly the dense blocks' concatenations. Prepacking the
weights into oneDNN's blocked layout made no measurable difference, so they
stay in the ordinary channels_last layout. ``smi-bench --no-fuse`` runs
basicsr's module instead, for comparison (README, "Speed on this CPU").

The object holds only the weights, so any number of threads may call it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The residual scale basicsr's dense blocks and RRDB blocks use.
RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2
_ONE = [1, 1]


def fused_cpu_available() -> bool:
    """Whether this PyTorch has the oneDNN kernels (every x86 and ARM wheel does)."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


class _Conv:
    """One 3x3, stride 1, padding 1 convolution's weights, scaled if asked."""

    def __init__(self, conv: nn.Module | torch.Tensor, scale: float = 1.0) -> None:
        if not (
            isinstance(conv, nn.Conv2d)
            and (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
        ):
            raise ValueError(f"expected a 3x3 convolution with stride 1 and padding 1: {conv}")
        weight = conv.weight.detach().float()
        bias = conv.bias.detach().float() if conv.bias is not None else None
        if scale != 1.0:
            weight = weight * scale
            bias = bias * scale if bias is not None else None
        self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias

    def __call__(self, x: torch.Tensor, *, leaky: bool = False) -> torch.Tensor:
        """``conv(x)``, through a LeakyReLU when ``leaky``."""
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            self.weight,
            self.bias,
            _ONE,
            _ONE,
            _ONE,
            1,
            "leaky_relu" if leaky else "none",
            [LEAKY_SLOPE] if leaky else [],
            "",
        )

    def plus(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``conv(x) + other`` in one kernel."""
        return torch.ops.mkldnn._convolution_pointwise(
            x, other, self.weight, self.bias, _ONE, _ONE, _ONE, 1, "add", None, None, [], None
        )


class _DenseBlock:
    def __init__(self, block: nn.Module | torch.Tensor) -> None:
        *growing, last = (getattr(block, f"conv{i}") for i in range(1, 6))
        self.convs = [_Conv(conv) for conv in growing]
        self.last = _Conv(last, RESIDUAL_SCALE)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs:
            features.append(conv(torch.cat(features, 1) if len(features) > 1 else x, leaky=True))
        return self.last.plus(torch.cat(features, 1), x)


class FusedRRDBNet:
    """A callable with the forward pass of a basicsr ``RRDBNet``, on the CPU, fp32."""

    def __init__(self, network: nn.Module) -> None:
        self.scale = int(network.scale)  # type: ignore[arg-type]
        self.first = _Conv(network.conv_first)
        self.blocks = [
            [_DenseBlock(rrdb.rdb1), _DenseBlock(rrdb.rdb2), _DenseBlock(rrdb.rdb3)]
            for rrdb in network.get_submodule("body").children()
        ]
        self.body = _Conv(network.conv_body)
        self.up1 = _Conv(network.conv_up1)
        self.up2 = _Conv(network.conv_up2)
        self.hr = _Conv(network.conv_hr)
        self.last = _Conv(network.conv_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            raise ValueError(f"FusedRRDBNet runs fp32 on the CPU, not {x.dtype} on {x.device}")
        if self.scale in (1, 2):  # as RRDBNet: trade resolution for channels first
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.first(x.contiguous(memory_format=torch.channels_last))
        trunk = feat
        for rdb1, rdb2, rdb3 in self.blocks:
            trunk = torch.add(trunk, rdb3(rdb2(rdb1(trunk))), alpha=RESIDUAL_SCALE)
        feat = self.body.plus(trunk, feat)
        feat = self.up1(F.interpolate(feat, scale_factor=2, mode="nearest"), leaky=True)
        feat = self.up2(F.interpolate(feat, scale_factor=2, mode="nearest"), leaky=True)
        return self.last(self.hr(feat, leaky=True))
