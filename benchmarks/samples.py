"""Real photos for the benchmarks: scikit-image's samples, read from its wheel (no download)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

#: The samples every benchmark draws on: a cat, a coffee cup, an astronaut, a rocket, a motorcycle.
SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left")


def sample_photo(name: str) -> Image.Image:
    """A scikit-image sample photo as an RGB image."""
    import skimage

    path = next((Path(skimage.__file__).parent / "data").glob(f"{name}.*"))
    with Image.open(path) as image:
        return image.convert("RGB")


def decoded_photos(count: int, short_side: int = 224) -> list[Image.Image]:
    """``count`` RGB images with a ``short_side`` px short side, as the decoder delivers them."""
    bases = []
    for name in SAMPLES:
        image = sample_photo(name)
        scale = short_side / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        bases.append(image.resize(size, Image.Resampling.BICUBIC))
    return [bases[i % len(bases)].copy() for i in range(count)]
