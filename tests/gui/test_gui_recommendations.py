"""Recommendations in the window: cards with evidence, the profile grid, catalog problems."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import QLabel
from tests_gui_support import open_recommendations, show_category


def test_coffee_shop_recommendations_show_cards_with_evidence(
    qtbot, make_window, library_copy
) -> None:
    _library, photos = library_copy
    _window, panel = open_recommendations(qtbot, make_window, photos)
    assert panel.category.findText("coffee shop") >= 0
    show_category(qtbot, panel, "coffee shop")
    assert panel.cards, panel.status.text()
    first = panel.cards[0].card
    assert first.name and first.score == max(c.card.score for c in panel.cards)  # noqa: PT018
    assert any(card.card.evidence for card in panel.cards)  # explained by the user's own photos
    evidence_names = {e.path.name for c in panel.cards for e in c.card.evidence}
    assert evidence_names <= {p.name for p in photos.iterdir()}
    assert panel.grid_image.pixmap() is not None and not panel.grid_image.pixmap().isNull()  # noqa: PT018


def test_changing_category_cancels_the_previous_run(qtbot, make_window, library_copy) -> None:
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel

    _library, photos = library_copy
    window = make_window([photos])
    panel = window.show_panel(RecommendationsPanel)
    qtbot.waitUntil(lambda: panel.category.count() > 1, timeout=30_000)
    jobs = []
    window.session.runner.job_started.connect(
        lambda job: job.key == "recommend" and jobs.append(job)
    )
    panel.set_category("museum")
    with qtbot.waitSignal(panel.recommendations_shown, timeout=60_000) as blocker:
        panel.set_category("bakery")
    assert blocker.args[0].category == "bakery"
    assert jobs[0].token.cancelled


def test_a_bad_catalog_lists_its_problems_without_blocking(
    qtbot, make_window, library_copy, tmp_path: Path
) -> None:
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel

    _library, photos = library_copy
    folder = tmp_path / "my-catalog"
    folder.mkdir()
    good = {
        "name": "Corner espresso bar",
        "category": "coffee shop",
        "description": "Tiny bar, strong espresso, cat on the windowsill.",
    }
    lines = [json.dumps(good), "{not json", json.dumps({"category": "coffee shop"})]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    window = make_window([photos])
    panel = window.show_panel(RecommendationsPanel)
    qtbot.waitUntil(lambda: panel.category.count() > 0, timeout=30_000)
    with qtbot.waitSignal(panel.recommendations_shown, timeout=60_000):
        panel.load_catalog(folder)
    assert panel.problems_toggle.isVisible()
    assert "2" in panel.problems_toggle.text()
    panel.problems_toggle.click()
    assert panel.problems.isVisible() and "line 2" in panel.problems.text()  # noqa: PT018
    assert [c.card.name for c in panel.cards] == ["Corner espresso bar"]
    assert window.session.settings.catalog_dir == str(folder)

    empty = tmp_path / "empty-catalog"
    empty.mkdir()
    panel.load_catalog(empty)
    qtbot.waitUntil(lambda: "could not be loaded" in panel.problems_toggle.text(), timeout=10_000)
    assert [c.card.name for c in panel.cards] == ["Corner espresso bar"]  # the old one stays


def test_the_profile_grid_shows_no_empty_rows_below_few_photos(
    qtbot, make_window, library_copy
) -> None:
    """Issue 11 item 11: with 5 photos the 8x8 grid was one row of photos over a black block."""
    from visuallens_app.gui.panels.recommendations import shown_grid

    _library, photos = library_copy
    _window, panel = open_recommendations(qtbot, make_window, photos)
    view = show_category(qtbot, panel, "coffee shop")
    assert view.grid.image.size == (896, 896)  # the re-ranker still reads the full 8x8
    assert shown_grid(view.grid.image).size == (896, 112)  # on screen: the one row with photos
    pixmap = panel.grid_image.pixmap()
    assert pixmap.width() == 8 * pixmap.height()


def test_a_category_with_nothing_in_the_photos_says_so_above_the_cards(
    qtbot, make_window, library_copy
) -> None:
    """The panel draws the lens service's report: no photo relates, so no 'Because of'."""
    from visuallens_app.lens.service import NOTHING_RELATES

    _library, photos = library_copy
    _window, panel = open_recommendations(qtbot, make_window, photos)
    show_category(qtbot, panel, "hiking trail")
    assert panel.status.text().startswith("Nothing in your photos relates to hiking trail")
    assert panel.cards
    for card in panel.cards:
        assert not card.card.evidence
        note = card.findChild(QLabel, "CardNoEvidence")
        assert note is not None
        assert note.text() == NOTHING_RELATES

    show_category(qtbot, panel, "coffee shop")  # a category the photos speak for: evidence again
    assert not panel.status.text().startswith("Nothing in your photos")
    first = panel.cards[0]
    assert first.card.evidence
    assert first.findChild(QLabel, "CardNoEvidence") is None
    assert panel.grid_image.pixmap() is not None


def test_the_recommendations_toolbar_fits_a_1280_pixel_screen(
    qtbot, make_window, library_copy
) -> None:
    """Issue 11 item 1: the catalog line in the toolbar made the window 1340 px wide, so on a
    1280 px screen its right edge (the catalog buttons, the status bar) was off-screen."""
    _library, photos = library_copy
    window, panel = open_recommendations(qtbot, make_window, photos)
    qtbot.waitUntil(lambda: "places and things" in panel.catalog_label.text(), timeout=30_000)
    assert window.minimumSizeHint().width() <= 1280
    whole = panel.catalog_label.text()
    assert panel.catalog_label.toolTip() == whole  # the whole line, however short it is drawn
