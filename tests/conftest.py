"""Offline fixtures: real photos from scikit-image's bundled samples, isolated library dirs."""

from __future__ import annotations

import os

# Before anything imports Qt or a hub client: no screen, no network.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import pytest
from PIL import Image
from samples import sample_image

#: scikit-image sample -> file name used in photo folders.
SAMPLES = {
    "chelsea": "chelsea.jpg",  # a tabby cat
    "coffee": "coffee.jpg",  # a cup of coffee on a saucer
    "astronaut": "astronaut.jpg",  # Eileen Collins in a spacesuit
    "rocket": "rocket.jpg",  # a rocket on the launch pad
    "motorcycle_left": "motorcycle.jpg",  # a motorcycle
}


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real embedded encoder, loaded once through the registry with a private cache dir.

    Going through the registry means CLI tests (``--encoder embedded``) get this same instance
    instead of paying for a second load.
    """
    from visuallens_app.models.registry import clear_encoder_cache, load_encoder

    saved = os.environ.get("VISUALLENS_CACHE_DIR")
    os.environ["VISUALLENS_CACHE_DIR"] = str(tmp_path_factory.mktemp("lens-encoder-cache"))
    try:
        yield load_encoder("embedded", device="cpu").encoder
    finally:
        clear_encoder_cache()
        if saved is None:
            os.environ.pop("VISUALLENS_CACHE_DIR", None)
        else:
            os.environ["VISUALLENS_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def sample_files() -> dict[str, str]:
    """Sample name -> file name used in photo folders (see SAMPLES)."""
    return dict(SAMPLES)


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
def library_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated library and config location, never the developer's real ones."""
    lib = tmp_path / "library"
    monkeypatch.setenv("VISUALLENS_LIBRARY", str(lib))
    monkeypatch.setenv("VISUALLENS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("VISUALLENS_CACHE_DIR", str(tmp_path / "cache"))
    return lib


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Family -> folder of a tiny random VLM saved the users' way (tests/tiny_vlms.py)."""
    import tiny_vlms

    root = tmp_path_factory.mktemp("tiny-vlms")
    return {family: tiny_vlms.build(family, root / family) for family in tiny_vlms.FAMILIES}


@pytest.fixture(params=["llava", "qwen2_vl", "idefics3"])
def vlm_family(request: pytest.FixtureRequest) -> str:
    """Each VLM family the runtime is tested on, in turn."""
    return str(request.param)


@pytest.fixture
def tiny_vlm(tiny_vlm_dirs: dict[str, Path], vlm_family: str) -> object:
    """A freshly loaded tiny VLM of each family in turn (fresh: tests may add tokens to it)."""
    from visuallens_app.vlm import load_vlm

    return load_vlm(tiny_vlm_dirs[vlm_family], device="cpu")


@pytest.fixture
def fifo_released_after_a_while() -> Callable[[Path], AbstractContextManager[None]]:
    """``with release(fifo):`` opens ``fifo`` for writing after 5 s unless the block ended first.

    A reader stuck in a blocking open() of a named pipe is released by a writer, so that a
    regression to a blocking open makes a test fail instead of hanging the whole run.
    """

    @contextmanager
    def release(fifo: Path, seconds: float = 5.0) -> Iterator[None]:
        done = threading.Event()

        def open_for_writing() -> None:
            if not done.wait(seconds):
                with suppress(OSError):  # nobody is reading: nothing to release
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

        thread = threading.Thread(target=open_for_writing, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    return release
