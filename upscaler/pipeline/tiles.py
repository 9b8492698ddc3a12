"""Tile planning: pure arithmetic, no tensors.

An image is cut into *cores* that partition it exactly (every output pixel
comes from one core). Each core is run through the network inside a larger
*window* with at least ``overlap`` pixels of real image around it (less only
where the image itself ends), so the network sees nearly what it would see
on the whole image. Along each axis the windows all have one size and are
spread evenly from edge to edge, neighbours sharing ``2 * overlap`` pixels:
as many windows and as many pixels as ``RealESRGANer`` runs for the same
tile size, but in one shape, so they stack into batches.

    >>> plan = plan_tiles(height=100, width=150, tile=64, overlap=8)
    >>> plan.window_height, plan.window_width, len(plan.tiles)
    (58, 61, 6)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A window and the core it produces along one axis, in input pixels."""

    window_start: int
    window_size: int
    core_start: int
    core_end: int


@dataclass(frozen=True)
class Tile:
    """A rectangle of input to run (the window) and the part of it to keep (the core)."""

    y: Span
    x: Span

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.y.window_size, self.x.window_size


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering a ``height`` x ``width`` image, all with one window shape."""

    height: int
    width: int
    window_height: int
    window_width: int
    tiles: tuple[Tile, ...]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> list[Span]:
    """Split ``[0, length)`` into cores, each inside an equal window of about ``tile + 2*overlap``.

    ``tile <= 0``, or a tile whose window would cover the whole axis, gives
    one span over everything. With ``multiple`` > 1 (networks that need
    input sides divisible by it; ``length`` must be) every boundary and
    size is a multiple of it.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if multiple > 1:
        if length % multiple:
            raise ValueError(f"length {length} is not a multiple of {multiple}")
        units = plan_axis(
            length // multiple, max(tile // multiple, 1) if tile > 0 else 0, -(-overlap // multiple)
        )
        return [_scale_span(span, multiple) for span in units]
    if tile <= 0 or tile + 2 * overlap >= length:
        return [Span(0, length, 0, length)]
    # As many windows as RealESRGANer would use, each just large enough that
    # neighbours share 2*overlap pixels: the same pixels through the network
    # in total, but in one window shape.
    count = math.ceil(length / tile)
    window = math.ceil((length + 2 * overlap * (count - 1)) / count)
    while True:
        starts = [round(i * (length - window) / (count - 1)) for i in range(count)]
        if all(a + window - b >= 2 * overlap for a, b in itertools.pairwise(starts)):
            break
        window += 1  # rounding the starts lost a pixel of overlap somewhere
    # Tiny tiles on a short axis can round two windows onto one start; one suffices.
    starts = sorted(set(starts))
    bounds = [0, *((a + window + b) // 2 for a, b in itertools.pairwise(starts)), length]
    return [
        Span(start, window, core_start, core_end)
        for start, (core_start, core_end) in zip(starts, itertools.pairwise(bounds), strict=True)
    ]


def _place(core_start: int, core_end: int, window: int, length: int, multiple: int = 1) -> Span:
    """A window of ``window`` pixels centred on a core, shifted inward to stay in the image.

    With every argument a multiple of ``multiple``, so is the window's start.
    """
    centred = (core_start + core_end - window) // 2
    centred -= centred % multiple
    return Span(min(max(centred, 0), length - window), window, core_start, core_end)


def _scale_span(span: Span, factor: int) -> Span:
    return Span(
        *(
            value * factor
            for value in (span.window_start, span.window_size, span.core_start, span.core_end)
        )
    )


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> TilePlan:
    """Plan equal-shape windows whose cores partition a ``height`` x ``width`` image."""
    rows = plan_axis(height, tile, overlap, multiple)
    cols = plan_axis(width, tile, overlap, multiple)
    tiles = tuple(Tile(y, x) for y in rows for x in cols)
    return TilePlan(height, width, rows[0].window_size, cols[0].window_size, tiles)


def split_tile(tile: Tile, height: int, width: int, overlap: int, multiple: int = 1) -> list[Tile]:
    """Cut one tile's core into quarters, each with its own (smaller) window.

    Used after an out-of-memory error: the remaining work is the same set of
    core pixels, only in smaller pieces.
    """
    return [
        Tile(y, x)
        for y in _split_span(tile.y, height, overlap, multiple)
        for x in _split_span(tile.x, width, overlap, multiple)
    ]


def _split_span(span: Span, length: int, overlap: int, multiple: int) -> list[Span]:
    size = span.core_end - span.core_start
    if size < 2 * multiple:
        return [span]
    middle = span.core_start + size // (2 * multiple) * multiple
    halves = []
    for start, end in ((span.core_start, middle), (middle, span.core_end)):
        window = min(length, _round_up(end - start + 2 * overlap, multiple))
        halves.append(_place(start, end, window, length, multiple))
    return halves


def smallest_core(tile: Tile) -> int:
    """The shorter side of a tile's core, in input pixels."""
    return min(tile.y.core_end - tile.y.core_start, tile.x.core_end - tile.x.core_start)
