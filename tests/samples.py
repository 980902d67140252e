"""Real photos for tests: scikit-image's bundled samples (offline: the files ship in its wheel).

A plain module, not a conftest: ``from samples import sample_image`` resolves the same from any
test folder (a ``conftest`` import would find the nearest one).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def sample_image(name: str) -> Image.Image:
    """A scikit-image sample photo as an RGB PIL image (offline: the files ship in its wheel)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    path = next(folder.glob(f"{name}.*"))
    with Image.open(path) as image:
        return image.convert("RGB")
