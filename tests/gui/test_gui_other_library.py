"""A window opened on another library than the settings name (``visuallens-app --library DIR``,
which sets VISUALLENS_LIBRARY): it shows that library's own folders and never writes them into
the settings (issue 11 item 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from visuallens_app.settings import Settings


@pytest.fixture
def other_library(library_copy, sample_images, tmp_path: Path):
    """(library, photos, elsewhere): VISUALLENS_LIBRARY names ``library`` (indexed from
    ``photos``), while the settings name a library of their own with the folder ``elsewhere``."""
    library, photos = library_copy
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sample_images["chelsea"].save(elsewhere / "settings-cat.jpg", quality=90)
    Settings(
        library_dir=str(tmp_path / "own-library"),
        photo_folders=[str(elsewhere)],
        encoder="embedded",
    ).save()
    return library, photos, elsewhere


@pytest.fixture
def open_window(qtbot, encoder_loaded):
    """Start the app's session and window as ``visuallens-app`` does, on the saved settings."""
    from visuallens_app.gui.main_window import MainWindow
    from visuallens_app.gui.session import LibrarySession

    sessions = []

    def make():
        session = LibrarySession(Settings.load(), watch=False)
        sessions.append(session)
        window = MainWindow(session)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        with qtbot.waitSignal(session.encoder_ready, timeout=120_000):
            session.start()
        return window

    yield make
    for session in sessions:
        assert session.shutdown(15_000)


def _names(panel) -> list[str]:
    return sorted(item.path.name for item in panel.model.rows())


def _folder_labels(panel) -> list[str]:
    return [panel.folder_filter.itemText(i) for i in range(panel.folder_filter.count())]


def test_the_window_shows_the_opened_librarys_folders_not_the_settings(
    qtbot, open_window, other_library, tmp_path: Path
) -> None:
    library, photos, elsewhere = other_library
    window = open_window()
    session, panel = window.session, window.library_panel
    assert session.library_dir == library
    assert not session.follows_settings
    qtbot.waitUntil(lambda: session.folders == [photos], timeout=10_000)
    qtbot.waitUntil(lambda: window.pages.currentIndex() == 1, timeout=5000)  # not the welcome
    qtbot.waitUntil(lambda: _folder_labels(panel) == ["All folders", "photos"], timeout=10_000)
    qtbot.waitUntil(lambda: not session.indexing and not session.index_pending, timeout=60_000)
    qtbot.waitUntil(lambda: len(_names(panel)) == 5, timeout=10_000)
    assert "settings-cat.jpg" not in _names(panel)  # the settings' folder was not indexed here
    assert not (tmp_path / "own-library" / "library.sqlite").exists()
    assert Settings.load().photo_folders == [str(elsewhere)]


def test_a_folder_added_there_belongs_to_that_library_only(
    qtbot, open_window, other_library, sample_images, tmp_path: Path
) -> None:
    from visuallens_app.gui.panels.settings import SettingsDialog
    from visuallens_app.library.store import PhotoStore

    library, photos, elsewhere = other_library
    more = tmp_path / "more"
    more.mkdir()
    sample_images["coffee"].save(more / "latte.jpg", quality=90)
    window = open_window()
    session = window.session
    qtbot.waitUntil(lambda: session.folders == [photos], timeout=10_000)
    qtbot.waitUntil(lambda: not session.indexing and not session.index_pending, timeout=60_000)
    with qtbot.waitSignal(session.indexing_finished, timeout=60_000):
        window.add_folder(more)
    assert session.folders == [photos, more]
    assert Settings.load().photo_folders == [str(elsewhere)]  # not written into the settings
    with PhotoStore(library) as store:
        assert store.roots() == [more, photos]
    qtbot.waitUntil(lambda: "latte.jpg" in _names(window.library_panel), timeout=10_000)

    # The Settings dialog lists that library's folders, says whose they are, and removing
    # one there forgets it in that library, not in the settings.
    dialog = SettingsDialog(session, window)
    qtbot.addWidget(dialog)
    assert dialog.folder_list() == [str(photos), str(more)]
    assert str(library) in dialog.library_note.text()
    assert "not into your settings" in dialog.library_note.text()
    dialog.folders.item(1).setSelected(True)
    dialog._remove_folder()
    dialog.accept()
    qtbot.waitUntil(lambda: session.folders == [photos], timeout=5000)
    qtbot.waitUntil(lambda: "latte.jpg" not in _names(window.library_panel), timeout=10_000)
    with PhotoStore(library) as store:
        assert store.roots() == [photos]
    saved = Settings.load()
    assert saved.photo_folders == [str(elsewhere)]
    assert saved.library_dir == str(tmp_path / "own-library")  # the dialog kept the location


def test_the_settings_own_library_still_follows_the_settings_folders(
    qtbot, open_window, other_library, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the override the same settings open their own library with their own folders."""
    _library, _photos, elsewhere = other_library
    monkeypatch.delenv("VISUALLENS_LIBRARY")
    window = open_window()
    session = window.session
    assert session.library_dir == tmp_path / "own-library"
    assert session.follows_settings
    assert session.folders == [elsewhere]
    qtbot.waitUntil(lambda: _names(window.library_panel) == ["settings-cat.jpg"], timeout=60_000)
    qtbot.waitUntil(lambda: not session.indexing and not session.index_pending, timeout=60_000)


def test_a_folder_added_before_the_library_was_read_keeps_the_librarys_own_folders(
    qtbot, encoder_loaded, other_library, sample_images, tmp_path: Path
) -> None:
    """A folder added at once (the welcome page offers it before the library's first summary
    has come) joins the library's folders instead of standing in for them."""
    from visuallens_app.gui.main_window import MainWindow
    from visuallens_app.gui.session import LibrarySession
    from visuallens_app.library.store import PhotoStore

    library, photos, _elsewhere = other_library
    more = tmp_path / "more"
    more.mkdir()
    sample_images["coffee"].save(more / "latte.jpg", quality=90)
    session = LibrarySession(Settings.load(), watch=False)
    window = MainWindow(session)
    qtbot.addWidget(window)
    try:
        assert session.add_folder(more)  # before start(): nothing is known of the library yet
        session.start()
        # In either order: the first summary may come before or after "more" was indexed.
        qtbot.waitUntil(lambda: sorted(session.folders) == [more, photos], timeout=30_000)
        qtbot.waitUntil(lambda: not session.indexing and not session.index_pending, timeout=60_000)
        with PhotoStore(library) as store:
            assert store.roots() == [more, photos]
        qtbot.waitUntil(lambda: len(_names(window.library_panel)) == 6, timeout=10_000)
    finally:
        assert session.shutdown(15_000)


def test_settings_refuse_new_folders_and_a_new_location_in_one_ok(
    qtbot, open_window, other_library, tmp_path: Path
) -> None:
    """The folders listed are the open library's, the location is the settings': moving away
    in the same OK would cancel the indexing that records the folders just added."""
    from visuallens_app.gui.panels.settings import SettingsDialog

    library, photos, elsewhere = other_library
    more = tmp_path / "more"
    more.mkdir()
    window = open_window()
    session = window.session
    qtbot.waitUntil(lambda: session.folders == [photos], timeout=10_000)
    dialog = SettingsDialog(session, window)
    qtbot.addWidget(dialog)
    dialog.add_folder_path(str(more))
    dialog.library.setText(str(tmp_path / "moved"))
    dialog.accept()
    assert dialog.result() != dialog.DialogCode.Accepted  # still open, nothing applied
    assert "not both at once" in dialog.library_note.text()
    assert session.library_dir == library
    assert session.folders == [photos]
    saved = Settings.load()
    assert saved.library_dir == str(tmp_path / "own-library")
    assert saved.photo_folders == [str(elsewhere)]

    dialog.library.setText(str(tmp_path / "own-library"))  # one change at a time: accepted
    dialog.accept()
    assert dialog.result() == dialog.DialogCode.Accepted
    qtbot.waitUntil(lambda: session.folders == [photos, more], timeout=10_000)
