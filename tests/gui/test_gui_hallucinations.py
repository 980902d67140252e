"""The Hallucinations panel: a real photo, a caption, tokens coloured by the grounding detector
(the embedded encoder, real weights), heatmaps on hover, and a caption streamed from a VLM.

The grounding detector runs for real; the VLM that writes the caption is the tiny random
Idefics3 of the shared fixture (its text is noise: the test proves the streaming and re-check).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def test_a_caption_is_checked_token_by_token_without_a_library(
    qtbot,
    make_window,
    tiny_vlm_dirs: dict[str, Path],
    sample_images: dict[str, Image.Image],
    tmp_path: Path,
) -> None:
    from visuallens_app.gui.panels.hallucinations import HallucinationsPanel

    window = make_window([], vlm=str(tiny_vlm_dirs["idefics3"]))
    panel = window.show_panel(HallucinationsPanel)
    assert window.pages.currentWidget() is window.panel_stack  # no library needed

    photo = tmp_path / "cat.jpg"
    sample_images["chelsea"].save(photo)
    panel.open_image(photo)
    qtbot.waitUntil(lambda: panel.image is not None, timeout=30_000)
    panel.text.setPlainText("A cat with green eyes sits next to a red car.")
    panel.check()
    qtbot.waitUntil(lambda: panel.scores is not None, timeout=60_000)
    scores = panel.scores
    by_word = {t.text.strip(" .").lower(): t for t in scores.tokens}
    assert by_word["cat"].checked
    assert by_word["car"].checked
    assert by_word["cat"].p_good > by_word["car"].p_good  # the photo shows a cat, no car
    assert not by_word["with"].checked  # what it cannot judge stays plain
    html = panel.tokens.toHtml()
    assert "t:" in html
    assert "background-color" in html
    assert "not checked" in panel.status.text()

    cat = next(i for i, t in enumerate(scores.tokens) if t.text.strip().lower() == "cat")
    assert cat in scores.heatmaps
    panel._hovered(cat)
    assert panel.canvas.has_overlay()
    panel._hovered(-1)
    assert not panel.canvas.has_overlay()

    panel.threshold.setValue(95)  # almost everything checked is now flagged
    assert panel.flagged.count() >= 2

    previous = panel.scores
    panel.generate()
    qtbot.waitUntil(lambda: panel.scores is not previous, timeout=120_000)
    assert panel.text.toPlainText() == panel.scores.response


def test_suggestions_fix_a_flagged_word_and_annotations_are_saved_and_exported(
    qtbot, make_window, sample_images: dict[str, Image.Image], tmp_path: Path
) -> None:
    import json

    from visuallens_app.gui.panels.hallucinations import HallucinationsPanel
    from visuallens_app.tldr.annotate import AnnotationStore, default_annotations_path

    window = make_window([])
    panel = window.show_panel(HallucinationsPanel)
    photo = tmp_path / "cat.jpg"
    sample_images["chelsea"].save(photo)
    panel.text.setPlainText("A car sits on a blanket.")
    panel.open_image(photo)  # checks the text once the photo is in
    qtbot.waitUntil(lambda: panel.scores is not None, timeout=60_000)
    rows = [panel.flagged.item(i) for i in range(panel.flagged.count())]
    offers = [r for r in rows if r.text().strip().startswith("→")]
    assert offers, [r.text() for r in rows]
    best = offers[0]
    assert "cat" in best.text()  # the photo's own object is the best replacement
    first = panel.scores
    panel._apply_suggestion(best)
    qtbot.waitUntil(lambda: panel.scores is not first, timeout=60_000)
    assert "cat" in panel.text.toPlainText().lower()

    panel.annotate.setChecked(True)
    word = next(i for i, t in enumerate(panel.scores.tokens) if t.text.strip() == "blanket")
    before = panel._labels[word]
    panel._clicked(word)  # the annotator flips the detector's label of "blanket"
    panel.save_annotation_now()
    assert panel.status.text().startswith("Saved the annotation")
    with AnnotationStore(default_annotations_path(window.session.library_dir)) as store:
        (item,) = store.list()
        assert item.labels[word] == 1 - before
        assert item.image == str(photo)
        exported = tmp_path / "out.jsonl"
        assert store.export_jsonl(exported) == 1
    record = json.loads(exported.read_text().splitlines()[0])
    assert record["text"] == panel.scores.response
    panel.correct()  # no VLM configured: it says how, never hangs
    assert "vision-language model" in panel.status.text() or "Nothing" in panel.status.text()


def test_the_batch_view_ranks_the_librarys_captions_worst_first(
    qtbot, make_window, library_copy
) -> None:
    from visuallens_app.gui.panels.hallucinations import HallucinationsPanel
    from visuallens_app.lens.aspects import _store_captions
    from visuallens_app.library.store import PhotoStore

    library, photos = library_copy
    with PhotoStore(library) as store:
        hashes = {r.path.name: r.content_hash for r in store.list_photos()}
        _store_captions(
            store.db,
            "written-by-hand",
            {
                hashes["chelsea.jpg"]: "A car parked on a road.",  # the photo is a cat
                hashes["coffee.jpg"]: "A cup of coffee on a saucer.",
            },
        )
    window = make_window([photos])
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=60_000)
    panel = window.show_panel(HallucinationsPanel)
    panel.check_library()
    job = window.session.runner.current("tldr-batch")
    qtbot.waitUntil(lambda: job.done, timeout=120_000)
    assert job.outcome == "succeeded"
    assert panel.batch.count() == 2
    worst = panel.batch.item(0).data(256)  # Qt.UserRole
    assert worst.path.name == "chelsea.jpg"
    assert worst.rate > panel.batch.item(1).data(256).rate
    panel._batch_chosen(panel.batch.item(0))
    qtbot.waitUntil(lambda: panel.scores is not None, timeout=60_000)
    assert panel.text.toPlainText() == "A car parked on a road."
