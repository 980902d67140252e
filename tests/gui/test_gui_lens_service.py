"""The Recommendations panel draws the lens service's report: no photo, no 'Because of'."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel


def test_a_category_with_nothing_in_the_photos_says_so_above_the_cards(
    qtbot, make_window, library_copy
) -> None:
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel
    from visuallens_app.lens.service import NOTHING_RELATES

    _library, photos = library_copy
    window = make_window([photos])
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=30_000)
    panel = window.show_panel(RecommendationsPanel)
    qtbot.waitUntil(lambda: panel.category.count() > 0, timeout=30_000)
    with qtbot.waitSignal(panel.recommendations_shown, timeout=60_000) as blocker:
        panel.set_category("hiking trail")
    view = blocker.args[0]
    assert view.category == "hiking trail"
    assert panel.status.text().startswith("Nothing in your photos relates to hiking trail")
    assert panel.cards
    for card in panel.cards:
        assert not card.card.evidence
        note = card.findChild(QLabel, "CardNoEvidence")
        assert note is not None
        assert note.text() == NOTHING_RELATES

    with qtbot.waitSignal(panel.recommendations_shown, timeout=60_000):
        panel.set_category("coffee shop")
    assert not panel.status.text().startswith("Nothing in your photos")
    first = panel.cards[0]
    assert first.card.evidence
    assert first.findChild(QLabel, "CardNoEvidence") is None
    assert panel.grid_image.pixmap() is not None
