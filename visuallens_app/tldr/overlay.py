"""A token's heatmap drawn translucently over the photo (for PNG export and previews)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image


def heatmap_overlay(
    image: Image.Image, heatmap: NDArray[np.float32], alpha: float = 0.55
) -> Image.Image:
    """The photo with ``heatmap`` (H x W in [0, 1]) over it, from transparent to opaque red."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if heat.shape != rgb.shape[:2]:
        resized = Image.fromarray(heat).resize(
            (rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR
        )
        heat = np.asarray(resized, dtype=np.float32)
    colour = np.stack([np.full_like(heat, 255.0), 255.0 * (1 - heat), np.zeros_like(heat)], axis=-1)
    weight = (alpha * heat)[..., None]
    out = rgb * (1 - weight) + colour * weight
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


__all__ = ["heatmap_overlay"]
