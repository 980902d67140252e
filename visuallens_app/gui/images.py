"""PIL images and numpy heatmaps as Qt images, for every panel that draws a model's view."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from PySide6.QtGui import QColor, QImage


def pil_to_qimage(image: Image.Image) -> QImage:
    """A deep copy of ``image`` as a QImage (RGB888 or RGBA8888), safe to use on any thread."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    data = image.tobytes()
    fmt = QImage.Format.Format_RGBA8888 if image.mode == "RGBA" else QImage.Format.Format_RGB888
    channels = 4 if image.mode == "RGBA" else 3
    wrapped = QImage(data, image.width, image.height, image.width * channels, fmt)
    return wrapped.copy()  # own the pixels: ``data`` is freed when this function returns


def heatmap_qimage(
    heat: NDArray[np.float32], color: QColor | None = None, max_alpha: int = 170
) -> QImage:
    """A translucent overlay of ``heat`` (values in [0, 1]): colour fixed, opacity by value."""
    color = color or QColor(255, 140, 0)
    values = np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = color.red(), color.green(), color.blue()
    rgba[..., 3] = (values * max_alpha).astype(np.uint8)
    return pil_to_qimage(Image.fromarray(rgba))
