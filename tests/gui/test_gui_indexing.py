"""Indexing from the window: pause, resume, cancel, and a UI thread that never stalls."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QTimer
from tests_gui_support import noise_photos

from visuallens_app.jobs import Progress


def test_pause_resume_and_cancel_from_the_indexing_bar(qtbot, make_window, tmp_path: Path) -> None:
    photos = tmp_path / "many"
    noise_photos(photos, 160)
    window = make_window([])
    bar = window.indexing_bar
    seen: list[Progress] = []
    window.session.indexing_progress.connect(seen.append)

    window.add_folder(photos)
    assert bar.isVisible()
    qtbot.waitUntil(lambda: any(p.stage == "index" and p.done > 0 for p in seen), timeout=60_000)

    bar.pause_button.click()
    assert bar.pause_button.text() == "Resume"
    # The batch already being embedded finishes and reports (at most one more batch); after
    # that nothing may move.
    at_pause = seen[-1].done
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = len(seen)
        qtbot.wait(5000)
        if len(seen) == count:
            break
    frozen = seen[-1].done
    assert frozen - at_pause <= 32, "more than the batch in flight was indexed after pausing"
    qtbot.wait(1500)
    assert seen[-1].done == frozen, "indexing went on while paused"
    assert "Paused" in bar.label.text() or bar.title.text() == "Paused"

    bar.pause_button.click()  # resume
    assert bar.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: seen[-1].done > frozen, timeout=30_000)
    assert "photos" in bar.label.text()  # count, rate and ETA are shown

    with qtbot.waitSignal(window.session.indexing_finished, timeout=30_000) as blocker:
        bar.cancel_button.click()
    assert blocker.args == [None]  # cancelled: no report
    assert not bar.isVisible()
    # Every batch written before the cancel is kept and shown.
    panel = window.library_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() > 0, timeout=10_000)
    assert panel.model.rowCount() < 160


def test_the_ui_thread_stays_responsive_while_indexing(
    qtbot, make_window, tmp_path: Path, sample_images
) -> None:
    photos = tmp_path / "big"
    photos.mkdir()
    # Real photos at camera-ish sizes, so decoding and thumbnailing do real work.
    for i in range(24):
        for name, image in sample_images.items():
            big = image.resize((image.width * 3, image.height * 3)).rotate(i * 7)
            big.save(photos / f"{name}_{i:02d}.jpg", quality=88)
    window = make_window([])
    panel = window.library_panel

    clock = QElapsedTimer()
    gaps: list[int] = []
    probe = QTimer()
    probe.setInterval(10)

    def tick() -> None:
        gaps.append(clock.restart())

    probe.timeout.connect(tick)
    errors: list[str] = []
    window.session.error_raised.connect(errors.append)
    window.session.indexing_started.connect(lambda: (clock.start(), probe.start()))
    with qtbot.waitSignal(window.session.indexing_finished, timeout=120_000) as blocker:
        window.add_folder(photos)
    probe.stop()
    assert blocker.args[0] is not None, errors
    assert blocker.args[0].indexed == 120
    qtbot.waitUntil(lambda: panel.model.rowCount() == 120, timeout=10_000)
    worst = max(gaps[1:])
    print(f"UI thread: {len(gaps)} ticks, largest gap {worst} ms")
    assert len(gaps) > 50
    assert worst < 100, f"the UI thread stalled for {worst} ms"


def test_model_loading_is_its_own_step_before_the_count(qtbot, make_session, photo_dir) -> None:
    """Issue 11 item 8: the bar said "Scanning folders…" while the model was still loading."""
    from visuallens_app.gui.main_window import MainWindow

    session = make_session([photo_dir], start=False)
    window = MainWindow(session)
    qtbot.addWidget(window)
    window.show()
    bar = window.indexing_bar
    seen: list[Progress] = []
    session.indexing_progress.connect(seen.append)
    session.start()
    assert bar.isVisible()
    assert "Loading the model" in bar.label.text()
    assert bar.bar.maximum() == 0  # indeterminate: nothing to count yet
    assert not bar.pause_button.isVisible()
    qtbot.waitUntil(lambda: any(p.stage == "index" for p in seen), timeout=60_000)
    assert bar.pause_button.isVisible()
    qtbot.waitUntil(lambda: not session.indexing, timeout=60_000)
    counted = [p.done for p in seen if p.stage == "index" and p.done > 0]
    assert counted[0] < counted[-1] == 5  # the count moved before the end
