"""Encoder speed on pre-decoded photos: the model-only limit an indexer can approach.

Run: ``.venv/bin/python -m benchmarks.bench_encoders`` (add ``--quick`` for a smoke run).
Prints a table and writes ``benchmarks/results/encoders.json``.

Images are scikit-image's sample photos already downscaled to a 224 px short side, as the
decoder hands them over, so only preprocessing (crop, resize, normalise) and the forward pass
are timed, 32 photos per call (the indexer's batch; the embedded encoder splits it into its own
CPU micro-batches). Encoders: the embedded default (two views, and one view), and CLIP ViT-B-32
with random weights (the same compute as the pretrained one, with no download). The embedded
encoder before and after issue 16's fix, with kernel time and page faults: ``bench_throughput``.
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

from PIL import Image

from benchmarks.samples import decoded_photos

RESULTS = Path(__file__).parent / "results" / "encoders.json"
BATCH = 32


def _best_of(repeats: int, run: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _measure(encoder: object, photos: list[Image.Image], repeats: int) -> dict[str, float]:
    encode = encoder.encode_images  # type: ignore[attr-defined]
    pixels = encoder._pixels  # type: ignore[attr-defined]  # preprocessing share, for the record
    encode(photos[:BATCH])  # warm-up: first-call allocations and kernel selection
    total = _best_of(repeats, lambda: encode(photos))
    prep = _best_of(
        repeats, lambda: [pixels(photos[i : i + BATCH]) for i in range(0, len(photos), BATCH)]
    )
    return {
        "images_per_s": len(photos) / total,
        "ms_per_image": 1000 * total / len(photos),
        "preprocess_ms_per_image": 1000 * prep / len(photos),
        "preprocess_share": prep / total,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer images, for a smoke run")
    args = parser.parse_args(argv)
    count = 32 if args.quick else 128
    repeats = 1 if args.quick else 2

    # devices before torch: it sets the OpenMP wait policy the app runs with, read at torch load.
    from visuallens_app.devices import configure_torch_threads

    # isort: split
    import torch

    from visuallens_app.models.clip import ClipEncoder
    from visuallens_app.models.embedded import EmbeddedEncoder

    threads = configure_torch_threads()
    photos = decoded_photos(count)
    encoders: dict[str, Callable[[Path], object]] = {
        "embedded (EfficientNet-Lite0 + MiniLM, 2 views)": lambda cache: EmbeddedEncoder(
            cache_dir=cache
        ),
        "embedded, 1 view": lambda cache: EmbeddedEncoder(cache_dir=cache, two_views=False),
        "CLIP ViT-B-32 (random weights)": lambda _cache: ClipEncoder.random("ViT-B-32"),
    }
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as tmp:
        for label, build in encoders.items():
            start = time.perf_counter()
            encoder = build(Path(tmp))
            load_s = time.perf_counter() - start
            rows[label] = {"load_s": load_s, **_measure(encoder, photos, repeats)}
            del encoder

    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": threads,
        "device": "cpu",
        "images": count,
        "batch": BATCH,
        "input": "RGB PIL images, 224 px short side (as decoded), sample photos",
        "encoders": rows,
        "repeats": repeats,
        "timing": "best of repeats, wall clock, after one warm-up batch; load_s is cold "
        "for the first encoder (imports) and includes the class-text cache fill",
    }
    _print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS}")
    return results


def _print_table(results: dict[str, object]) -> None:
    rows = results["encoders"]
    assert isinstance(rows, dict)
    print(
        f"{results['machine']}, torch {results['torch']} ({results['torch_threads']} threads), "
        f"{results['images']} images, batch {results['batch']}"
    )
    width = max(len(label) for label in rows)
    print(f"  {'encoder':<{width}}  {'img/s':>7}  {'ms/img':>7}  {'prep ms':>7}  {'load s':>6}")
    for label, row in rows.items():
        print(
            f"  {label:<{width}}  {row['images_per_s']:>7.1f}  {row['ms_per_image']:>7.1f}  "
            f"{row['preprocess_ms_per_image']:>7.2f}  {row['load_s']:>6.1f}"
        )


if __name__ == "__main__":
    main()
