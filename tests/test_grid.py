"""The profile grid: shape, black padding, letterboxing, numbering, tile geometry."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visuallens_app.lens.grid import build_grid, tile_at, tile_box


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (200, 200)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _tile(grid: Image.Image, number: int, tile: int = 112, cols: int = 8) -> np.ndarray:
    return np.asarray(grid.crop(tile_box(number, cols=cols, tile=tile)))


def test_default_grid_is_896_pixels_and_pads_missing_tiles_black() -> None:
    grid = build_grid([_solid((200, 30, 30))] * 5)
    assert grid.size == (896, 896)
    assert grid.mode == "RGB"
    for number in range(6, 65):
        assert _tile(grid, number).max() == 0, f"tile {number} should be black padding"
    # A filled tile is the photo's colour outside its label.
    centre = _tile(grid, 5)[56, 56]
    assert tuple(centre) == (200, 30, 30)


def test_tiles_keep_the_photo_aspect_ratio() -> None:
    wide = _solid((20, 200, 20), size=(400, 100))  # 4:1 panorama
    tall = _solid((20, 20, 200), size=(100, 400))
    grid = build_grid([wide, tall], numbered=False)
    first, second = _tile(grid, 1), _tile(grid, 2)
    rows_with_photo = np.flatnonzero(first.any(axis=(1, 2)))
    assert 26 <= len(rows_with_photo) <= 30  # 112 / 4 = 28 rows, centred
    assert rows_with_photo[0] > 30  # black bars above and below
    cols_with_photo = np.flatnonzero(second.any(axis=(0, 2)))
    assert 26 <= len(cols_with_photo) <= 30


def test_every_filled_tile_carries_a_distinct_legible_number() -> None:
    grid = build_grid([_solid((128, 128, 128))] * 64)
    labels = []
    for number in (1, 9, 64):
        corner = _tile(grid, number)[:30, :40]
        white = (corner >= 200).all(axis=2)
        assert white.sum() > 10, f"tile {number} has no visible label"
        ys = np.flatnonzero(white.any(axis=1))
        assert ys.max() - ys.min() >= 10, "digits should be at least 10 px tall at 112 px tiles"
        labels.append(white)
    assert not np.array_equal(labels[0], labels[2])  # "1" and "64" look different
    unnumbered = build_grid([_solid((128, 128, 128))] * 64, numbered=False)
    assert (np.asarray(unnumbered) == 128).all()


def test_grid_shape_and_tile_size_are_configurable_and_extra_photos_are_dropped() -> None:
    photos = [_solid((10 * i, 0, 0)) for i in range(1, 11)]
    grid = build_grid(photos, rows=2, cols=3, tile=50, numbered=False)
    assert grid.size == (150, 100)
    # Row-major: tile 4 is the second row's first tile and holds photo 4; photos 7-10 are dropped.
    assert tuple(np.asarray(grid)[75, 25]) == (40, 0, 0)
    assert tuple(np.asarray(grid)[75, 125]) == (60, 0, 0)


def test_tile_geometry_round_trips() -> None:
    for number in (1, 8, 9, 64):
        left, top, right, bottom = tile_box(number)
        assert right - left == bottom - top == 112
        assert tile_at(left + 5, top + 5) == number
    assert tile_at(896, 10) is None
    assert tile_at(-1, 10) is None


def test_invalid_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        build_grid([], rows=0)
    with pytest.raises(ValueError, match="tile side"):
        build_grid([], tile=4)


def test_grid_accepts_non_rgb_photos(sample_images: dict[str, Image.Image]) -> None:
    grey = sample_images["coffee"].convert("L")
    rgba = sample_images["rocket"].convert("RGBA")
    grid = build_grid([grey, rgba, sample_images["chelsea"]], rows=1, cols=3, tile=64)
    assert grid.size == (192, 64)
    assert np.asarray(grid)[32, 96:160].std() > 0  # the rocket photo is really there
