"""The library grid at 100,000 photos: first page, UI-thread gaps while scrolling, memory.

    .venv/bin/python -m benchmarks.bench_gui_grid [--photos 100000] [--baseline 1000]

Each size runs in a fresh Python process (offscreen platform) over a library filled directly
through ``PhotoStore.write_batch``: real-looking rows (paths in dated folders, EXIF-like capture
dates, camera names) and a distinct thumbnail per photo, hard-linked to a few dozen real 256 px
JPEGs made from scikit-image's samples, so every tile is a real decode. The child opens the
MainWindow (1280 x 820, library panel), jumps the scroll bar from the top to the end (time until
the last rows show their names), then scrolls the grid from top to bottom one page at a time
(``QScrollBar.setValue`` + ~2 ms of event processing) while a 5 ms QTimer probe records the gaps
of the UI thread. Reported per size: time to the first rows and to a full first screen of
thumbnails, jump-to-end time, time to scroll to the bottom (last rows loaded), max / median / p99
gap while scrolling, pages in memory and resident memory at the end; then the 100,000 / baseline
ratios. The baseline (1,000 photos) runs in the
same invocation, so both numbers come from the same machine and load.
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
SAMPLES = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle_left",
    "camera",
    "hubble_deep_field",
)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _thumbnail_sources(folder: Path) -> list[Path]:
    """A few dozen distinct 256 px JPEG thumbnails cut from scikit-image's sample photos."""
    import skimage
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    data = Path(skimage.__file__).parent / "data"
    out = []
    for name in SAMPLES:
        found = sorted(data.glob(f"{name}.*"))
        if not found:
            continue
        with Image.open(found[0]) as image:
            rgb = image.convert("RGB")
        for turn in range(6):
            tile = rgb.rotate(turn * 60, expand=False).resize((256, 192))
            path = folder / f"{name}_{turn}.jpg"
            tile.save(path, "JPEG", quality=85)
            out.append(path)
    return out


def fill_library(library: Path, n: int) -> None:
    """``n`` photo rows in 40 folders, with a distinct (hard-linked) thumbnail each."""
    import hashlib

    from visuallens_app.library.store import NewPhoto, PhotoStore

    sources = _thumbnail_sources(library.parent / "thumb-sources")
    roots = [Path(f"/photos/{year}") for year in range(2005, 2025)]
    with PhotoStore(library) as store:
        store.add_roots(roots)
        batch: list[NewPhoto] = []
        for i in range(n):
            digest = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest()
            root = roots[i % len(roots)]
            month, day = 1 + (i // 20) % 12, 1 + (i // 240) % 28
            taken = f"{root.name}-{month:02d}-{day:02d}T{(i % 24):02d}:{(i % 60):02d}:00"
            batch.append(
                NewPhoto(
                    path=root / f"{month:02d}" / f"IMG_{i:06d}.jpg",
                    root=root,
                    size=2_500_000 + i % 1000,
                    mtime_ns=1_600_000_000_000_000_000 + i * 1_000_000_000,
                    content_hash=digest,
                    width=4032,
                    height=3024,
                    format="JPEG",
                    taken_at=taken if i % 10 else None,  # a tenth without EXIF dates
                    camera="Pixel 7" if i % 3 else "Canon EOS R6",
                )
            )
            target = store.thumbnails.path_for(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(sources[i % len(sources)], target)
            if len(batch) == 10_000:
                store.write_batch(batch, {}, "none")
                batch = []
        if batch:
            store.write_batch(batch, {}, "none")


def _wait(app: object, ms: int) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def run_child(library: Path, n: int, work: Path) -> dict[str, float]:
    """Open the window over ``library`` and scroll it top to bottom; measurements as a dict."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QPoint, QTimer
    from PySide6.QtWidgets import QApplication

    from visuallens_app.gui.main_window import MainWindow
    from visuallens_app.gui.session import LibrarySession
    from visuallens_app.settings import Settings

    app = QApplication([])
    rss_start = _rss_mb()
    settings = Settings(
        photo_folders=[f"/photos/{y}" for y in range(2005, 2025)],
        library_dir=str(library),
        encoder="embedded",
    )
    clock = time.perf_counter()
    session = LibrarySession(settings, watch=False)  # no start(): no model, no indexing
    window = MainWindow(session)
    window.resize(1280, 820)
    window.show()
    panel = window.library_panel
    model, grid = panel.model, panel.grid
    deadline = time.perf_counter() + 60
    while model.rowCount() == 0 and time.perf_counter() < deadline:
        _wait(app, 1)
    first_page = time.perf_counter() - clock

    def visible_rows() -> list[int]:
        viewport = grid.viewport().rect()
        first = grid.indexAt(QPoint(8, 8)).row()
        rows = []
        for row in range(max(first, 0), model.rowCount()):
            rect = grid.visualRect(model.index(row))
            if rect.intersects(viewport):
                rows.append(row)
            elif rect.top() > viewport.bottom():
                break
        return rows

    def rows_ready() -> bool:
        rows = visible_rows()
        return bool(rows) and all(model.photo(r) is not None for r in rows)

    def screen_ready() -> bool:
        thumbs = session.thumbnails
        return rows_ready() and all(
            thumbs.get(model.photo(r).record.content_hash, None) is not None for r in visible_rows()
        )

    while not screen_ready() and time.perf_counter() < deadline:
        _wait(app, 2)
    first_screen = time.perf_counter() - clock

    # Jump: drag the scroll bar from the top straight to the end (one setValue), then back.
    bar = grid.verticalScrollBar()
    deadline = time.perf_counter() + 30
    jump_start = time.perf_counter()
    bar.setValue(bar.maximum())
    while not rows_ready() and time.perf_counter() < deadline:
        _wait(app, 1)
    jump_s = time.perf_counter() - jump_start
    last_name = model.photo(model.rowCount() - 1)
    bar.setValue(0)
    while not screen_ready() and time.perf_counter() < deadline:
        _wait(app, 2)

    gaps: list[int] = []
    ticker = QElapsedTimer()
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(lambda: gaps.append(ticker.restart()))
    ticker.start()
    probe.start()
    # Quick steps, a page of the scroll bar every ~2 ms of event processing: the user flicking
    # the wheel. The end counts once the last rows show their names.
    scroll_start = time.perf_counter()
    steps = 0
    deadline = time.perf_counter() + 180
    while time.perf_counter() < deadline:
        if bar.value() >= bar.maximum():
            if rows_ready():
                break
            _wait(app, 2)  # at the end: the last page is on its way
            continue
        bar.setValue(bar.value() + bar.pageStep())
        steps += 1
        _wait(app, 2)
    scroll_s = time.perf_counter() - scroll_start
    probe.stop()
    scroll_gaps = gaps[1:]
    reached_bottom = bar.value() >= bar.maximum() and model.photo(model.rowCount() - 1) is not None
    _wait(app, 300)  # the last screen's thumbnails

    result = {
        "photos": n,
        "rows_shown": model.rowCount(),
        "first_page_s": first_page,
        "first_screen_thumbnails_s": first_screen,
        "scroll_steps": steps,
        "scroll_to_bottom_s": scroll_s,
        "reached_bottom": reached_bottom,
        "jump_to_end_s": jump_s,
        "last_row_name": last_name.path.name if last_name is not None else None,
        "gap_max_ms": max(scroll_gaps) if scroll_gaps else float("nan"),
        "gap_median_ms": statistics.median(scroll_gaps) if scroll_gaps else float("nan"),
        "gap_p99_ms": sorted(scroll_gaps)[int(0.99 * (len(scroll_gaps) - 1))] if scroll_gaps else 0,
        "pages_in_memory": len(model.cached_pages),
        "rss_start_mb": rss_start,
        "rss_end_mb": _rss_mb(),
    }
    window.close()
    session.shutdown()
    del work
    return result


def _measure(n: int, work: Path) -> dict[str, float]:
    library = work / f"library-{n}"
    if not (library / "library.sqlite").exists():
        started = time.perf_counter()
        fill_library(library, n)
        print(f"filled {n:,} photos in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.update(VISUALLENS_CONFIG_DIR=str(work / "config"), VISUALLENS_CACHE_DIR=str(work / "cache"))
    cmd = [sys.executable, "-m", "benchmarks.bench_gui_grid", "--child", str(library), str(n)]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--work", type=Path, help="keep the generated libraries here")
    parser.add_argument("--child", nargs=2, metavar=("LIBRARY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        library, n = Path(args.child[0]), int(args.child[1])
        print(json.dumps(run_child(library, n, library.parent)), flush=True)
        os._exit(0)  # skip interpreter teardown of Qt objects (it can abort at exit)
    work = args.work or Path(tempfile.mkdtemp(prefix="vl-grid-"))
    work.mkdir(parents=True, exist_ok=True)
    base = _measure(args.baseline, work)
    big = _measure(args.photos, work)
    result = {
        "baseline": base,
        "large": big,
        "ratio_first_page": big["first_page_s"] / base["first_page_s"],
        "ratio_first_screen": big["first_screen_thumbnails_s"] / base["first_screen_thumbnails_s"],
        "ratio_scroll_per_step": (big["scroll_to_bottom_s"] / max(big["scroll_steps"], 1))
        / (base["scroll_to_bottom_s"] / max(base["scroll_steps"], 1)),
        "ratio_gap_max": big["gap_max_ms"] / max(base["gap_max_ms"], 1),
        "ratio_gap_median": big["gap_median_ms"] / max(base["gap_median_ms"], 1),
        "ratio_rss_end": big["rss_end_mb"] / base["rss_end_mb"],
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gui_grid.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
