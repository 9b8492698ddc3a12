"""The tile pipeline: same pixels as RealESRGANer, no seams, no lost tiles."""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import FAST_MODEL, sample
from upscaler.commands.baseline import reference_upscale, reference_upscaler
from upscaler.commands.bench import SeamError
from upscaler.errors import InvalidOptionsError, OutOfMemoryError
from upscaler.models.archs import Architecture
from upscaler.models.registry import ModelSpec
from upscaler.pipeline.options import Overrides, PipelineOptions, default_options, fit_to_memory
from upscaler.pipeline.tiles import plan_tiles
from upscaler.pipeline.upscaler import Upscaler


class NearestX4(nn.Module):
    """A stand-in 4x network with no spatial context: tiling cannot change its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="nearest")


class MemoryLimitedNearestX4(NearestX4):
    """NearestX4 on a pretend device that holds at most ``budget`` input pixels per call."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.budget:
            raise torch.OutOfMemoryError("pretend device is full")
        return super().forward(x)


def stand_in(network: nn.Module, multiple: int = 1) -> Upscaler:
    arch = Architecture(
        "stand-in",
        lambda scale, params: network,
        True,
        True,
        lambda s: multiple,
        activation_bytes=4,
    )
    spec = ModelSpec("stand-in", "", arch, 4, {}, None, None, None, None)
    return Upscaler(spec, network)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    channels=st.sampled_from([1, 2, 3, 4]),
    tile=st.integers(1, 64),
    overlap=st.integers(0, 12),
    batch=st.integers(1, 5),
    lanes=st.integers(1, 3),
    multiple=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_tiled_output_is_bit_identical_for_a_context_free_network(
    height, width, channels, tile, overlap, batch, lanes, multiple, seed
):
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    upscaler = stand_in(NearestX4(), multiple)
    whole = upscaler.upscale(pixels, options=PipelineOptions(tile=0)).pixels
    tiled = upscaler.upscale(pixels, options=PipelineOptions(tile, overlap, batch, lanes)).pixels
    assert tiled.shape == whole.shape
    assert np.array_equal(tiled, whole)
    if channels in (1, 3):  # no gray conversion on RGB; exact nearest upscale
        expected = pixels.repeat(4, axis=0).repeat(4, axis=1)
        assert np.array_equal(whole, expected)


def test_out_of_memory_halves_batch_then_tiles_and_loses_nothing():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    network = MemoryLimitedNearestX4(budget=40 * 40)
    upscaler = stand_in(network)
    result = upscaler.upscale(pixels, options=PipelineOptions(tile=64, overlap=4, batch=4))
    assert np.array_equal(result.pixels, pixels.repeat(4, axis=0).repeat(4, axis=1))
    assert result.out_of_memory_events >= 3
    assert result.final_batch == 1
    assert any("batch reduced to 2" in note for note in result.notes)
    assert any("tiles split" in note for note in result.notes)
    assert max(c[2] * c[3] for c in network.calls if c[0] == 1) > 0


def test_out_of_memory_in_lanes_goes_one_batch_at_a_time_and_loses_nothing():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    network = MemoryLimitedNearestX4(budget=40 * 40)
    upscaler = stand_in(network)
    options = PipelineOptions(tile=32, overlap=4, batch=2, lanes=3)
    result = upscaler.upscale(pixels, options=options)
    assert np.array_equal(result.pixels, pixels.repeat(4, axis=0).repeat(4, axis=1))
    assert result.notes[0] == "out of memory: one batch at a time"
    assert result.notes[1] == "out of memory: batch reduced to 1"
    assert result.final_batch == 1


def test_lanes_run_at_once_on_their_own_threads(registry):
    """Two lanes really overlap, and the caller's thread count is left as it was."""
    threads_before = torch.get_num_threads()
    seen: list[tuple[str, int, float, float]] = []

    class Recording(NearestX4):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            started = time.perf_counter()
            time.sleep(0.05)
            seen.append(
                (
                    threading.current_thread().name,
                    torch.get_num_threads(),
                    started,
                    time.perf_counter(),
                )
            )
            return super().forward(x)

    upscaler = stand_in(Recording())
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    upscaler.upscale(pixels, options=PipelineOptions(tile=32, overlap=0, lanes=2))
    assert len(seen) == 2
    (name_a, threads_a, start_a, end_a), (name_b, threads_b, start_b, end_b) = seen
    assert name_a != name_b and all(n.startswith("upscale-lane") for n in (name_a, name_b))
    assert threads_a == threads_b == max(1, threads_before // 2)
    assert start_a < end_b and start_b < end_a  # they overlapped in time
    assert torch.get_num_threads() == threads_before
    with pytest.raises(InvalidOptionsError, match="lanes"):
        PipelineOptions(lanes=0)


def test_out_of_memory_releases_the_failed_batch_before_the_retry():
    """An exception kept with its traceback keeps the failed batch's activations alive."""
    held: list[weakref.ref[torch.Tensor]] = []
    alive_at_retry: list[bool] = []

    class Hungry(NearestX4):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not held:
                activations = torch.ones(x.shape[0], 64, *x.shape[2:]) * x.mean()
                held.append(weakref.ref(activations))
                raise torch.OutOfMemoryError("pretend device is full")
            alive_at_retry.append(held[0]() is not None)
            return super().forward(x)

    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    for lanes in (1, 2):
        held.clear()
        result = stand_in(Hungry()).upscale(
            pixels, options=PipelineOptions(tile=16, overlap=0, batch=2, lanes=lanes)
        )
        assert result.out_of_memory_events == 1
    assert alive_at_retry and not any(alive_at_retry)


def test_out_of_memory_at_the_smallest_tile_raises_a_retryable_error():
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    upscaler = stand_in(MemoryLimitedNearestX4(budget=10))
    with pytest.raises(OutOfMemoryError, match="batch 1"):
        upscaler.upscale(pixels, options=PipelineOptions(tile=64, overlap=2, batch=2))


@pytest.fixture(scope="module")
def x4plus(registry) -> Upscaler:
    # fp32: the same pixels to the level (bf16's fidelity is tests/test_precision.py's).
    return Upscaler.load(
        registry, "RealESRGAN_x4plus", precision="fp32", options=PipelineOptions(tile=0)
    )


@pytest.fixture(scope="module")
def reference(registry):
    spec = registry.get("RealESRGAN_x4plus")
    return reference_upscaler(spec, registry.weights_path(spec), tile=0, pre_pad=0)


def _layouts(cat_crop: np.ndarray) -> dict[str, np.ndarray]:
    odd = sample("coffee")[100:137, 200:253]  # 37x53
    gray = np.ascontiguousarray(cat_crop[:32, :32].mean(axis=2).astype(np.uint8))
    alpha = np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)
    rgba = np.dstack([cat_crop[:32, :32], alpha])
    deep = (cat_crop[:32, :32].astype(np.uint16) * 257) ^ np.uint16(0x00FF & 0x5A)
    return {"photo": cat_crop, "odd-37x53": odd, "gray": gray, "rgba": rgba, "16-bit": deep}


@pytest.mark.parametrize("layout", ["photo", "odd-37x53", "gray", "rgba", "16-bit"])
def test_same_pixels_as_realesrganer_untiled(layout, x4plus, reference, cat_crop):
    pixels = _layouts(cat_crop)[layout]
    ours = x4plus.upscale(pixels).pixels
    theirs = reference_upscale(reference, pixels)
    assert (
        ours.shape == theirs.shape == (pixels.shape[0] * 4, pixels.shape[1] * 4, *pixels.shape[2:])
    )
    assert ours.dtype == theirs.dtype == pixels.dtype
    difference = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
    assert difference.max() <= 1, f"{layout}: differs by up to {difference.max()} levels"
    # And it is a real upscale, not a resize: far from nearest-neighbour.
    nearest = pixels.repeat(4, axis=0).repeat(4, axis=1)
    assert np.abs(ours.astype(np.int64) - nearest.astype(np.int64)).mean() > 1


@pytest.mark.timeout(1200)  # the suite's heaviest model test: four runs of x4plus at 128x128
def test_seams_are_half_of_realesrganer_on_fur(registry):
    """At the same tile size our default overlap leaves at most half RealESRGANer's seam error."""
    spec = registry.get("RealESRGAN_x4plus")
    pixels = np.ascontiguousarray(sample("chelsea")[20:148, 150:278])  # 128x128 of fur and eye
    upscaler = Upscaler.load(registry, spec.name, precision="fp32")
    tiled = PipelineOptions(tile=48)  # default overlap
    assert len(plan_tiles(128, 128, tiled.tile, tiled.overlap).tiles) == 9
    untiled = upscaler.upscale(pixels, options=PipelineOptions(tile=0)).pixels
    ours = upscaler.upscale(pixels, options=tiled).pixels
    theirs = reference_upscale(
        reference_upscaler(spec, registry.weights_path(spec), tile=48, tile_pad=10), pixels
    )
    our_error, their_error = SeamError.between(ours, untiled), SeamError.between(theirs, untiled)
    assert their_error.mean_abs > 0.5  # the comparison means something
    assert our_error.mean_abs <= their_error.mean_abs / 2
    assert our_error.psnr_db >= their_error.psnr_db + 6


def test_one_upscaler_serves_several_threads(registry):
    upscaler = Upscaler.load(registry, FAST_MODEL, options=PipelineOptions(tile=24, overlap=4))
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size=(40 + 8 * i, 56, 3), dtype=np.uint8) for i in range(4)]
    expected = [upscaler.upscale(image).pixels for image in images]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        results[index] = upscaler.upscale(images[index]).pixels

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, pixels in enumerate(expected):
        assert np.array_equal(results[index], pixels)


def test_progress_reports_every_tile_once(registry):
    upscaler = Upscaler.load(registry, FAST_MODEL, options=PipelineOptions(tile=16, overlap=2))
    seen: list[tuple[int, int]] = []
    pixels = np.zeros((40, 40, 4), dtype=np.uint8)
    result = upscaler.upscale(pixels, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (result.tiles, result.tiles)
    assert result.tiles == 2 * 9  # colour and alpha planes, 3x3 tiles each
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.parametrize(
    ("precision", "message"), [("fp16", "fp16 is not supported"), ("fp64", "fp32, fp16 or bf16")]
)
def test_impossible_precisions_are_refused(registry, precision, message):
    with pytest.raises(InvalidOptionsError, match=message):
        Upscaler.load(registry, FAST_MODEL, precision=precision)


@pytest.mark.parametrize("bad", [{"tile": -1}, {"overlap": -2}, {"batch": 0}])
def test_impossible_options_are_refused(bad):
    with pytest.raises(InvalidOptionsError):
        PipelineOptions(**bad)


def test_pixels_of_other_types_are_refused(registry):
    upscaler = Upscaler.load(registry, FAST_MODEL)
    with pytest.raises(InvalidOptionsError, match="uint8 or uint16"):
        upscaler.upscale(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(InvalidOptionsError, match="HxW"):
        upscaler.upscale(np.zeros((4, 4, 5), dtype=np.uint8))


def test_lanes_are_refused_where_they_cannot_work(registry):
    two = PipelineOptions(lanes=2)
    # Without a GPU the device itself is refused first, in one line.
    refusal = "for the CPU" if torch.cuda.is_available() else "no CUDA GPU is visible"
    with pytest.raises(InvalidOptionsError, match=refusal):
        Upscaler.load(registry, FAST_MODEL, device="cuda", precision="fp16", options=two)
    with pytest.raises(InvalidOptionsError, match="one lane"):
        Upscaler.load(registry, FAST_MODEL, options=two, compile=True)
    compiled = Upscaler.load(registry, FAST_MODEL, options=PipelineOptions(), compile=True)
    with pytest.raises(InvalidOptionsError, match="one lane"):  # per call too, before any work
        compiled.upscale(np.zeros((8, 8, 3), dtype=np.uint8), options=two)
    spec = registry.get(FAST_MODEL)
    assert default_options("cpu", spec, "fp32").lanes == min(2, torch.get_num_threads())
    assert default_options("cpu", spec, "fp32", Overrides(lanes=1)).lanes == 1
    compiled_defaults = Upscaler.load(registry, FAST_MODEL, compile=True).options
    assert compiled_defaults.lanes == 1


def test_cuda_tiles_are_sized_from_free_memory():
    x4 = {"activation_bytes": 9472, "overlap": 32, "max_image_pixels": 4096 * 4096}
    tile, batch = fit_to_memory(79 * 2**30, half=True, **x4)  # an H100 at start-up
    assert tile >= 2000 and batch == 1  # a 2000x2000 photo in one window: no overlap computed
    assert tile % 32 == 0
    # What the window needs fits the share of memory kept for it.
    assert (tile + 64) ** 2 * 9472 / 2 <= 0.7 * 79 * 2**30
    smaller, _ = fit_to_memory(22 * 2**30, half=True, **x4)  # a 24 GB card
    assert 1000 < smaller < tile
    fp32, _ = fit_to_memory(22 * 2**30, half=False, **x4)
    assert fp32 < smaller
    assert fit_to_memory(2**30, half=True, **x4) == (128, 1)  # the least it tries
    # A tile set by the operator: as many windows per call as fit.
    assert fit_to_memory(79 * 2**30, half=True, tile=512, **x4) == (512, 8)
    assert fit_to_memory(8 * 2**30, half=True, tile=512, **x4) == (512, 3)
