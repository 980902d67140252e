"""Time from launching ``visuallens-app`` to its window on screen, against a bare Qt window.

    .venv/bin/python -m benchmarks.bench_startup [--runs 5]

Both are launched the same way (a fresh Python process, offscreen platform) and report "shown"
from the first event-loop turn after ``show()``. The baseline is the floor any PySide6 app pays
(interpreter + Qt start-up + one window); the ratio says what VisualLens adds on top. torch's
import time is printed too: the window must not wait for it (models load after it is shown).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

BARE_QT = """
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
window = QMainWindow()
window.resize(1280, 800)
window.show()
QTimer.singleShot(0, lambda: (print("shown", flush=True), app.quit()))
app.exec()
"""


def _time_until_shown(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "shown":
            elapsed = time.perf_counter() - start
            break
    else:
        raise RuntimeError(f"{cmd} exited without showing a window")
    proc.wait(timeout=60)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vl-startup-"))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VISUALLENS_EXIT_WHEN_SHOWN="1")
    env.update(
        VISUALLENS_LIBRARY=str(work / "library"),
        VISUALLENS_CONFIG_DIR=str(work / "config"),
        VISUALLENS_CACHE_DIR=str(work / "cache"),
    )
    app_cmd = [sys.executable, "-m", "visuallens_app"]
    bare_cmd = [sys.executable, "-c", BARE_QT]
    torch_cmd = [sys.executable, "-c", "import torch; print('shown', flush=True)"]
    _time_until_shown(app_cmd, env)  # warm the page cache for both
    _time_until_shown(bare_cmd, env)
    app, bare, torch = [], [], []
    for _ in range(args.runs):  # interleaved, so load on the machine hits both alike
        app.append(_time_until_shown(app_cmd, env))
        bare.append(_time_until_shown(bare_cmd, env))
        torch.append(_time_until_shown(torch_cmd, env))
    result = {
        "app_window_s_median": statistics.median(app),
        "bare_qt_window_s_median": statistics.median(bare),
        "import_torch_s_median": statistics.median(torch),
        "app_over_bare_qt": statistics.median(app) / statistics.median(bare),
        "runs": args.runs,
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
