"""Attention from response tokens to image tokens, mapped back onto the image.

Where each image token sits on the photo is read from the inputs the processor built, not from
the model family's name:

- a grid in the inputs (Qwen2-VL's ``image_grid_thw``, in patches): the model merges
  ``spatial_merge_size`` x ``spatial_merge_size`` patches per token, so the token grid is the
  patch grid divided by it;
- several runs of image tokens (Idefics3, SmolVLM): one run per tile, each preceded by a
  ``<row_i_col_j>`` marker, and a last run for the downscaled global view of the whole image;
- one run (LLaVA and most others): a square grid of patches, or the rows x cols closest to the
  image's aspect when the count is not a square. A processor that centre-crops to a square sees
  only the central square of a non-square photo, and the map covers only that part.

Attention weights need ``attn_implementation="eager"`` (sdpa returns none); the model is switched
for the call and switched back. The map of a token is its attention to the image tokens, averaged
over heads and the chosen layers, taken at the position that predicts it (where the model
looked when it chose that token).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.errors import ModelUnavailableError
from visuallens_app.vlm.layers import image_mask
from visuallens_app.vlm.prompts import ResponseTokens, append_response, encode

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

_TILE_MARKER = re.compile(r"<row_(\d+)_col_(\d+)>")

#: A box on the image as fractions of its width and height: (left, top, right, bottom).
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class View:
    """Image tokens that cover one box of the image as a ``rows`` x ``cols`` grid, row-major."""

    positions: tuple[int, ...]  # sequence positions of the tokens
    rows: int
    cols: int
    box: Box
    is_global: bool = False


def image_views(
    vlm: VisionLanguageModel, inputs: dict[str, Any], image_size: tuple[int, int]
) -> list[View]:
    """Where the image tokens of ``inputs`` (one prompt with one image) lie on the image."""
    positions = [int(p) for p in image_mask(vlm, inputs["input_ids"][0]).nonzero().flatten()]
    if not positions:
        raise ModelUnavailableError(f"The prompt for {vlm.name} holds no image tokens.")
    full: Box = (0.0, 0.0, 1.0, 1.0)
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        frames, height, width = (int(v) for v in grid[0].tolist())
        merge = int(getattr(getattr(vlm.config, "vision_config", None), "spatial_merge_size", 1))
        rows, cols = height // merge, width // merge
        if frames * rows * cols == len(positions):
            return [View(tuple(positions[: rows * cols]), rows, cols, full)]
    runs = _runs(positions)
    if len(runs) > 1:
        return _tile_views(vlm, inputs["input_ids"][0], runs)
    rows, cols = _grid_shape(len(positions), image_size)
    return [View(tuple(positions), rows, cols, _crop_box(vlm.processor, image_size))]


def _runs(positions: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for position in positions:
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    return runs


def _tile_views(vlm: VisionLanguageModel, ids: Any, runs: list[list[int]]) -> list[View]:
    """Tiles named by the ``<row_i_col_j>`` marker before each run; the unnamed last is global."""
    tokens = vlm.tokenizer.convert_ids_to_tokens(ids.tolist())
    placed: list[tuple[int, int, list[int]]] = []
    rest: list[list[int]] = []
    for run in runs:
        marker = _TILE_MARKER.fullmatch(str(tokens[run[0] - 1])) if run[0] > 0 else None
        if marker:
            placed.append((int(marker.group(1)), int(marker.group(2)), run))
        else:
            rest.append(run)
    views: list[View] = []
    if placed:
        n_rows = max(r for r, _, _ in placed)
        n_cols = max(c for _, c, _ in placed)
        for row, col, run in placed:
            side = math.isqrt(len(run))
            box = (
                (col - 1) / n_cols,
                (row - 1) / n_rows,
                col / n_cols,
                row / n_rows,
            )
            views.append(View(tuple(run), side, len(run) // max(1, side), box))
    elif len(rest) > 1:  # unnamed tiles: side by side, the last one global
        tiles, rest = rest[:-1], rest[-1:]
        for index, run in enumerate(tiles):
            side = math.isqrt(len(run))
            box = (index / len(tiles), 0.0, (index + 1) / len(tiles), 1.0)
            views.append(View(tuple(run), side, len(run) // max(1, side), box))
    for run in rest:
        side = math.isqrt(len(run))
        views.append(View(tuple(run), side, len(run) // max(1, side), (0, 0, 1, 1), True))
    return views


def _grid_shape(count: int, image_size: tuple[int, int]) -> tuple[int, int]:
    side = math.isqrt(count)
    if side * side == count:
        return side, side
    width, height = image_size
    aspect = width / max(1, height)
    return min(
        ((r, count // r) for r in range(1, count + 1) if count % r == 0),
        key=lambda rc: abs(math.log((rc[1] / rc[0]) / aspect)),
    )


def _crop_box(processor: Any, image_size: tuple[int, int]) -> Box:
    """The part of the image a square centre crop keeps, as fractions; all of it otherwise."""
    image_processor = getattr(processor, "image_processor", None)
    if not getattr(image_processor, "do_center_crop", False):
        return (0.0, 0.0, 1.0, 1.0)
    width, height = image_size
    side = min(width, height)
    left = (width - side) / 2 / width
    top = (height - side) / 2 / height
    return (left, top, 1 - left, 1 - top)


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """For every response token, its attention to the image, per view and painted on the image."""

    tokens: ResponseTokens
    views: tuple[View, ...]
    weights: NDArray[np.float32]  # [response tokens, image tokens], in the views' order
    image_size: tuple[int, int]

    def grid(self, token: int, view: int = 0) -> NDArray[np.float32]:
        """The ``rows`` x ``cols`` grid of attention of response token ``token`` on ``view``."""
        offset = sum(len(v.positions) for v in self.views[:view])
        v = self.views[view]
        cells = self.weights[token, offset : offset + len(v.positions)]
        return cells[: v.rows * v.cols].reshape(v.rows, v.cols)

    def heatmap(self, token: int, size: tuple[int, int] | None = None) -> NDArray[np.float32]:
        """The token's attention painted over an image of ``size`` (width, height), in [0, 1].

        Each view's cells are spread over its box (the global view over the whole image), and
        the views summed; 0 where the model's image input did not reach (a cropped margin).
        """
        width, height = size or self.image_size
        canvas = np.zeros((height, width), dtype=np.float32)
        for index, view in enumerate(self.views):
            cells = self.grid(token, index)
            left, top, right, bottom = view.box
            x0, x1 = round(left * width), max(round(left * width) + 1, round(right * width))
            y0, y1 = round(top * height), max(round(top * height) + 1, round(bottom * height))
            painted = Image.fromarray(cells.astype(np.float32)).resize(
                (x1 - x0, y1 - y0), Image.Resampling.BILINEAR
            )
            canvas[y0:y1, x0:x1] += np.asarray(painted, dtype=np.float32)[: y1 - y0, : x1 - x0]
        peak = float(canvas.max())
        return canvas / peak if peak > 0 else canvas


def response_attention(
    vlm: VisionLanguageModel,
    image: Image.Image,
    prompt: str,
    response: str,
    *,
    layers: Sequence[int] | None = None,
) -> AttentionMaps:
    """Attention of each token of ``response`` to the image tokens (one forward pass)."""
    import torch

    inputs = encode(vlm, [prompt], [[image]])
    views = image_views(vlm, inputs, image.size)
    inputs, tokens = append_response(vlm, inputs, response)
    previous = str(getattr(vlm.model.config, "_attn_implementation", "") or "")
    switch = previous != "eager"
    if switch:
        vlm.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = vlm.model(**inputs, output_attentions=True, use_cache=False)
    finally:
        if switch and previous:
            vlm.model.set_attn_implementation(previous)
    attentions = [a for a in (out.attentions or ()) if a is not None]
    if not attentions:
        raise ModelUnavailableError(
            f"{vlm.name} returned no attention weights; it cannot draw attention maps."
        )
    chosen = list(range(len(attentions))) if layers is None else list(layers)
    stacked = torch.stack([attentions[i][0].float() for i in chosen])  # [layers, heads, T, T]
    mean = stacked.mean(dim=(0, 1))  # [T, T]
    # Token t is chosen at the position before it: that row is where the model looked for it.
    rows = torch.arange(tokens.start - 1, tokens.start - 1 + len(tokens), device=mean.device)
    columns = torch.tensor([p for v in views for p in v.positions], device=mean.device)
    weights = mean[rows][:, columns].cpu().numpy().astype(np.float32)
    return AttentionMaps(tokens, tuple(views), weights, image.size)


__all__ = ["AttentionMaps", "View", "image_views", "response_attention"]
