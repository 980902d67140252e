"""A library of thousands of photos: the grid spans all of them at once and loads what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QDate, QPoint, Qt

from visuallens_app.gui import models
from visuallens_app.gui.tasks import BrowseQuery

PHOTOS = 3_000


def _name(i: int) -> str:
    return f"IMG_{i:05d}.jpg"


@pytest.fixture
def big_library(library_dir: Path, tmp_path: Path) -> list[Path]:
    """``PHOTOS`` rows written straight into the store, in two folders, one photo a day."""
    from datetime import date, timedelta

    from visuallens_app.library.store import NewPhoto, PhotoStore

    roots = [tmp_path / "camera", tmp_path / "phone"]
    start = date(2015, 1, 1)
    with PhotoStore(library_dir) as store:
        store.add_roots(roots)
        store.write_batch(
            [
                NewPhoto(
                    path=roots[i % 2] / _name(i),
                    root=roots[i % 2],
                    size=1000 + i,
                    mtime_ns=1_600_000_000_000_000_000 + i,
                    content_hash=f"{i:032x}",
                    width=640,
                    height=480,
                    format="JPEG",
                    taken_at=f"{start + timedelta(days=i)}T12:00:00",
                )
                for i in range(PHOTOS)
            ],
            {},
            "none",
        )
    return roots


@pytest.fixture
def big_window(qtbot, make_window, big_library: list[Path]):
    # The folders are not on disk and the session is not started: no model, no indexing, only
    # the grid over the store.
    window = make_window(big_library, start=False)
    window.resize(1000, 700)
    return window


def _shown_names(panel) -> list[str]:
    """Names of the rows painted in the grid's viewport (placeholders give '')."""
    grid, model = panel.grid, panel.model
    viewport = grid.viewport().rect()
    first = grid.indexAt(QPoint(8, 8)).row()
    names = []
    for row in range(max(first, 0), model.rowCount()):
        rect = grid.visualRect(model.index(row))
        if rect.top() > viewport.bottom():
            break
        if rect.intersects(viewport):
            names.append(model.data(model.index(row), Qt.ItemDataRole.DisplayRole) or "")
    return names


def test_the_grid_counts_every_photo_before_loading_their_pages(qtbot, big_window) -> None:
    panel = big_window.library_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() > 0, timeout=10_000)
    # The whole library, though only the first page or two are in memory.
    assert panel.model.rowCount() == PHOTOS
    assert len(panel.model.cached_pages) < PHOTOS // models.PAGE_SIZE
    assert panel.model.photo(PHOTOS - 1) is None
    bar = panel.grid.verticalScrollBar()
    assert bar.maximum() > 100 * panel.grid.viewport().height()  # spans every row already
    qtbot.waitUntil(lambda: _shown_names(panel)[:2] == [_name(PHOTOS - 1), _name(PHOTOS - 2)])


def test_jumping_to_the_end_shows_the_oldest_photos(qtbot, big_window) -> None:
    panel = big_window.library_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() == PHOTOS, timeout=10_000)
    bar = panel.grid.verticalScrollBar()
    bar.setValue(bar.maximum())
    # Placeholders first, then the names once the last page arrived (newest first: the last
    # row is the oldest photo).
    qtbot.waitUntil(lambda: _shown_names(panel)[-1:] == [_name(0)], timeout=10_000)
    shown = _shown_names(panel)
    assert all(shown)
    assert shown == [_name(i) for i in range(len(shown) - 1, -1, -1)]
    # Memory stays bounded however far the grid scrolled.
    for value in range(0, bar.maximum(), bar.maximum() // 40):
        bar.setValue(value)
        qtbot.wait(5)
    qtbot.waitUntil(lambda: not panel.model.pages_loading, timeout=10_000)
    assert len(panel.model.cached_pages) <= models.MAX_PAGES


def test_filters_narrow_the_big_grid(qtbot, big_window, big_library: list[Path]) -> None:
    panel = big_window.library_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() == PHOTOS, timeout=10_000)
    camera, _phone = big_library

    panel.set_query(BrowseQuery(root=camera))
    qtbot.waitUntil(lambda: panel.model.rowCount() == PHOTOS // 2, timeout=10_000)
    qtbot.waitUntil(lambda: all(_shown_names(panel)), timeout=10_000)
    assert all(int(name[4:9]) % 2 == 0 for name in _shown_names(panel))

    panel.set_query(BrowseQuery(date_from="2015-01-01", date_to="2015-01-31"))
    qtbot.waitUntil(lambda: panel.model.rowCount() == 31, timeout=10_000)
    qtbot.waitUntil(lambda: _shown_names(panel)[:1] == [_name(30)], timeout=10_000)

    panel.sort.setCurrentIndex(1)  # oldest first
    qtbot.waitUntil(lambda: _shown_names(panel)[:1] == [_name(0)], timeout=10_000)
    panel.date_to.setDate(QDate(1900, 1, 1))  # "any date" again: the rest of the library
    qtbot.waitUntil(lambda: panel.model.rowCount() == PHOTOS, timeout=10_000)
