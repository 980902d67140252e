"""The shared vision-language model in the window: loaded once, captions, re-ranking, status.

The model is the tiny random Idefics3 of the shared fixture (tests/tiny_vlms.py): these prove the
plumbing (one load, one lane, status line, captions stored, cards re-ordered), not answer quality.
"""

from __future__ import annotations

from pathlib import Path


def test_status_bar_says_how_to_get_a_model_when_none_is_configured(qtbot, make_window) -> None:
    window = make_window([])
    assert "No vision-language model" in window.vlm_label.toolTip()
    assert "download-vlm" in window.vlm_label.toolTip()
    window.caption_photos()
    assert window.banner.isVisible()
    assert "Captions need a vision-language model" in window.banner.text


def test_caption_photos_loads_the_model_once_and_stores_captions(
    qtbot, make_window, library_copy, tiny_vlm_dirs: dict[str, Path]
) -> None:
    from visuallens_app.lens.history import PHOTO_CAPTIONS
    from visuallens_app.library.store import PhotoStore

    library, photos = library_copy
    window = make_window([photos], vlm=str(tiny_vlm_dirs["idefics3"]))
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=60_000)
    host = window.session.vlm_host
    loads: list[str] = []
    host.loading.connect(loads.append)
    window.caption_photos()
    assert window.caption_action.text() == "Stop &captioning"
    job = window.session.runner.current("caption")
    qtbot.waitUntil(lambda: job.done, timeout=120_000)
    assert job.outcome == "succeeded"
    qtbot.waitUntil(lambda: window.vlm_label.toolTip().startswith("VLM: idefics3 (idefics3"))
    with PhotoStore(library) as store:
        count = store.db.execute(f"SELECT COUNT(*) FROM {PHOTO_CAPTIONS}").fetchone()[0]
    assert count == len(list(photos.iterdir()))
    # A second run finds every photo captioned, and the model is not loaded again.
    window.caption_photos()
    again = window.session.runner.current("caption")
    qtbot.waitUntil(lambda: again.done, timeout=60_000)
    assert again.outcome == "succeeded"
    assert loads == [str(tiny_vlm_dirs["idefics3"])]
    # Changing the model in the settings drops the loaded one.
    with qtbot.waitSignal(host.unloaded, timeout=30_000):
        window.session.settings.vlm = ""
        window.session.save_settings()
    assert "No vision-language model" in window.vlm_label.toolTip()


def test_recommendations_are_re_ranked_by_the_configured_vlm(
    qtbot, make_window, library_copy, tiny_vlm_dirs: dict[str, Path]
) -> None:
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel

    _library, photos = library_copy
    window = make_window([photos], vlm=str(tiny_vlm_dirs["llava"]))
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=60_000)
    panel = window.show_panel(RecommendationsPanel)
    assert panel.rerank.isChecked()  # on by default once a model is configured
    qtbot.waitUntil(lambda: panel.category.count() > 0, timeout=30_000)
    shown = []
    panel.recommendations_shown.connect(shown.append)
    panel.set_category("coffee shop")
    qtbot.waitUntil(lambda: any(v.reranked for v in shown), timeout=120_000)
    first, reranked = shown[0], next(v for v in shown if v.reranked)
    assert not first.reranked
    assert sorted(c.name for c in reranked.cards) == sorted(c.name for c in first.cards)
    assert [c.rank for c in reranked.cards] == list(range(1, len(first.cards) + 1))
    assert "Re-ranked by the vision-language model" in panel.status.text()
