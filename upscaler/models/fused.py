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

In bf16 (``dtype=torch.bfloat16``, where the CPU has bf16 dot products) the
convolutions of the dense blocks and of the upsampling run in bf16 (oneDNN
accumulates in fp32), but three places stay fp32, because that is where
plain bf16 (``torch.autocast``) loses its precision:

- the first convolution sees the exact pixels: rounding them to bf16's 8
  bits of mantissa alone moved a microscopy crop by 0.84 levels on average
  (46 dB), more than every other layer together;
- the trunk, ``feat + 0.2 * RRDB(feat)`` 23 times over and ``conv_body``'s
  sum, accumulates in fp32 (each block reads a bf16 copy);
- the last convolution writes fp32: bf16 output has steps of a whole level
  near white.

That costs nothing measurable (both end convolutions are 0.2% of the
arithmetic) and gave 50.5 dB where autocast gave 44.2 dB on the same crop,
55-56 dB where it gave 51-53 on photos (README, "bf16 on the CPU").

The object holds only the weights, so any number of threads may call it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The residual scale basicsr's dense blocks and RRDB blocks use.
RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2
FP32, BF16 = torch.float32, torch.bfloat16
_ONE = [1, 1]


def fused_cpu_available() -> bool:
    """Whether this PyTorch has the oneDNN kernels (every x86 and ARM wheel does)."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


class _Conv:
    """One 3x3, stride 1, padding 1 convolution's weights, scaled if asked, in ``dtype``.

    Its input must be in ``dtype``; its output is too.
    """

    def __init__(
        self, conv: nn.Module | torch.Tensor, scale: float = 1.0, dtype: torch.dtype = FP32
    ) -> None:
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
        self.weight = weight.to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = bias  # fp32 either way: oneDNN adds it to its fp32 accumulator
        # The fused sum takes its other operand in the convolution's own dtype.
        self.sum_bias = bias.to(dtype) if bias is not None else None

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
            x, other, self.weight, self.sum_bias, _ONE, _ONE, _ONE, 1, "add", None, None, [], None
        )


class _DenseBlock:
    def __init__(self, block: nn.Module | torch.Tensor, dtype: torch.dtype) -> None:
        *growing, last = (getattr(block, f"conv{i}") for i in range(1, 6))
        self.convs = [_Conv(conv, dtype=dtype) for conv in growing]
        self.last = _Conv(last, RESIDUAL_SCALE, dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs:
            features.append(conv(torch.cat(features, 1) if len(features) > 1 else x, leaky=True))
        return self.last.plus(torch.cat(features, 1), x)


class FusedRRDBNet:
    """A callable with the forward pass of a basicsr ``RRDBNet``, on the CPU.

    It takes and returns fp32 windows; ``dtype=torch.bfloat16`` runs the body in
    bf16 as the module docstring says.
    """

    def __init__(self, network: nn.Module, dtype: torch.dtype = FP32) -> None:
        if dtype not in (FP32, BF16):
            raise ValueError(f"FusedRRDBNet runs fp32 or bf16, not {dtype}")
        self.dtype = dtype
        self.scale = int(network.scale)  # type: ignore[arg-type]
        self.first = _Conv(network.conv_first)
        self.blocks = [
            [
                _DenseBlock(rrdb.rdb1, dtype),
                _DenseBlock(rrdb.rdb2, dtype),
                _DenseBlock(rrdb.rdb3, dtype),
            ]
            for rrdb in network.get_submodule("body").children()
        ]
        self.body = _Conv(network.conv_body, dtype=dtype)
        self.up1 = _Conv(network.conv_up1, dtype=dtype)
        self.up2 = _Conv(network.conv_up2, dtype=dtype)
        self.hr = _Conv(network.conv_hr, dtype=dtype)
        self.last = _Conv(network.conv_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != FP32:
            raise ValueError(f"FusedRRDBNet takes fp32 on the CPU, not {x.dtype} on {x.device}")
        if self.scale in (1, 2):  # as RRDBNet: trade resolution for channels first
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.first(x.contiguous(memory_format=torch.channels_last))
        if self.dtype == FP32:
            trunk = feat
            for rdb1, rdb2, rdb3 in self.blocks:
                trunk = torch.add(trunk, rdb3(rdb2(rdb1(trunk))), alpha=RESIDUAL_SCALE)
            feat = self.body.plus(trunk, feat)
        else:  # the trunk and its sums in fp32, each block on a bf16 copy
            trunk = feat
            for rdb1, rdb2, rdb3 in self.blocks:
                out = rdb3(rdb2(rdb1(trunk.to(self.dtype))))
                trunk = torch.add(trunk, out, alpha=RESIDUAL_SCALE)  # fp32 + bf16: fp32
            feat = torch.add(feat, self.body(trunk.to(self.dtype)))
            feat = feat.to(self.dtype)
        feat = self.up1(F.interpolate(feat, scale_factor=2, mode="nearest"), leaky=True)
        feat = self.up2(F.interpolate(feat, scale_factor=2, mode="nearest"), leaky=True)
        return self.last(self.hr(feat, leaky=True).float())
