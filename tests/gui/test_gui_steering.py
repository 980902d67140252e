"""The Steering panel on a tiny random LLaVA: compute a vector, ask side by side, sweep.

Mechanics only (the model's weights are random): the vector is saved with the library and
listed, both answers arrive with option probabilities, the sweep grid fills, nothing is left
steering the model afterwards. The panel needs no photo library.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def _bench(folder: Path, images: dict[str, Image.Image]) -> Path:
    (folder / "img").mkdir(parents=True)
    lines = []
    for i, name in enumerate(list(images)[:4]):
        images[name].resize((80, 60)).save(folder / "img" / f"{name}.jpg")
        record = {"image": f"img/{name}.jpg", "question": f"Question {i}?", "choices": ["a", "b"]}
        lines.append(json.dumps({**record, "answer": "(B)", "task": "Relation"}))
    (folder / "bench.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "bench.jsonl"


def test_steering_panel_computes_asks_and_sweeps_without_a_library(
    qtbot,
    make_window,
    tiny_vlm_dirs: dict[str, Path],
    sample_images: dict[str, Image.Image],
    tmp_path: Path,
) -> None:
    from visuallens_app.gui.panels.steering import SteeringPanel

    window = make_window([], vlm=str(tiny_vlm_dirs["llava"]))
    panel = window.show_panel(SteeringPanel)
    assert window.pages.currentWidget() is window.panel_stack  # no library needed
    assert panel.concept.findText("spatial") >= 0

    panel.concept.setCurrentText("spatial")
    panel.layers.setText("1")
    panel.compute()
    qtbot.waitUntil(lambda: panel.saved.count() == 1, timeout=120_000)
    qtbot.waitUntil(lambda: panel.vector is not None, timeout=10_000)
    assert panel.vector.layers == [1]
    assert "spatial" in panel.saved.item(0).text()

    photo = tmp_path / "cat.jpg"
    sample_images["chelsea"].resize((160, 120)).save(photo)
    panel.open_image(photo)
    qtbot.waitUntil(lambda: panel.image is not None, timeout=30_000)
    panel.options.setText("left,right")
    panel.alpha.setValue(8.0)
    panel.ask()
    qtbot.waitUntil(lambda: panel.status.text().startswith("Answered"), timeout=120_000)
    assert panel.unsteered.toPlainText() or panel.steered.toPlainText()
    assert panel.bars.count() == 6  # two options x (label + unsteered bar + steered bar)

    panel.bench.setText(str(_bench(tmp_path / "bench", sample_images)))
    panel.sweep_alphas.setText("0,4")
    panel.sweep()
    qtbot.waitUntil(lambda: panel.sweep_summary.text().startswith("Best"), timeout=180_000)
    assert (panel.grid.rowCount(), panel.grid.columnCount()) == (1, 2)
    assert panel.grid.item(0, 0) is not None
    assert panel.grid.item(0, 1) is not None

    from visuallens_app.vlm.hooks import hook_count

    host = window.session.vlm_host
    assert hook_count(host._vlm.model) == 0  # nothing still steers the shared model
