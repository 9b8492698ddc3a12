"""Which precision the network runs in when none is set: ``auto``.

    >>> choice = choose_precision("auto", "cpu", bf16_keeps_fidelity=True)
    >>> choice.precision, choice.reason
    ('bf16', 'auto: bf16 convolutions ran 2.0x as fast as fp32 on this CPU')

On CUDA ``auto`` is fp16 (tensor cores). On the CPU it is bf16 only where
both hold:

- the network has a bf16 path that keeps its fidelity (``RRDBNet``'s fused
  kernels, which keep the input layer, the residual trunk and the output
  layer in fp32: ``upscaler/models/fused.py``); other networks stay fp32;
- bf16 is measurably faster on this CPU: one convolution of the network's
  commonest shape is timed in both precisions, once per process (about
  0.1 s, at the first ``auto`` choice), and bf16 must be ``BF16_MIN_SPEEDUP``
  times as fast. CPUs with native bf16 (Intel AMX or AVX512-BF16, AMD Zen 4
  and later) pass; elsewhere oneDNN emulates bf16 with fp32 instructions,
  many times slower, and ``auto`` stays fp32. Timing what oneDNN really runs
  honours ``ONEDNN_MAX_CPU_ISA`` (a cap below AVX512_CORE leaves oneDNN no
  bf16 convolution at all, and then nothing is timed).

A precision that is set (``--precision``, ``SMI_WORKER_PRECISION``) is
taken as it is; ``Upscaler`` refuses what the device cannot run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

AUTO = "auto"
PRECISIONS = ("fp32", "fp16", "bf16")
PRECISION_SETTINGS = (AUTO, *PRECISIONS)

# bf16 must be at least this much faster than fp32 to be chosen: native bf16
# measured 1.8-2.0x here (AMD Zen 4: AVX512-BF16's dot products do twice the
# FMAs' work per cycle), more is expected with AMX; bf16 emulated with fp32
# instructions measured 0.35-0.38x (ONEDNN_MAX_CPU_ISA=AVX512_CORE or
# AVX512_CORE_VNNI). The margin keeps a noisy timing from choosing a path
# that does not pay.
BF16_MIN_SPEEDUP = 1.3
# The timed convolution: a dense block's widest 3x3 layer (192 channels in,
# 32 out) on a 48x48 window, best of a few interleaved runs.
_PROBE_CHANNELS = (192, 32)
_PROBE_SIDE = 48
_PROBE_ROUNDS = 7


@dataclass(frozen=True)
class PrecisionChoice:
    """A precision, and why: for the log, ``smi-bench`` and the worker's ``/readyz``."""

    precision: str  # fp32, fp16 or bf16
    reason: str
    automatic: bool  # chosen by ``auto``, not set
    bf16_speedup: float | None = None  # fp32 time / bf16 time of the timed convolution


def bf16_kernels_available() -> bool:
    """Whether oneDNN has a bf16 convolution here at all (honours ``ONEDNN_MAX_CPU_ISA``).

    True also where it is only emulated (AVX-512 without BF16): timing tells those apart.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_pays(speedup: float | None) -> bool:
    """Whether a measured fp32/bf16 time ratio makes bf16 worth its lost mantissa bits."""
    return speedup is not None and speedup >= BF16_MIN_SPEEDUP


def time_bf16_speedup(rounds: int = _PROBE_ROUNDS) -> float:
    """fp32 time over bf16 time of one convolution through oneDNN's kernels.

    Best of ``rounds`` each, interleaved, on one thread and in this thread's CPU
    time: the ratio is the core's, and neither another process taking the core
    for a while nor an OpenMP barrier waiting on a descheduled thread counts
    (both moved wall-clock ratios on two busy cores from 1.0x to 24x).
    """
    side, (channels_in, channels_out) = _PROBE_SIDE, _PROBE_CHANNELS
    generator = torch.Generator().manual_seed(0)
    window = torch.rand(1, channels_in, side, side, generator=generator)
    weight = torch.randn(channels_out, channels_in, 3, 3, generator=generator) * 0.02
    bias = torch.zeros(channels_out)
    last = torch.channels_last
    operands = {
        dtype: (
            window.to(dtype).contiguous(memory_format=last),
            weight.to(dtype).contiguous(memory_format=last),
            bias,
        )
        for dtype in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(operands, float("inf"))
    one = [1, 1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for step in range(rounds + 1):  # the first builds each kernel: not counted
                for dtype, (x, w, b) in operands.items():
                    started = time.thread_time()
                    torch.ops.mkldnn._convolution_pointwise(
                        x, w, b, one, one, one, 1, "none", [], ""
                    )
                    if step:
                        best[dtype] = min(best[dtype], time.thread_time() - started)
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32] / best[torch.bfloat16]


_measured: dict[str, float | None] = {}
_measuring = threading.Lock()


def cpu_bf16_speedup() -> float | None:
    """This CPU's bf16 speed-up, measured once per process; ``None`` without bf16 kernels."""
    with _measuring:
        if "speedup" not in _measured:
            _measured["speedup"] = time_bf16_speedup() if bf16_kernels_available() else None
        return _measured["speedup"]


def choose_precision(
    requested: str, device: str | torch.device, *, bf16_keeps_fidelity: bool
) -> PrecisionChoice:
    """Resolve ``requested`` (``auto`` or a precision) for a network on ``device``.

    ``bf16_keeps_fidelity``: whether the network would run the CPU's bf16 path that
    keeps the input, trunk and output layers in fp32 (the fused ``RRDBNet``).
    """
    if requested != AUTO:
        return PrecisionChoice(requested, f"{requested}: set", automatic=False)
    if torch.device(device).type == "cuda":
        return PrecisionChoice("fp16", "auto: fp16 on CUDA", automatic=True)
    if not bf16_keeps_fidelity:
        return PrecisionChoice(
            "fp32", "auto: fp32 (this network has no bf16 CPU path that keeps fidelity)", True
        )
    speedup = cpu_bf16_speedup()
    if speedup is None:
        why = "oneDNN has no bf16 convolution on this CPU (or ONEDNN_MAX_CPU_ISA holds it back)"
        return PrecisionChoice("fp32", f"auto: fp32 ({why})", automatic=True)
    timed = f"bf16 convolutions ran {speedup:.1f}x as fast as fp32 on this CPU"
    if bf16_pays(speedup):
        return PrecisionChoice("bf16", f"auto: {timed}", automatic=True, bf16_speedup=speedup)
    return PrecisionChoice(
        "fp32",
        f"auto: fp32 ({timed}; bf16 needs {BF16_MIN_SPEEDUP}x)",
        automatic=True,
        bf16_speedup=speedup,
    )
