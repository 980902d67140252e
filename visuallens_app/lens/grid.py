"""The profile grid: the retrieved history photos tiled into one numbered image.

VisualLens shows a multimodal LLM one image instead of 64 (one vision encoding instead of 64,
and the model can compare photos side by side): the top-w retrieved photos in an 8x8 grid,
112x112 pixels per tile for an 896 px input, black where there are fewer photos, each tile
numbered so that captions and aspect words in the prompt can refer to it ("3: ramen, neon").
The GUI shows the same image, so what the user sees is what the re-ranker saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

#: Padding and letterbox colour: black, as in the paper.
BACKGROUND = (0, 0, 0)
LABEL_FILL = (0, 0, 0)
LABEL_TEXT = (255, 255, 255)


def build_grid(
    images: Sequence[Image.Image],
    *,
    rows: int = 8,
    cols: int = 8,
    tile: int = 112,
    numbered: bool = True,
) -> Image.Image:
    """Tile ``images`` row by row into a ``rows x cols`` grid of ``tile``-pixel squares.

    Each photo is letterboxed (scaled to fit, aspect kept, centred on black) so that a panorama
    is not squashed; tiles without a photo stay black. With ``numbered`` each filled tile carries
    its 1-based number in a white-on-black box in its top-left corner, sized to the tile so it
    stays legible to a person and to a vision model.

    Parameters
    ----------
    images
        Photos in rank order (tile 1 = best). Only the first ``rows * cols`` are used, since
        the caller's ranking decides which photos make the profile.
    rows, cols, tile
        Grid shape and tile side in pixels; the result is ``(cols * tile) x (rows * tile)``.

    Returns
    -------
    PIL.Image.Image
        An RGB image.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"a grid needs at least one row and one column, not {rows}x{cols}")
    if tile < 8:
        raise ValueError(f"tile side must be at least 8 pixels, not {tile}")
    grid = Image.new("RGB", (cols * tile, rows * tile), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = _label_font(tile)
    for index, image in enumerate(images[: rows * cols]):
        left, top, _, _ = tile_box(index + 1, cols=cols, tile=tile)
        fitted = _letterbox(image, tile)
        grid.paste(fitted, (left, top))
        if numbered:
            _draw_label(draw, str(index + 1), left, top, font=font, tile=tile)
    return grid


def tile_box(number: int, *, cols: int = 8, tile: int = 112) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` of tile ``number`` (1-based, row-major).

    The GUI uses it to highlight the tile an explanation cites.
    """
    if number < 1:
        raise ValueError(f"tile numbers start at 1, not {number}")
    row, col = divmod(number - 1, cols)
    left, top = col * tile, row * tile
    return left, top, left + tile, top + tile


def tile_at(x: int, y: int, *, rows: int = 8, cols: int = 8, tile: int = 112) -> int | None:
    """The 1-based tile number under pixel ``(x, y)``, or None outside the grid (for clicks)."""
    col, row = x // tile, y // tile
    if not (0 <= col < cols and 0 <= row < rows) or x < 0 or y < 0:
        return None
    return row * cols + col + 1


def _letterbox(image: Image.Image, side: int) -> Image.Image:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    scale = side / max(width, height, 1)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap makes large photos shrink in two steps: much faster, no visible loss at 112 px.
    resized = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    canvas.paste(resized, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


@lru_cache(maxsize=8)
def _label_font(tile: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # About a sixth of the tile: 18 px at 112 px tiles, readable once the grid is downscaled to
    # a model's input, yet covering little of the photo.
    size = max(9, tile // 6)
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ValueError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _draw_label(
    draw: ImageDraw.ImageDraw,
    text: str,
    left: int,
    top: int,
    *,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    tile: int,
) -> None:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = max(1, tile // 40)
    box = (left, top, left + (x1 - x0) + 2 * pad, top + (y1 - y0) + 2 * pad)
    draw.rectangle(box, fill=LABEL_FILL)
    draw.text((left + pad - x0, top + pad - y0), text, font=font, fill=LABEL_TEXT)


__all__ = ["build_grid", "tile_at", "tile_box"]
