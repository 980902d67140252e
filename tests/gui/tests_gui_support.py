"""Helpers for the GUI tests that are not fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visuallens_app.jobs import run_to_end

#: The sample photos of tests/conftest.py (sample name -> file name).
SAMPLES = {
    "chelsea": "chelsea.jpg",
    "coffee": "coffee.jpg",
    "astronaut": "astronaut.jpg",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle.jpg",
}


def index_once(library: Path, photos: Path) -> None:
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.registry import load_encoder

    encoder = load_encoder("embedded").encoder
    with PhotoStore(library) as store:
        run_to_end(index_folders(store, encoder, [photos]))


def open_recommendations(qtbot: Any, make_window: Any, photos: Path) -> tuple[Any, Any]:
    """A window on ``photos``, indexed, showing the Recommendations panel with its categories."""
    from visuallens_app.gui.panels.recommendations import RecommendationsPanel

    window = make_window([photos])
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=30_000)
    panel = window.show_panel(RecommendationsPanel)
    qtbot.waitUntil(lambda: panel.category.count() > 0, timeout=30_000)
    return window, panel


def show_category(qtbot: Any, panel: Any, category: str) -> Any:
    """Choose ``category`` and wait for its recommendations; returns the view shown."""
    with qtbot.waitSignal(panel.recommendations_shown, timeout=60_000) as blocker:
        panel.set_category(category)
    view = blocker.args[0]
    assert view.category == category
    return view


def noise_photos(folder: Path, n: int, side: int = 256, seed: int = 0) -> list[Path]:
    """``n`` distinct small JPEGs (distinct content, so each is decoded and embedded)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    base = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
    for i in range(n):
        tile = np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255).astype(
            np.uint8
        )
        image = Image.fromarray(tile).resize((side, side))
        path = folder / f"noise_{i:04d}.jpg"
        image.save(path, quality=85)
        out.append(path)
    return out
