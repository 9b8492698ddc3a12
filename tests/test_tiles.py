"""Tile planning: every output pixel written exactly once, windows all alike."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upscaler.pipeline.tiles import plan_axis, plan_tiles, smallest_core, split_tile

lengths = st.integers(min_value=1, max_value=700)
tiles = st.integers(min_value=0, max_value=300)
overlaps = st.integers(min_value=0, max_value=40)


def coverage(plan_tiles_list, height: int, width: int) -> np.ndarray:
    counts = np.zeros((height, width), dtype=int)
    for tile in plan_tiles_list:
        counts[tile.y.core_start : tile.y.core_end, tile.x.core_start : tile.x.core_end] += 1
    return counts


@given(length=lengths, tile=tiles, overlap=overlaps)
def test_axis_cores_partition_the_axis_and_windows_are_equal(length, tile, overlap):
    spans = plan_axis(length, tile, overlap)
    assert spans[0].core_start == 0 and spans[-1].core_end == length
    for before, after in itertools.pairwise(spans):
        assert before.core_end == after.core_start
    assert len({span.window_size for span in spans}) == 1
    for span in spans:
        assert 0 <= span.window_start <= span.core_start < span.core_end
        assert span.core_end <= span.window_start + span.window_size <= length


@given(length=lengths, tile=st.integers(min_value=1, max_value=300), overlap=overlaps)
def test_axis_gives_overlap_of_context_inside_the_image_and_bounds_the_window(
    length, tile, overlap
):
    spans = plan_axis(length, tile, overlap)
    for span in spans:
        if span.core_start > 0:
            assert span.core_start - span.window_start >= overlap
        if span.core_end < length:
            assert span.window_start + span.window_size - span.core_end >= overlap
        assert span.window_size <= max(tile + 2 * overlap + 1, 1) or len(spans) == 1
    assert len(spans) <= -(-length // tile)  # never more windows than RealESRGANer


@given(height=st.integers(1, 300), width=st.integers(1, 300), tile=tiles, overlap=overlaps)
def test_every_pixel_belongs_to_exactly_one_core(height, width, tile, overlap):
    plan = plan_tiles(height, width, tile, overlap)
    assert (coverage(plan.tiles, height, width) == 1).all()
    assert {t.window_shape for t in plan.tiles} == {(plan.window_height, plan.window_width)}


@given(
    units_h=st.integers(1, 150),
    units_w=st.integers(1, 150),
    tile=tiles,
    overlap=overlaps,
    multiple=st.sampled_from([2, 4]),
)
def test_multiples_keep_every_boundary_divisible(units_h, units_w, tile, overlap, multiple):
    height, width = units_h * multiple, units_w * multiple
    plan = plan_tiles(height, width, tile, overlap, multiple)
    assert (coverage(plan.tiles, height, width) == 1).all()
    for t in plan.tiles:
        for span in (t.y, t.x):
            values = (span.window_start, span.window_size, span.core_start, span.core_end)
            assert all(v % multiple == 0 for v in values)


@settings(max_examples=50)
@given(
    height=st.integers(1, 200),
    width=st.integers(1, 200),
    tile=st.integers(8, 100),
    overlap=overlaps,
)
def test_split_tiles_cover_the_same_pixels(height, width, tile, overlap):
    plan = plan_tiles(height, width, tile, overlap)
    pieces = [piece for t in plan.tiles for piece in split_tile(t, height, width, overlap)]
    assert (coverage(pieces, height, width) == 1).all()
    for piece in pieces:
        assert piece.y.window_start <= piece.y.core_start
        assert piece.y.core_end <= piece.y.window_start + piece.y.window_size <= height
        assert piece.x.window_start <= piece.x.core_start
        assert piece.x.core_end <= piece.x.window_start + piece.x.window_size <= width
    if min(height, width) >= 2 * tile:
        assert max(smallest_core(p) for p in pieces) < max(smallest_core(t) for t in plan.tiles)


def test_same_window_count_and_pixels_as_realesrganer():
    # 256 pixels in tiles of 64 with 10 of context: RealESRGANer runs windows
    # of 74, 84, 84 and 74 pixels (316 in all); we run four of 79.
    spans = plan_axis(256, 64, 10)
    assert [s.window_size for s in spans] == [79, 79, 79, 79]
    assert [s.core_start for s in spans] == [0, 69, 128, 187]


def test_whole_axis_when_the_window_would_cover_it():
    assert len(plan_axis(100, 90, 10)) == 1
    assert len(plan_axis(100, 0, 10)) == 1


@pytest.mark.parametrize("bad", [{"length": 0}, {"overlap": -1}])
def test_refuses_impossible_arguments(bad):
    arguments = {"length": 10, "tile": 4, "overlap": 1, **bad}
    with pytest.raises(ValueError):
        plan_axis(**arguments)
