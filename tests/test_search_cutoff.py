"""Search shows where its matches end: calibrated per photo against a null set, any encoder.

Real photos (scikit-image's samples, with the generic images that used to float to the top of
unrelated queries: cell, retina, phantom) and the real embedded encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageOps
from samples import sample_image

from visuallens_app.library.search import PhotoSearch, standout
from visuallens_app.library.store import PhotoStore

NAMES = ("chelsea", "coffee", "rocket", "motorcycle_left", "cell", "retina", "phantom", "brick")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.models.registry import load_encoder

    root = tmp_path_factory.mktemp("cutoff")
    photos = root / "photos"
    (photos / "copies").mkdir(parents=True)
    for name in NAMES:
        image = sample_image(name)
        image.save(photos / f"{name}.jpg", quality=90)
    cat = sample_image("chelsea")
    ImageOps.mirror(cat.resize((cat.width // 2, cat.height // 2))).save(photos / "copies/cat.jpg")
    encoder = load_encoder("embedded", device="cpu").encoder
    with PhotoStore(root / "library") as store:
        run_to_end(index_folders(store, encoder, [photos]))
    return root / "library", photos


def _search(library: Path) -> tuple[PhotoStore, PhotoSearch]:
    from visuallens_app.models.registry import load_encoder

    store = PhotoStore(library)
    return store, PhotoSearch(store, load_encoder("embedded", device="cpu").encoder)


def test_matches_come_first_and_hubs_fall_below_the_line(library: tuple[Path, Path]) -> None:
    store, search = _search(library[0])
    with store:
        hits = search.text("a cup of coffee", k=20)
        assert len(hits) == len(NAMES) + 1  # still the whole library, best first per side
        matches = [h.photo.path.name for h in hits if h.match]
        assert matches == ["coffee.jpg"]
        assert [h.match for h in hits] == sorted((h.match for h in hits), reverse=True)
        weaker = [h.score for h in hits if not h.match]
        assert weaker == sorted(weaker, reverse=True)
        # A query about nothing in the library matches nothing, though it still lists photos.
        assert not any(h.match for h in search.text("a bowl of ramen", k=20))


def test_similar_marks_the_copy_and_not_the_textures(library: tuple[Path, Path]) -> None:
    store, search = _search(library[0])
    with store:
        hits = search.similar(library[1] / "chelsea.jpg", k=20)
    assert [h.photo.path.name for h in hits if h.match] == ["cat.jpg"]


def test_cli_search_draws_the_line_and_json_says_match_per_hit(
    library: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from visuallens_app.cli import main

    common = ["--library", str(library[0]), "--encoder", "embedded", "--device", "cpu"]
    assert main(["search", "a cup of coffee", "-k", "4", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("coffee.jpg")
    assert lines[1] == "-- weaker matches --"
    assert len(lines) == 5
    assert main(["search", "a cup of coffee", "-k", "3", "--json", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["match"] for r in rows] == [True, False, False]
    assert main(["search", "a bowl of ramen", "-k", "2", *common]) == 0
    assert capsys.readouterr().out.startswith("No photo matches well; the closest:")


def test_standout_is_in_units_of_each_photos_own_spread() -> None:
    rng = np.random.default_rng(0)
    null = rng.normal(size=(50, 8)).astype(np.float32)
    null /= np.linalg.norm(null, axis=1, keepdims=True)
    photos = null[:2] * 1.0
    sims = photos @ null.T
    # Its own row (cosine 1) is left out of each photo's null set.
    own = np.where(sims >= 0.9999, np.nan, sims)
    expected = (0.5 - np.nanmean(own, axis=1)) / np.nanstd(own, axis=1)
    got = standout(np.full(2, 0.5, dtype=np.float32), photos, null)
    assert np.allclose(got, expected, atol=1e-4)


class _Counting:
    """The real encoder, counting the texts it is asked to embed."""

    def __init__(self, encoder: object) -> None:
        self._encoder = encoder
        self.texts: list[str] = []

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        self.texts.extend(texts)
        return self._encoder.encode_texts(texts)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._encoder, name)


def test_a_new_librarys_first_search_does_not_embed_the_null_set_again(
    library: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The null set belongs to the encoder: a second library (a new process, nothing in memory)
    reads it from the cache directory instead of embedding some 200 words again."""
    import shutil
    import sqlite3

    from visuallens_app.lens import history
    from visuallens_app.models.registry import load_encoder

    monkeypatch.setenv("VISUALLENS_CACHE_DIR", str(tmp_path / "cache"))
    found = {}
    for name in ("first", "second"):
        copy = tmp_path / name
        shutil.copytree(library[0], copy)
        with sqlite3.connect(copy / "library.sqlite") as conn:
            conn.execute(f"DROP TABLE IF EXISTS {history.TEXT_VECTORS}")  # nothing embedded here
        with history._memo_lock:
            history._memo.clear()  # nothing in this process's memory either
        encoder = _Counting(load_encoder("embedded", device="cpu").encoder)
        with PhotoStore(copy) as store:
            hits = PhotoSearch(store, encoder).text("coffee in a cup on a table", k=20)  # type: ignore[arg-type]
        found[name] = (encoder.texts, [(h.photo.path.name, h.match) for h in hits])
    assert len(found["first"][0]) > 100  # the query and the null set's words
    assert found["second"][0] == ["coffee in a cup on a table"]  # the query alone
    assert found["second"][1] == found["first"][1]  # the same line between matches and the rest
