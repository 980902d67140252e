"""The library grid shows where a search's matches end: weaker matches dimmed, after a line."""

from __future__ import annotations

from PySide6.QtCore import Qt


def test_search_marks_the_matches_and_dims_the_weaker_ones(
    qtbot, make_window, library_copy
) -> None:
    from visuallens_app.gui.models import DividerRole, MatchRole

    _library, photos = library_copy
    window = make_window([photos])
    panel = window.library_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() == 5, timeout=10_000)
    panel.search_box.setText("a cup of coffee")
    qtbot.keyClick(panel.search_box, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: panel.model.mode == "results", timeout=20_000)
    model = panel.model
    rows = [model.index(r) for r in range(model.rowCount())]
    assert [model.data(i, MatchRole) for i in rows] == [True, False, False, False, False]
    assert model.photo(0).path.name == "coffee.jpg"
    assert [model.data(i, DividerRole) for i in rows] == [False, True, False, False, False]
    assert "weaker match" in model.data(rows[1], Qt.ItemDataRole.ToolTipRole)
    text = panel.results_label.text()
    assert "1 match, best first, then 4 weaker matches (dimmed)" in text
    panel.grid.viewport().grab()  # the delegate paints the dimmed tiles and the line

    panel.show_all_button.click()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 5, timeout=10_000)
    assert panel.model.data(panel.model.index(0), MatchRole) is None  # browsing: no cut-off
