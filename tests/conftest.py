"""Offline fixtures: real photos from scikit-image's bundled samples, isolated library dirs."""

from __future__ import annotations

import os

# Before anything imports Qt or a hub client: no screen, no network.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

#: scikit-image sample -> file name used in photo folders.
SAMPLES = {
    "chelsea": "chelsea.jpg",  # a tabby cat
    "coffee": "coffee.jpg",  # a cup of coffee on a saucer
    "astronaut": "astronaut.jpg",  # Eileen Collins in a spacesuit
    "rocket": "rocket.jpg",  # a rocket on the launch pad
    "motorcycle_left": "motorcycle.jpg",  # a motorcycle
}


def sample_image(name: str) -> Image.Image:
    """A scikit-image sample photo as an RGB PIL image (offline: it ships in the wheel)."""
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8)).convert("RGB")


@pytest.fixture(scope="session")
def sample_images() -> dict[str, Image.Image]:
    return {name: sample_image(name) for name in SAMPLES}


@pytest.fixture
def photo_dir(tmp_path: Path, sample_images: dict[str, Image.Image]) -> Path:
    """A folder of real photos as JPEGs: chelsea (cat), coffee, astronaut, rocket, motorcycle."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, filename in SAMPLES.items():
        sample_images[name].save(folder / filename, quality=90)
    return folder


@pytest.fixture
def library_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated library and config location, never the developer's real ones."""
    lib = tmp_path / "library"
    monkeypatch.setenv("VISUALLENS_LIBRARY", str(lib))
    monkeypatch.setenv("VISUALLENS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("VISUALLENS_CACHE_DIR", str(tmp_path / "cache"))
    yield lib
