"""Decode and scan speed, against the naive way of doing each.

Run: ``.venv/bin/python -m benchmarks.bench_decode`` (add ``--quick`` for a smoke run).
Prints a table and writes ``benchmarks/results/decode.json``.

- decode: ``decode_photo`` on 12 MP JPEGs (4000x3000, quality 92, made from scikit-image's
  samples) against a full Pillow decode + resize to 224 (what a first version would do).
- scan: ``scan_folders`` over 10,000 tiny files in 100 folders against a bare ``os.scandir``
  walk, both with and without the one ``stat`` per file that a re-scan needs for size/mtime.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import PIL
from PIL import Image

from benchmarks.samples import SAMPLES, sample_photo
from visuallens_app.library.decode import decode_photo
from visuallens_app.library.scan import scan_folders

RESULTS = Path(__file__).parent / "results" / "decode.json"


def _make_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` 12 MP JPEGs, upscaled from the samples (with a shift, so no two are equal)."""
    paths = []
    for i in range(count):
        image = sample_photo(SAMPLES[i % len(SAMPLES)]).resize(
            (4000 + i, 3000), Image.Resampling.BICUBIC
        )
        path = folder / f"IMG_{i:04d}.jpg"
        image.save(path, quality=92)
        paths.append(path)
    return paths


def _naive_decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)


def _best_of(repeats: int, run: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _make_tree(folder: Path, folders: int, per_folder: int) -> None:
    for i in range(folders):
        sub = folder / f"{2000 + i // 12}" / f"{i:03d}"
        sub.mkdir(parents=True)
        for j in range(per_folder):
            (sub / f"IMG_{j:04d}.jpg").write_bytes(b"\xff\xd8")


def _bare_walk(root: str, with_stat: bool) -> int:
    count = 0
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                if entry.is_dir():
                    pending.append(entry.path)
                else:
                    if with_stat:
                        entry.stat()
                    count += 1
    return count


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer files, for a smoke run")
    args = parser.parse_args(argv)
    jpeg_count = 8 if args.quick else 40
    folders, per_folder = (10, 100) if args.quick else (100, 100)
    repeats = 2 if args.quick else 5

    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        base = Path(tmp)
        (base / "jpegs").mkdir()
        jpegs = _make_jpegs(base / "jpegs", jpeg_count)
        for path in jpegs[:2]:  # warm up the page cache and the codecs
            decode_photo(path)
            _naive_decode(path)
        ours = _best_of(repeats, lambda: [decode_photo(p) for p in jpegs])
        naive = _best_of(repeats, lambda: [_naive_decode(p) for p in jpegs])

        tree = base / "tree"
        tree.mkdir()
        _make_tree(tree, folders, per_folder)
        files = folders * per_folder
        found = sum(1 for _ in scan_folders([tree]))
        if found != files:
            raise RuntimeError(f"scan found {found} of {files} files")
        scan = _best_of(repeats, lambda: sum(1 for _ in scan_folders([tree])))
        bare_stat = _best_of(repeats, lambda: _bare_walk(str(tree), with_stat=True))
        bare = _best_of(repeats, lambda: _bare_walk(str(tree), with_stat=False))

    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "pillow": PIL.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "decode": {
            "files": jpeg_count,
            "size": "4000x3000 JPEG q92",
            "decode_photo_ms_per_file": 1000 * ours / jpeg_count,
            "naive_full_decode_resize_ms_per_file": 1000 * naive / jpeg_count,
            "speedup": naive / ours,
        },
        "scan": {
            "files": files,
            "folders": folders,
            "scan_folders_ms": 1000 * scan,
            "bare_scandir_walk_with_stat_ms": 1000 * bare_stat,
            "bare_scandir_walk_ms": 1000 * bare,
            "ratio_vs_walk_with_stat": scan / bare_stat,
            "ratio_vs_bare_walk": scan / bare,
            "us_per_file": 1e6 * scan / files,
        },
        "repeats": repeats,
        "timing": "best of repeats, wall clock, warm page cache",
    }
    _print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS}")
    return results


def _print_table(results: dict[str, object]) -> None:
    decode = results["decode"]
    scan = results["scan"]
    assert isinstance(decode, dict)
    assert isinstance(scan, dict)
    rows = [
        ("decode_photo, 12 MP JPEG", f"{decode['decode_photo_ms_per_file']:.1f} ms/file", ""),
        (
            "naive full decode + resize",
            f"{decode['naive_full_decode_resize_ms_per_file']:.1f} ms/file",
            f"{decode['speedup']:.1f}x slower",
        ),
        (f"scan_folders, {scan['files']:,} files", f"{scan['scan_folders_ms']:.1f} ms", ""),
        (
            "bare os.scandir walk + stat",
            f"{scan['bare_scandir_walk_with_stat_ms']:.1f} ms",
            f"scan is {scan['ratio_vs_walk_with_stat']:.2f}x",
        ),
        (
            "bare os.scandir walk, no stat",
            f"{scan['bare_scandir_walk_ms']:.1f} ms",
            f"scan is {scan['ratio_vs_bare_walk']:.2f}x",
        ),
    ]
    print(f"{results['machine']}, Python {results['python']}, Pillow {results['pillow']}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
