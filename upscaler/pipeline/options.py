"""How the pipeline runs on a device: every default in one place.

    >>> options = default_options("cuda", spec, "fp16")   # tile sized from the card's free memory
    >>> options = default_options("cpu", spec, "fp32", Overrides(tile=64, overlap=16))

The precision, ``auto`` unless set, is resolved in ``upscaler/pipeline/precision.py``.

``overlap`` is the context each tile's window carries on every side, in
input pixels (``RealESRGANer`` calls it ``tile_pad``); the commands take it
as ``--overlap`` and the worker as ``SMI_WORKER_OVERLAP``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from shared.settings import SETTINGS
from upscaler.errors import InvalidOptionsError
from upscaler.models.registry import ModelSpec

# Defaults, from measurements (README, "Seams"):
# - overlap 32: at tile 64 on 192x192 photos, the mean absolute difference of
#   a tiled run from an untiled one falls from RealESRGANer's (tile_pad=10)
#   5.60 to 1.18 levels on grass and 1.71 to 0.44 on fur (+10 dB PSNR); 24
#   only halves it, and not everywhere (1.96x on grass at 128x128).
# - tile 512 on the CPU: a 2000x2000 input runs as 16 windows of 548x548,
#   1.20x the pixels of no overlap at all. On CUDA the tile is sized from the
#   card's free memory instead (``tile_for_memory``).
DEFAULT_TILE = 512
DEFAULT_OVERLAP = int(SETTINGS["WORKER_OVERLAP"].default or 0)  # 32, the worker's too
# Batches multiply activation memory: four 548x548 fp32 windows would want
# ~11 GiB of host memory, and running out there kills the process instead of
# raising an error. On CUDA the batch is sized from free memory.
DEFAULT_BATCH = 1
# On the CPU, two windows at once, each convolved by half the cores, beat one
# window convolved by all of them: less waiting at each operation's barrier,
# and each core keeps its own window's features in its cache. On 2 cores,
# four 74x74 windows of RRDBNet: 3.12 s in two lanes, 3.38 s in one (median
# of 15, fused kernels); batches of 4 were slower than either (README, "Speed").
CPU_LANES = 2

# Sizing a CUDA tile from free memory. The network's own activations are
# ``Architecture.activation_bytes`` per window pixel in fp32 (half that in
# fp16/bf16); a share of what is free is kept for cuDNN's workspaces and the
# allocator's fragmentation, and room for the largest image itself (its
# float input and quantised output: 60 bytes per input pixel at x4).
MEMORY_SHARE = 0.7
IMAGE_BYTES_PER_PIXEL = 60
TILE_STEP = 32  # window sides in multiples of this: cuDNN's kernels like round shapes
MIN_AUTO_TILE = 128
MAX_AUTO_TILE = 4096
MAX_AUTO_BATCH = 8


@dataclass(frozen=True)
class PipelineOptions:
    """How images are cut and batched. ``tile=0`` runs the whole image in one pass.

    ``lanes`` batches run at once on the CPU, each with its share of the
    intra-op threads; on CUDA it must be 1.
    """

    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    batch: int = DEFAULT_BATCH
    lanes: int = 1

    def __post_init__(self) -> None:
        if self.tile < 0 or self.overlap < 0 or self.batch < 1 or self.lanes < 1:
            raise InvalidOptionsError(
                f"tile and overlap must be >= 0, batch and lanes >= 1, got "
                f"tile={self.tile} overlap={self.overlap} batch={self.batch} lanes={self.lanes}"
            )


@dataclass(frozen=True)
class Overrides:
    """What an operator chose (command flags, ``SMI_WORKER_*``); ``None`` takes the default."""

    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    lanes: int | None = None


def default_device() -> str:
    """``cuda`` where PyTorch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device) -> torch.device:
    """The device, or ``InvalidOptionsError`` saying why it cannot be used here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidOptionsError(f"{device!r} is not a device (cpu, cuda or cuda:N)") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidOptionsError(f"no CUDA GPU is visible to PyTorch, so {device} is refused")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InvalidOptionsError(
                f"{device} does not exist: {torch.cuda.device_count()} GPU(s) visible"
            )
    elif parsed.type != "cpu":
        raise InvalidOptionsError(f"{device} is not supported; use cpu or cuda")
    return parsed


def fit_to_memory(
    free_bytes: int,
    *,
    activation_bytes: int,
    half: bool,
    overlap: int,
    max_image_pixels: int,
    tile: int | None = None,
) -> tuple[int, int]:
    """``(tile, batch)`` whose activations fit in ``free_bytes`` of device memory.

    Pure arithmetic (see ``MEMORY_SHARE``). Without a ``tile``: the largest
    one window fits, a multiple of ``TILE_STEP`` from ``MIN_AUTO_TILE`` to
    ``MAX_AUTO_TILE``, batch 1 (an 80 GB card in fp16 takes a 2000x2000
    photo in one window, so no pixel is computed twice). With one: as many
    of its windows per call as fit, up to ``MAX_AUTO_BATCH``.
    """
    per_pixel = activation_bytes // 2 if half else activation_bytes
    budget = max(0.0, (free_bytes - max_image_pixels * IMAGE_BYTES_PER_PIXEL) * MEMORY_SHARE)
    if tile is None:
        window = math.isqrt(int(budget // per_pixel))
        tile = (window - 2 * overlap) // TILE_STEP * TILE_STEP
        return max(MIN_AUTO_TILE, min(MAX_AUTO_TILE, tile)), 1
    window_bytes = (tile + 2 * overlap) ** 2 * per_pixel
    return tile, max(1, min(MAX_AUTO_BATCH, int(budget // window_bytes)))


def default_options(
    device: str | torch.device,
    spec: ModelSpec,
    precision: str,
    overrides: Overrides = Overrides(),
    *,
    max_image_pixels: int = 4096 * 4096,
) -> PipelineOptions:
    """Defaults for ``spec`` on ``device``, with what ``overrides`` sets kept.

    ``precision`` is the one the network runs in (fp32, fp16 or bf16, not
    ``auto``). On CUDA, an unset ``tile`` (and with a set one, an unset
    ``batch``) is sized from the device's free memory now: call this once the
    process holds whatever else it will hold.
    """
    cuda = torch.device(device).type == "cuda"
    tile, batch, lanes = overrides.tile, overrides.batch, overrides.lanes
    overlap = DEFAULT_OVERLAP if overrides.overlap is None else overrides.overlap
    if not spec.arch.supports_tiling:
        tile = 0
    if cuda and (tile is None or (tile and batch is None)):
        free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
        tile, batch = fit_to_memory(
            free_bytes,
            activation_bytes=spec.arch.activation_bytes,
            half=precision != "fp32",
            overlap=overlap,
            max_image_pixels=max_image_pixels,
            tile=tile,
        )
    return PipelineOptions(
        tile=DEFAULT_TILE if tile is None else tile,
        overlap=overlap,
        batch=batch or DEFAULT_BATCH,
        lanes=lanes or (1 if cuda else min(CPU_LANES, torch.get_num_threads())),
    )
