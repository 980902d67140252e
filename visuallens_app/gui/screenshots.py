"""``python -m visuallens_app.gui.screenshots OUT_DIR [PHOTO_FOLDER]``: the main views as PNGs.

Indexes the photo folder (default: scikit-image's sample photos) into a throwaway library with
the real encoder, then grabs the library grid, a search, the detail view and recommendations.
Used by ``make screenshots`` and to look at the app after a change.

``VISUALLENS_SCREENSHOT_VLM=DIR`` also shoots the steering panel with that vision-language model
(``make screenshots`` builds a tiny random one when there is no real one: its answers are noise,
the picture shows the panel, never a model's quality).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def _sample_folder(folder: Path) -> Path:
    import numpy as np
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = [
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "motorcycle_left",
        "cat",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "colorwheel",
        "coins",
        "camera",
    ]
    for name in names:
        try:
            array = np.asarray(getattr(skimage.data, name)())
        except Exception:
            continue
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        image = Image.fromarray(array[..., :3].astype(np.uint8))
        image.save(folder / f"{name}.jpg", quality=90)
        # Other takes of each (mirrored, cropped): enough photos for several indexing batches,
        # so the indexing screenshot shows a grid that fills while the bar runs.
        mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = image.size
        box = (w // 6, h // 6, w - w // 6, h - h // 6)
        takes = [mirrored, image.crop(box), mirrored.crop(box), image.crop((0, 0, w * 3 // 4, h))]
        for take, variant in enumerate(takes, start=2):
            variant.save(folder / f"{name}_{take}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def _hallucination_steps(window: object, photos: Path, shot: object, after: object) -> list:
    """Check a caption of the cat that also claims a car; the cat's evidence over the photo."""
    from visuallens_app.gui.panels.hallucinations import HallucinationsPanel

    panel = window.panel(HallucinationsPanel)  # type: ignore[attr-defined]

    def start() -> None:
        window.show_panel(HallucinationsPanel)  # type: ignore[attr-defined]
        panel.text.setPlainText("A tabby cat with green eyes sits next to a red car.")
        panel.open_image(photos / "chelsea.jpg")  # checks the text once the photo is in
        after(8000)  # type: ignore[operator]

    def hover() -> None:
        scores = panel.scores
        if scores is not None:
            words = [t.text.strip().lower() for t in scores.tokens]
            if "cat" in words:
                panel._clicked(words.index("cat"))
        after(500)  # type: ignore[operator]

    return [start, hover, lambda: (shot("hallucinations"), after(10))]  # type: ignore[operator]


def _steering_steps(window: object, photos: Path, shot: object, after: object) -> list:
    """Compute a spatial vector on the middle layer, ask about the cat, and grab the panel."""
    from visuallens_app.gui.panels.steering import SteeringPanel

    panel = window.show_panel(SteeringPanel)  # type: ignore[attr-defined]
    window.show_panel(window.panels[0].__class__)  # type: ignore[attr-defined]

    from PySide6.QtCore import QTimer

    waited = [0]

    def when(ready: Callable[[], bool], then: Callable[[], None], limit_ms: int = 90_000) -> None:
        """Run ``then`` once ``ready()`` holds (the model loads with the first job: seconds on a
        loaded machine), or after ``limit_ms`` whatever the state."""
        if ready() or waited[0] >= limit_ms:
            waited[0] = 0
            then()
            return
        waited[0] += 250
        QTimer.singleShot(250, lambda: when(ready, then, limit_ms))

    def start() -> None:
        window.show_panel(SteeringPanel)  # type: ignore[attr-defined]
        panel.concept.setCurrentText("spatial")
        panel.compute()
        panel.open_image(photos / "chelsea.jpg")
        when(lambda: panel.vector is not None and panel.image is not None, lambda: after(10))  # type: ignore[operator]

    def ask() -> None:
        panel.options.setText("left,right")
        panel.ask()
        when(lambda: panel.status.text() != "Asking…", lambda: after(300))  # type: ignore[operator]

    return [start, ask, lambda: (shot("steering"), after(10))]  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path(args[0] if args else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="visuallens-shots-"))
    os.environ["VISUALLENS_LIBRARY"] = str(work / "library")
    os.environ["VISUALLENS_CONFIG_DIR"] = str(work / "config")
    os.environ.setdefault("VISUALLENS_CACHE_DIR", str(work / "cache"))
    photos = Path(args[1]) if len(args) > 1 else _sample_folder(work / "photos")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from visuallens_app.gui.main_window import MainWindow
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel
    from visuallens_app.gui.session import LibrarySession
    from visuallens_app.gui.theme import apply_theme
    from visuallens_app.settings import Settings

    app = QApplication.instance() or QApplication([])
    dark = os.environ.get("VISUALLENS_THEME") == "dark"
    apply_theme(app, dark=dark)
    suffix = "-dark" if dark else ""
    vlm_folder = os.environ.get("VISUALLENS_SCREENSHOT_VLM", "")
    # The model is the steering panel's only: a tiny random one (make screenshots) would
    # otherwise caption the photos and re-rank the recommendations with noise.
    settings = Settings(
        encoder="embedded",
        vlm_overrides={"steering": vlm_folder} if vlm_folder else {},
        library_dir=str(work / "library"),
    )
    session = LibrarySession(settings, watch=False)
    window = MainWindow(session)
    window.resize(1280, 800)
    window.show()
    window.grab().save(str(out / f"welcome{suffix}.png"))
    panel = window.library_panel
    steps: list = []

    def shot(name: str) -> None:
        app.processEvents()
        window.grab().save(str(out / f"{name}{suffix}.png"))
        print("saved", out / f"{name}{suffix}.png")

    def next_step() -> None:
        if steps:
            steps.pop(0)()
        else:
            window.close()
            app.quit()

    def after(ms: int) -> None:
        QTimer.singleShot(ms, next_step)

    def indexed(_report) -> None:
        if not session.indexing:
            after(2500)

    steps += [
        lambda: (shot("library"), panel.search("a cat"), after(3000)),
        lambda: (shot("search"), panel.open_row(0), after(2500)),
        lambda: (
            shot("detail"),
            panel.close_detail(),
            window.show_panel(RecommendationsPanel),
            after(6000),
        ),
        lambda: (window.panel(RecommendationsPanel).set_category("coffee shop"), after(8000)),
        lambda: (shot("recommendations"), window.failures_dock.show(), after(500)),
        lambda: (shot("failures"), window.failures_dock.hide(), after(10)),
    ]
    steps += _hallucination_steps(window, photos, shot, after)
    if vlm_folder:
        steps += _steering_steps(window, photos, shot, after)
    indexing_shot: list[str] = []

    def indexing_progress(progress) -> None:
        # The first batch is in the store: show it in the grid, then take the picture with
        # the grid partly filled and the indexing bar running.
        if progress.stage == "index" and progress.done > 0 and not indexing_shot:
            indexing_shot.append("asked")
            panel.model.rows_loaded.connect(rows_arrived)
            session.summary_changed.connect(lambda _summary: rows_arrived())
            panel.model.refresh()
            session.refresh_summary()  # the status bar's count, as the app's own refresh does
            QTimer.singleShot(3000, take_indexing_shot)  # in case no rows ever arrive

    def rows_arrived() -> None:
        rows = panel.model.rowCount()
        counted = session.summary.counts.get("ok", 0) if session.summary is not None else 0
        if (
            rows > 0
            and counted >= rows
            and all(panel.model.photo(r) is not None for r in range(rows))
        ):
            QTimer.singleShot(150, take_indexing_shot)  # a few thumbnails decoded

    def take_indexing_shot() -> None:
        if indexing_shot == ["asked"]:
            indexing_shot.append("taken")
            shot("indexing")

    session.indexing_progress.connect(indexing_progress)
    session.indexing_finished.connect(indexed)
    session.start()
    window.add_folder(photos)
    QTimer.singleShot(300_000, app.quit)
    app.exec()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
