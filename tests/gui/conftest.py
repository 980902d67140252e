"""GUI fixtures: a real encoder and a small real library, shared per session, copied per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from visuallens_app.settings import Settings

pytest.importorskip("pytestqt")


@pytest.fixture(scope="session")
def encoder_loaded() -> str:
    """Load the real embedded encoder once per test session (the registry keeps it)."""
    from visuallens_app.models.registry import load_encoder

    return load_encoder("embedded").reason


@pytest.fixture(scope="session")
def indexed_library(
    tmp_path_factory: pytest.TempPathFactory,
    sample_images: dict[str, Image.Image],
    encoder_loaded: str,
) -> tuple[Path, Path]:
    """(library, photos): the five sample photos indexed once; tests copy it."""
    from tests_gui_support import SAMPLES, index_once

    base = tmp_path_factory.mktemp("indexed")
    photos = base / "photos"
    photos.mkdir()
    for name, filename in SAMPLES.items():
        sample_images[name].save(photos / filename, quality=90)
    library = base / "library"
    index_once(library, photos)
    return library, photos


@pytest.fixture
def library_copy(
    indexed_library: tuple[Path, Path], library_dir: Path, tmp_path: Path
) -> tuple[Path, Path]:
    """A private copy of the indexed library and its photo folder (paths rewritten)."""
    source_library, source_photos = indexed_library
    photos = tmp_path / "photos"
    shutil.copytree(source_photos, photos)
    shutil.copytree(source_library, library_dir)
    _rewrite_roots(library_dir, source_photos, photos)
    return library_dir, photos


def _rewrite_roots(library: Path, old: Path, new: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(library / "library.sqlite")
    with conn:
        for table, column in (
            ("photos", "path"),
            ("photos", "root"),
            ("roots", "path"),
            ("failures", "path"),
            ("failures", "root"),
        ):
            conn.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                f"WHERE {column} LIKE ? || '%'",
                [str(new), len(str(old)) + 1, str(old)],
            )
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    conn.close()


@pytest.fixture(autouse=True)
def no_dangling_threads() -> Iterator[None]:
    """Every test leaves the worker pools drained: no job outlives its window."""
    yield
    from visuallens_app.gui.workers import wait_for_all_pools

    assert wait_for_all_pools(15_000), "a worker thread was still running after the test"


@pytest.fixture
def make_session(qtbot, library_dir: Path, encoder_loaded: str):
    """Build a started LibrarySession on the test's isolated settings; shut down afterwards."""
    from visuallens_app.gui.session import LibrarySession

    sessions = []

    def make(
        folders: list[Path] | None = None, *, watch: bool = False, start: bool = True, **values
    ):
        settings = Settings(
            photo_folders=[str(f) for f in folders or []],
            library_dir=str(library_dir),
            encoder="embedded",
            **values,
        )
        settings.save()
        session = LibrarySession(settings, watch=watch)
        sessions.append(session)
        if start:
            with qtbot.waitSignal(session.encoder_ready, timeout=120_000):
                session.start()
        return session

    yield make
    for session in sessions:
        assert session.shutdown(15_000)


@pytest.fixture
def make_window(qtbot, make_session):
    """A shown MainWindow over a started session, registered with qtbot."""
    from visuallens_app.gui.main_window import MainWindow

    def make(folders: list[Path] | None = None, **kwargs):
        session = make_session(folders, **kwargs)
        window = MainWindow(session)
        qtbot.addWidget(window)
        with qtbot.waitActive(window):
            window.show()
            window.activateWindow()
        return window

    return make
