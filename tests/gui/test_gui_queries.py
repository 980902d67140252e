"""Searches and recommendations keep the index and the history loaded between questions."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt


def _names(panel) -> list[str]:
    return [item.path.name for item in panel.model.rows()]


def _search(qtbot, panel, text: str) -> list[str]:
    panel.search(text)
    qtbot.waitUntil(lambda: "best first" in panel.results_label.text(), timeout=20_000)
    assert text in panel.results_label.text()
    return _names(panel)


def test_searches_in_a_row_reuse_the_index_until_photos_are_added(  # noqa: PLR0917
    qtbot, make_window, library_copy, monkeypatch, sample_images, tmp_path: Path
) -> None:
    from visuallens_app.index import VectorIndex

    loads: list[str] = []
    load_or_build = VectorIndex.load_or_build.__func__  # type: ignore[attr-defined]

    def counting(cls, directory, name, **kwargs):
        loads.append(kwargs["fingerprint"])
        return load_or_build(cls, directory, name, **kwargs)

    monkeypatch.setattr(VectorIndex, "load_or_build", classmethod(counting))
    _library, photos = library_copy
    window = make_window([photos])
    panel = window.library_panel
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=30_000)

    assert _search(qtbot, panel, "cat")[0] == "chelsea.jpg"
    assert _search(qtbot, panel, "a cup of coffee")[0] == "coffee.jpg"
    panel.find_similar(panel.model.photo(0))
    qtbot.waitUntil(lambda: panel.results_label.text().startswith("Photos like"), timeout=20_000)
    assert "coffee.jpg" not in _names(panel)  # photos like coffee.jpg, itself left out
    assert len(loads) == 1, "the index was read from disk again for the same library"

    # New photos invalidate it: the next search sees them.
    more = tmp_path / "more"
    more.mkdir()
    sample_images["chelsea"].rotate(90).save(more / "another_cat.jpg", quality=90)
    with qtbot.waitSignal(window.session.indexing_finished, timeout=60_000):
        window.add_folder(more)
    assert "another_cat.jpg" in _search(qtbot, panel, "cat")[:2]
    assert len(loads) == 2


def test_recommendation_runs_share_one_history(qtbot, make_window, library_copy, monkeypatch):
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel
    from visuallens_app.lens.history import History

    reads: list[str] = []
    from_store = History.from_store.__func__  # type: ignore[attr-defined]

    def counting(cls, store, encoder_id, *args, **kwargs):
        reads.append(encoder_id)
        return from_store(cls, store, encoder_id, *args, **kwargs)

    monkeypatch.setattr(History, "from_store", classmethod(counting))
    _library, photos = library_copy
    window = make_window([photos])
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=30_000)
    panel = window.show_panel(RecommendationsPanel)
    qtbot.waitUntil(lambda: panel.category.count() > 1, timeout=30_000)
    for category in ("coffee shop", "museum", "coffee shop"):
        with qtbot.waitSignal(panel.recommendations_shown, timeout=60_000) as blocker:
            panel.set_category(category)
        assert blocker.args[0].category == category
        assert panel.cards, panel.status.text()
    # The detail view's aspect words use the same history too.
    window.show_panel(type(window.library_panel))
    library = window.library_panel
    qtbot.waitUntil(lambda: library.model.rowCount() == 5, timeout=10_000)
    library.open_row(0)
    qtbot.waitUntil(lambda: library.detail.aspects.text() not in ("", "…"), timeout=30_000)
    qtbot.keyClick(library.detail, Qt.Key.Key_Escape)
    assert len(reads) == 1, "the photo history was re-read for every question"
