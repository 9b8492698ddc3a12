"""The tile pipeline: pixels in, 4x pixels out.

    >>> upscaler = Upscaler.load(ModelRegistry.from_env(), device="cpu")
    >>> result = upscaler.upscale(pixels)          # HxW, HxWx2, HxWx3 or HxWx4, uint8/uint16
    >>> result.pixels.shape                        # (4H, 4W, ...) same layout and dtype

Colour goes through the network as RGB; grayscale is run as three equal
channels and brought back to one with the BT.601 weights; an alpha channel
is run through the network as its own grayscale plane, which is what
``RealESRGANer`` does by default. Crops, placement and quantisation happen
on the device, so only the finished uint8/uint16 image crosses back.

An ``Upscaler`` keeps no state between calls: every call plans, allocates
and adapts (batch size, tile size after an out-of-memory error) in local
variables, so one instance can serve several threads.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from upscaler.errors import InvalidOptionsError, OutOfMemoryError, WeightsError
from upscaler.models.fused import fused_cpu_available
from upscaler.models.registry import ModelRegistry, ModelSpec
from upscaler.models.weights import load_network
from upscaler.pipeline.options import (
    Overrides,
    PipelineOptions,
    check_device,
    default_options,
)
from upscaler.pipeline.precision import (
    AUTO,
    PRECISION_SETTINGS,
    PrecisionChoice,
    bf16_kernels_available,
    choose_precision,
)
from upscaler.pipeline.tiles import Tile, plan_tiles, smallest_core, split_tile

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
# ITU-R BT.601 luma, the weights cv2.COLOR_BGR2GRAY uses, so grayscale output
# matches RealESRGANer's to the level.
LUMA = (0.299, 0.587, 0.114)
# Below this core side, splitting tiles further after an out-of-memory error
# costs more in overlap than it saves in memory: give up instead.
MIN_CORE_PIXELS = 16
# The image a worker warms up on: the product's typical photo.
WARM_UP_SIDE = 2000

Progress = Callable[[int, int], None]
_T = TypeVar("_T")


@dataclass
class UpscaleResult:
    """The upscaled pixels and what it took to make them."""

    pixels: np.ndarray
    tiles: int
    infer_s: float = 0.0
    assemble_s: float = 0.0
    out_of_memory_events: int = 0
    final_batch: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Plane:
    """One 3-channel image to run through the network, and how to store its result."""

    pixels: torch.Tensor  # (3, H, W) float on the device, 0..1
    target: torch.Tensor  # (channels, sH, sW) quantised output on the device
    to_gray: bool


def outscaled(pixels: np.ndarray, factor: float) -> np.ndarray:
    """``pixels`` resized by ``factor`` with Lanczos, as upstream's ``--outscale`` does (its
    ``cv2.resize(..., interpolation=cv2.INTER_LANCZOS4)``); layout and dtype kept."""
    height, width = pixels.shape[:2]
    size = (round(width * factor), round(height * factor))
    resized = cv2.resize(pixels, size, interpolation=cv2.INTER_LANCZOS4)
    return resized.reshape(size[1], size[0], *pixels.shape[2:])


class Upscaler:
    """A loaded network on a device, ready to upscale images in tiles."""

    def __init__(
        self,
        spec: ModelSpec,
        network: nn.Module,
        *,
        device: str | torch.device = "cpu",
        precision: str = AUTO,
        options: PipelineOptions | Overrides | None = None,
        compile: bool = False,
        fuse: bool = True,
    ) -> None:
        self.spec = spec
        # The scale of what ``upscale`` returns: the network's, unless it stands in for a
        # model of a smaller scale (``load``: outscale_from).
        self.outscale = spec.scale
        self.device = check_device(device)
        if precision not in PRECISION_SETTINGS:
            raise InvalidOptionsError(
                f"precision must be auto, fp32, fp16 or bf16, not {precision!r}"
            )
        cpu = self.device.type == "cpu"
        fused = spec.arch.fused_cpu
        if not (fuse and fused and not compile and cpu and fused_cpu_available()):
            fused = None
        # "auto": upscaler/pipeline/precision.py (bf16 on the CPU only through the fused kernels).
        self.precision_choice: PrecisionChoice = choose_precision(
            precision,
            self.device,
            bf16_keeps_fidelity=fused is not None and spec.arch.supports_half,
        )
        self.precision = precision = self.precision_choice.precision
        if cpu and precision == "fp16":
            raise InvalidOptionsError("on the CPU fp16 is not supported (fp32 or bf16)")
        if cpu and precision == "bf16" and not bf16_kernels_available():
            raise InvalidOptionsError(
                "this CPU has no bf16 convolutions (oneDNN, within ONEDNN_MAX_CPU_ISA): "
                "use fp32 or auto"
            )
        if precision != "fp32" and not spec.arch.supports_half:
            raise InvalidOptionsError(f"{spec.name} does not run in {precision}")
        self.compiled = compile
        self.dtype = DTYPES[precision]
        # On the CPU the network takes fp32 windows whatever its precision: the fused bf16
        # pass convolves the exact pixels first, autocast casts them itself.
        self.input_dtype = torch.float32 if cpu else self.dtype
        if self.device.type == "cuda":
            # Every window of a plan has one shape, so cuDNN's search for the
            # fastest kernels pays off from the second window on.
            torch.backends.cudnn.benchmark = True
            if precision == "fp32":
                # fp32 means IEEE fp32, as on the CPU: PyTorch lets cuDNN convolve
                # fp32 in TF32 (10-bit mantissa) unless told otherwise. A worker
                # process serves one precision, so the process-wide switch is fine.
                torch.backends.cudnn.allow_tf32 = False
        network = network.eval().requires_grad_(False)
        # channels_last: the layout oneDNN and cuDNN convolve fastest (1.17x here on CPU).
        # On the CPU the module keeps fp32 weights: bf16 is the fused pass's or autocast's.
        network = network.to(self.device, dtype=torch.float32 if cpu else self.dtype)
        network = network.to(memory_format=torch.channels_last)
        forward: Callable[[torch.Tensor], torch.Tensor] = network
        if cpu and precision == "bf16":
            forward = _Autocast(network)
        self.network = forward
        if fused is not None:
            # The same weights through oneDNN's fused kernels (upscaler/models/fused.py).
            self.network = fused(network, self.dtype)
        self.fused = fused is not None
        log.info("%s on %s: %s", spec.name, self.device, self.precision_choice.reason)
        if not isinstance(options, PipelineOptions):
            overrides = options or Overrides()
            if compile and overrides.lanes is None:
                overrides = replace(overrides, lanes=1)  # see _check
            # Sized after the weights are on the device: a CUDA tile fits what is left.
            options = default_options(self.device, spec, precision, overrides)
        self.options = options
        self._check(self.options)
        if compile:
            # Inductor fuses the activations and residual sums into the
            # convolutions. On the CPU, freezing prepacks the weights for
            # oneDNN and each new window shape compiles once (about 90 s on 2
            # cores), which is why every window of a plan has one shape. On
            # CUDA the graph is compiled with symbolic sizes, so one compilation
            # serves the windows of every image size a worker meets.
            cuda = self.device.type == "cuda"
            self.network = torch.compile(
                forward, dynamic=cuda, options=None if cuda else {"freezing": True}
            )

    def warm_up(self, height: int = WARM_UP_SIDE, width: int = WARM_UP_SIDE) -> float:
        """Run the network once on the window shape of a ``height`` x ``width`` image.

        A compiled network compiles here, cuDNN picks its kernels here: the
        first job then runs at full speed. Returns the seconds it took.
        """
        plan = plan_tiles(height, width, self.options.tile, self.options.overlap)
        multiple = self.spec.input_multiple
        shape = (
            self.options.batch,
            3,
            _round_up(plan.window_height, multiple),
            _round_up(plan.window_width, multiple),
        )
        started = time.perf_counter()
        with torch.inference_mode():
            windows = torch.zeros(shape, dtype=self.input_dtype, device=self.device)
            self.network(windows.contiguous(memory_format=torch.channels_last))
            _Clock.wait(_Clock(self.device).mark())
        return time.perf_counter() - started

    @classmethod
    def load(
        cls,
        registry: ModelRegistry,
        model: str | None = None,
        *,
        weights: Path | None = None,
        device: str | torch.device = "cpu",
        precision: str = AUTO,
        options: PipelineOptions | Overrides | None = None,
        compile: bool = False,
        fuse: bool = True,
    ) -> Upscaler:
        """Look ``model`` up in the registry, load its weights and move it to ``device``.

        A model without weights of its own but ``outscale_from`` another (the 2x model,
        whose weights only the project's GitHub has) is that model, its output resized
        to this model's scale (``Upscaler.outscale``), as upstream's ``--outscale`` does.
        """
        spec = registry.get(model)
        if weights is None and spec.outscale_from:
            try:
                weights = registry.weights_path(spec)
            except WeightsError:
                source = cls.load(
                    registry,
                    spec.outscale_from,
                    device=device,
                    precision=precision,
                    options=options,
                    compile=compile,
                    fuse=fuse,
                )
                log.info(
                    "%s has no weights here: %s, resized to %dx",
                    spec.name,
                    source.spec.name,
                    spec.scale,
                )
                source.outscale = spec.scale
                return source
        network = load_network(spec, weights or registry.weights_path(spec))
        return cls(
            spec,
            network,
            device=device,
            precision=precision,
            options=options,
            compile=compile,
            fuse=fuse,
        )

    def upscale(
        self,
        pixels: np.ndarray,
        *,
        options: PipelineOptions | None = None,
        progress: Progress | None = None,
        out: np.ndarray | None = None,
    ) -> UpscaleResult:
        """Upscale an HxW[xC] uint8/uint16 image; the result keeps its layout and dtype.

        Pixels in pinned memory go up to a GPU asynchronously; ``out``, a host
        array of the result's shape and dtype (pinned for an asynchronous
        copy), receives the result instead of a new array.
        """
        options = options or self.options
        self._check(options)
        height, width, channels = _layout(pixels)
        max_value = float(np.iinfo(pixels.dtype).max)
        scale, multiple = self.spec.scale, self.spec.input_multiple
        out_dtype = torch.uint8 if pixels.dtype == np.uint8 else torch.int32
        shape = (height * scale, width * scale, *pixels.shape[2:])
        if out is not None and (out.shape != shape or out.dtype != pixels.dtype):
            raise InvalidOptionsError(
                f"out must be {shape} {pixels.dtype}, not {out.shape} {out.dtype}"
            )

        host = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))
        source = host.to(self.device, non_blocking=_pinned(host))
        source = source.reshape(height, width, channels).permute(2, 0, 1).float() / max_value
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:  # pixel-unshuffle networks need sides divisible by `multiple`
            mode = "reflect" if min(height, width) > 1 else "replicate"
            source = F.pad(source[None], (0, pad_w, 0, pad_h), mode=mode)[0]
        padded_h, padded_w = height + pad_h, width + pad_w
        color_channels = 3 if channels >= 3 else 1
        color = source[:3] if channels >= 3 else source[:1].expand(3, -1, -1)
        target = torch.empty(
            (channels, padded_h * scale, padded_w * scale), dtype=out_dtype, device=self.device
        )
        planes = [_Plane(color, target[:color_channels], to_gray=color_channels == 1)]
        if channels in (2, 4):
            alpha = source[-1:].expand(3, -1, -1)
            planes.append(_Plane(alpha, target[color_channels:], to_gray=True))

        plan = plan_tiles(padded_h, padded_w, options.tile, options.overlap, multiple)
        result = UpscaleResult(pixels=pixels, tiles=len(plan.tiles) * len(planes))
        clock = _Clock(self.device)
        rounds: list[list[_Marks]] = []
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress:
                progress(done, result.tiles)

        with torch.inference_mode():
            batch = options.batch
            for plane in planes:
                batch = self._run_plane(
                    plane, plan.tiles, batch, options, max_value, result, advance, clock, rounds
                )
            result.final_batch = batch
            copy_started = clock.mark()
            cropped = target[:, : height * scale, : width * scale].permute(1, 2, 0)
            if out is None or out_dtype != torch.uint8:
                pixels_out = cropped.contiguous().cpu().numpy().astype(pixels.dtype, copy=False)
                if out is not None:
                    np.copyto(out, pixels_out.reshape(shape))
                    pixels_out = out
            else:
                destination = torch.from_numpy(out).view(cropped.shape)
                destination.copy_(cropped, non_blocking=_pinned(destination))
                pixels_out = out
            copied = clock.mark()
        clock.wait(copied)
        # Each round lasts as long as its slowest lane.
        for marks in rounds:
            result.infer_s += max(clock.seconds(m.started, m.inferred) for m in marks)
            result.assemble_s += max(clock.seconds(m.inferred, m.placed) for m in marks)
        result.assemble_s += clock.seconds(copy_started, copied)
        result.pixels = pixels_out.reshape(shape)
        if self.outscale != scale:
            result.pixels = outscaled(result.pixels, self.outscale / scale)
            result.notes.append(f"{scale}x output resized to {self.outscale}x (Lanczos)")
        return result

    def _run_plane(
        self,
        plane: _Plane,
        tiles: Sequence[Tile],
        batch: int,
        options: PipelineOptions,
        max_value: float,
        result: UpscaleResult,
        advance: Callable[[int], None],
        clock: _Clock,
        rounds: list[list[_Marks]],
    ) -> int:
        """Run every tile of one plane; returns the batch size that worked.

        Each round's time marks go to ``rounds``, read once the device is done.
        """
        _, height, width = plane.pixels.shape
        pending: deque[Tile] = deque(tiles)
        lanes = options.lanes
        with _Lanes(lanes) as run:
            while pending:
                groups = [_take_batch(pending, batch) for _ in range(lanes) if pending]
                outcomes = run(
                    [partial(self._run_batch, plane, g, max_value, clock) for g in groups]
                )
                failed: list[list[Tile]] = []
                out_of_memory: torch.OutOfMemoryError | None = None
                marks: list[_Marks] = []
                for group, outcome in zip(groups, outcomes, strict=True):
                    if isinstance(outcome, torch.OutOfMemoryError):
                        failed.append(group)
                        out_of_memory = out_of_memory or outcome
                    elif isinstance(outcome, BaseException):
                        raise outcome
                    else:
                        marks.append(outcome)
                        advance(len(group))
                if marks:
                    rounds.append(marks)
                if out_of_memory is None:
                    continue
                for group in reversed(failed):  # back to the front, in their order
                    pending.extendleft(reversed(group))
                result.out_of_memory_events += 1
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if lanes > 1:
                    lanes = 1
                    note = "out of memory: one batch at a time"
                elif batch > 1:
                    batch //= 2
                    note = f"out of memory: batch reduced to {batch}"
                elif smallest_core(pending[0]) >= 2 * MIN_CORE_PIXELS:
                    remaining = list(pending)
                    pending.clear()
                    for tile in remaining:
                        pending.extend(
                            split_tile(
                                tile, height, width, options.overlap, self.spec.input_multiple
                            )
                        )
                    note = f"out of memory: tiles split, core now {smallest_core(pending[0])}px"
                else:
                    raise OutOfMemoryError(
                        f"{self.device} ran out of memory with batch 1 and "
                        f"{smallest_core(pending[0])}px tiles: {out_of_memory}"
                    ) from out_of_memory
                log.warning(note)
                result.notes.append(note)
        return batch

    def _check(self, options: PipelineOptions) -> None:
        """Refuse options this upscaler cannot run (its own at start, or one call's)."""
        if options.lanes > 1 and self.device.type != "cpu":
            raise InvalidOptionsError(f"lanes > 1 is for the CPU, not {self.device}")
        if options.lanes > 1 and self.compiled:
            # Inductor writes each kernel's thread count into its code.
            raise InvalidOptionsError("a compiled network runs one lane; use lanes=1")
        if options.tile and not self.spec.arch.supports_tiling:
            raise InvalidOptionsError(f"{self.spec.name} cannot be tiled; use tile=0")

    def _run_batch(
        self, plane: _Plane, group: list[Tile], max_value: float, clock: _Clock
    ) -> _Marks:
        """Run one group of tiles and place their cores, marking when each step ended.

        On CUDA nothing here waits for the device: the marks are events on its
        stream, so the host queues the next batch while this one runs.
        """
        scale = self.spec.scale
        started = clock.mark()
        windows = torch.stack(
            [
                plane.pixels[
                    :,
                    t.y.window_start : t.y.window_start + t.y.window_size,
                    t.x.window_start : t.x.window_start + t.x.window_size,
                ]
                for t in group
            ]
        )
        windows = windows.to(self.input_dtype).contiguous(memory_format=torch.channels_last)
        output = self.network(windows)
        inferred = clock.mark()
        for tile, out in zip(group, output, strict=True):
            top = (tile.y.core_start - tile.y.window_start) * scale
            left = (tile.x.core_start - tile.x.window_start) * scale
            rows = (tile.y.core_end - tile.y.core_start) * scale
            cols = (tile.x.core_end - tile.x.core_start) * scale
            core = out[:, top : top + rows, left : left + cols].float().clamp_(0, 1)
            if plane.to_gray:
                core = (LUMA[0] * core[0] + LUMA[1] * core[1] + LUMA[2] * core[2])[None]
            plane.target[
                :,
                tile.y.core_start * scale : tile.y.core_start * scale + rows,
                tile.x.core_start * scale : tile.x.core_start * scale + cols,
            ] = core.mul_(max_value).round_()
        return _Marks(started, inferred, clock.mark())


class _Autocast(nn.Module):
    """A module run under CPU autocast to bf16, returning fp32: basicsr's module in bf16
    (``--no-fuse``, ``--compile``, networks without fused kernels), as plain PyTorch
    would run it; fp32 weights stay, autocast casts them per call."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.network(x).float()


Mark = float | torch.cuda.Event


@dataclass(frozen=True)
class _Marks:
    """When one batch started, finished its network pass and finished placing its cores."""

    started: Mark
    inferred: Mark
    placed: Mark


class _Clock:
    """Time on the device's own timeline: the host's clock on the CPU, CUDA events on a GPU.

    Reading an event's time waits for the device, so it is done once, after
    the whole image, never between batches.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Mark:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def wait(mark: Mark) -> None:
        if isinstance(mark, torch.cuda.Event):
            mark.synchronize()

    @staticmethod
    def seconds(start: Mark, end: Mark) -> float:
        if isinstance(start, torch.cuda.Event) and isinstance(end, torch.cuda.Event):
            return start.elapsed_time(end) / 1000
        assert isinstance(start, float) and isinstance(end, float)
        return end - start


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pinned(tensor: torch.Tensor) -> bool:
    """Whether a host tensor is page-locked (so a copy to or from a GPU can be asynchronous)."""
    return torch.cuda.is_available() and tensor.is_pinned()


def _layout(pixels: np.ndarray) -> tuple[int, int, int]:
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InvalidOptionsError(f"pixels must be uint8 or uint16, not {pixels.dtype}")
    if pixels.ndim == 2:
        return pixels.shape[0], pixels.shape[1], 1
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4):
        return pixels.shape[0], pixels.shape[1], pixels.shape[2]
    raise InvalidOptionsError(f"pixels must be HxW or HxWxC with C in 1..4, got {pixels.shape}")


class _Lanes:
    """Runs a round of calls, one per lane, each lane a thread with its share of the cores.

    With one lane the calls run in the caller's thread. Each outcome is the
    call's result or the exception it raised, so the caller can retry what
    ran out of memory and keep what succeeded.
    """

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Callable[[list[Callable[[], _T]]], list[_T | BaseException]]:
        if self.lanes > 1:
            threads = max(1, torch.get_num_threads() // self.lanes)
            self.pool = ThreadPoolExecutor(
                self.lanes,
                thread_name_prefix="upscale-lane",
                initializer=_use_threads,
                initargs=(threads,),
            )
        return self.run

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            # torch.set_num_threads in the lanes also set the count that threads
            # started later begin with; give those the caller's count again.
            torch.set_num_threads(torch.get_num_threads())

    def run(self, calls: list[Callable[[], _T]]) -> list[_T | BaseException]:
        if self.pool is None:
            return [_outcome(call) for call in calls]
        return list(self.pool.map(_outcome, calls))


def _use_threads(count: int) -> None:
    torch.set_num_threads(count)  # this thread's OpenMP team; the caller keeps its own


def _outcome(call: Callable[[], _T]) -> _T | BaseException:
    try:
        with torch.inference_mode():
            return call()
    except torch.OutOfMemoryError as exc:
        # Its traceback holds the failed batch's frames and, through them, every
        # activation the network had made: drop it before the batch is retried.
        return exc.with_traceback(None)
    except Exception as exc:  # handed back to the caller, which decides
        return exc


def _take_batch(pending: deque[Tile], batch: int) -> list[Tile]:
    """Up to ``batch`` tiles from the front of the queue that share one window shape."""
    group = [pending.popleft()]
    while pending and len(group) < batch and pending[0].window_shape == group[0].window_shape:
        group.append(pending.popleft())
    return group
