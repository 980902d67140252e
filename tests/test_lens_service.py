"""The lens service: one recommendation for the CLI and the window, explanations that hold.

Real photos (scikit-image's samples) indexed with the real embedded encoder, the shipped catalog.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from visuallens_app.lens.catalog import load_default_catalog
from visuallens_app.lens.pipeline import Recommender
from visuallens_app.lens.service import NOTHING_RELATES, LensOptions, LensReport, recommend
from visuallens_app.library.store import PhotoStore


@pytest.fixture(scope="module")
def library(
    embedded: object,
    sample_images: dict[str, Image.Image],
    sample_files: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The five sample photos (cat, coffee, astronaut, rocket, motorcycle), indexed."""
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.models.base import Encoder

    assert isinstance(embedded, Encoder)
    root = tmp_path_factory.mktemp("service")
    photos = root / "photos"
    photos.mkdir()
    for name, filename in sample_files.items():
        sample_images[name].save(photos / filename, quality=90)
    with PhotoStore(root / "library") as store:
        run_to_end(index_folders(store, embedded, [photos]))
    return root / "library"


def _report(library: Path, embedded: object, category: str, k: int) -> LensReport:
    from visuallens_app.models.base import Encoder

    assert isinstance(embedded, Encoder)
    with PhotoStore(library) as store:
        return recommend(
            Recommender(store, embedded), load_default_catalog(), category, LensOptions(k=k)
        )


def _explanations(report: LensReport) -> dict[str, object]:
    return {
        item.item.id: (
            [(e.photo.path.name, e.contribution) for e in item.evidence],
            item.aspects,
            item.explanation,
        )
        for item in report.items
    }


def test_an_items_explanation_does_not_depend_on_how_many_are_listed(
    library: Path, embedded: object
) -> None:
    short = _report(library, embedded, "coffee shop", 2)
    long = _report(library, embedded, "coffee shop", 10)
    assert [i.item.id for i in long.items[:2]] == [i.item.id for i in short.items]
    both = _explanations(long)
    for item_id, explanation in _explanations(short).items():
        assert both[item_id] == explanation
    assert short.items[0].evidence  # the coffee photo explains the best coffee shop


def test_the_report_carries_the_profile_grid_photos_and_typed_evidence(
    library: Path, embedded: object
) -> None:
    report = _report(library, embedded, "coffee shop", 5)
    assert [i.rank for i in report.items] == [1, 2, 3, 4, 5]
    assert report.profile
    assert report.profile[0].path.name == "coffee.jpg"
    assert report.retrieved >= len(report.profile)
    grid = report.grid()
    assert grid.tiles == len(report.profile)
    assert grid.image.size == (896, 896)
    first = report.items[0]
    assert first.evidence[0].photo.path.name == "coffee.jpg"
    assert first.explanation == "Because of coffee.jpg." or first.explanation.startswith(
        "Because of coffee.jpg,"
    )
    row = first.as_json()
    assert row["relates"] is True
    assert row["evidence"] == [str(e.photo.path) for e in first.evidence]


def test_cli_recommend_prints_the_services_report(
    library: Path, embedded: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from visuallens_app.cli import main

    common = ["--library", str(library), "--encoder", "embedded", "--device", "cpu"]
    assert main(["recommend", "--category", "coffee shop", "-k", "3", "--json", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = _report(library, embedded, "coffee shop", 3).as_json()
    assert rows == json.loads(json.dumps(expected, default=str))
    assert main(["recommend", "--category", "coffee shop", "-k", "0", *common]) == 1
    assert capsys.readouterr().err.strip().endswith("-k must be at least 1.")


def test_nothing_relates_is_said_instead_of_weak_evidence(
    library: Path, embedded: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from visuallens_app.cli import main

    report = _report(library, embedded, "hiking trail", 5)
    assert all(not item.evidence for item in report.items), _explanations(report)
    assert all(item.explanation == NOTHING_RELATES for item in report.items)
    assert report.library_note is not None and "hiking trail" in report.library_note  # noqa: PT018
    # The order is the catalog's own, and the note says what it follows.
    assert report.lens.personal == 0.0
    assert "how typical of the category each item is" in report.library_note

    common = ["--library", str(library), "--encoder", "embedded", "--device", "cpu"]
    assert main(["recommend", "--category", "hiking trail", "-k", "3", "--explain", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Nothing in your photos relates to hiking trail")
    assert out[1].startswith(" 1. ")
    assert "nothing in your photos relates to this" in out[2]


@pytest.mark.parametrize("category", ["park", "music venue", "hiking trail"])
def test_the_library_note_does_not_change_with_how_many_items_are_listed(
    library: Path, embedded: object, category: str
) -> None:
    """Issue 11 item 4: the note above the list said "nothing relates" at -k 1 for a park (its
    best item has no photo behind it) and nothing at -k 10 (items 7 and 8 have one)."""
    n = sum(1 for item in load_default_catalog().items if item.category == category)
    whole = _report(library, embedded, category, n)
    notes = {k: _report(library, embedded, category, k).library_note for k in (1, 10)}
    assert notes[1] == notes[10] == whole.library_note
    # The note says nothing relates exactly when no item of the category has a photo behind it.
    assert (whole.library_note is None) == any(item.relates for item in whole.items)


def test_a_library_too_small_is_refused_before_the_catalog_is_read(
    embedded: object, tmp_path: Path
) -> None:
    """Reading a large catalog takes minutes: an empty library must not wait for it to hear
    that it has too few photos."""
    from visuallens_app.errors import NotEnoughHistoryError
    from visuallens_app.jobs import run_to_end
    from visuallens_app.lens.history import ITEM_VECTORS
    from visuallens_app.lens.service import prepare

    with PhotoStore(tmp_path / "empty") as store:
        recommender = Recommender(store, embedded)  # type: ignore[arg-type]
        with pytest.raises(NotEnoughHistoryError, match="visuallens index"):
            run_to_end(prepare(recommender, load_default_catalog(), "coffee shop"))
        tables = store.db.table_names()
        assert ITEM_VECTORS not in tables or store.db[ITEM_VECTORS].count == 0
