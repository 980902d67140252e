"""Recommendations in the window: cards with evidence, the profile grid, catalog problems."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
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


def test_a_large_catalog_is_read_once_with_progress_and_a_cancel_keeps_what_was_read(
    qtbot, make_window, library_copy, tmp_path: Path, monkeypatch
) -> None:
    """Issue 12 item 4: the first question about a large catalog embeds its descriptions
    (minutes for 100,000); the panel shows the count and Cancel stops it, keeping the batches
    done, and choosing the category again reads only the rest, then recommends."""
    import re
    import sqlite3

    from visuallens_app.lens import matching
    from visuallens_app.lens.history import ITEM_VECTORS

    monkeypatch.setattr(matching, "ITEM_BATCH", 2)  # many batches, so a cancel lands mid-way
    library, photos = library_copy
    n = 400
    folder = tmp_path / "tea-catalog"
    folder.mkdir()
    rooms = ["a quiet back room", "a sunny terrace", "low tables", "a garden view", "a long bar"]
    teas = ["oolong", "matcha", "pu-erh", "jasmine", "sencha", "chai", "rooibos"]
    lines = [
        json.dumps(
            {
                "name": f"Tea house {i}",
                "category": "tea house",
                "description": f"{teas[i % 7].title()} served in {rooms[i % 5]}, table {i}.",
            }
        )
        for i in range(n)
    ]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def vectors_kept() -> int:
        ids = [item.id for item in panel.catalog_info.catalog.items]
        conn = sqlite3.connect(library / "library.sqlite")
        try:
            marks = ",".join("?" * len(ids))
            query = f"SELECT count(*) FROM {ITEM_VECTORS} WHERE item_id IN ({marks})"
            return int(conn.execute(query, ids).fetchone()[0])
        finally:
            conn.close()

    window, panel = open_recommendations(qtbot, make_window, photos)
    jobs = []
    window.session.runner.job_started.connect(
        lambda job: job.key == "recommend" and jobs.append(job)
    )
    bar = panel.catalog_bar
    panel.load_catalog(folder)  # its one category runs at once
    counted = re.compile(r"([\d,]+) of 400 descriptions")

    def reading() -> bool:
        found = counted.match(bar.label.text())
        return bar.isVisible() and found is not None and int(found[1].replace(",", "")) > 0

    qtbot.waitUntil(reading, timeout=60_000)
    assert bar.title.text() == "Reading the catalog (once):"
    assert "tea house" in panel.status.text()
    # Meanwhile a search in the library answers: the read does not hold the query lane.
    library_panel = window.library_panel
    library_panel.search("cat")
    qtbot.waitUntil(lambda: library_panel.model.mode == "results", timeout=20_000)
    assert not jobs[-1].done
    qtbot.mouseClick(bar.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: jobs[-1].done, timeout=30_000)
    assert jobs[-1].outcome == "cancelled"
    assert not bar.isVisible()
    status = panel.status.text()
    assert status.startswith("Stopped reading the catalog:"), status
    kept = vectors_kept()
    assert 0 < kept < n
    assert f"{kept:,} of 400 descriptions read are kept" in status  # what the store holds
    assert panel.cards == []  # no other category's cards under "tea house"

    totals = []
    window.session.runner.job_started.connect(
        lambda job: (
            job.key == "recommend"
            and job.progress_changed.connect(lambda p: totals.append(p.total))
        )
    )
    view = show_category(qtbot, panel, "tea house")  # chosen again: reads the rest
    assert totals[0] == n - kept  # only what the cancel left, not all 400 again
    assert vectors_kept() == n
    assert len(panel.cards) == len(view.cards) == 10
    assert not bar.isVisible()
    assert "10 tea house picks" in panel.status.text()
