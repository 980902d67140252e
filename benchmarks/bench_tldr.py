"""The grounding detector on a 25-token caption vs the naive way of computing the same margins.

Run: ``.venv/bin/python -m benchmarks.bench_tldr`` (add ``--quick`` for a smoke run).
Prints a table and writes ``benchmarks/results/tldr.json``.

The detector encodes the image once and every sentence variant (each judged phrase swapped for
each of its alternatives) in one ``encode_texts`` batch. The naive way scores each variant on its
own: encode the image, encode the one text, take the inner product, once per variant. Both give
the same margins (checked); the ratio is what batching and encoding the image once buy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.samples import sample_photo

RESULTS = Path(__file__).parent / "results" / "tldr.json"
# 25 word tokens (punctuation included), five judged objects for the embedded encoder.
CAPTION = (
    "A tabby cat sits on a wooden chair next to a cup, a book and a lamp "
    "near the window of the house."
)


def _best_of(repeats: int, run: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one repeat, for a smoke run")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 2

    import torch

    from visuallens_app.devices import configure_torch_threads
    from visuallens_app.models.registry import load_encoder
    from visuallens_app.tldr.grounding import GroundingDetector
    from visuallens_app.tldr.lexicon import tokenize

    threads = configure_torch_threads()
    encoder = load_encoder("embedded", device="cpu").encoder
    detector = GroundingDetector(encoder)
    image = sample_photo("chelsea")
    tokens = len(tokenize(CAPTION))

    # The texts the detector batches, recovered from one run (same order as its batch).
    captured: list[list[str]] = []
    real_encode = encoder.encode_texts

    def spy(texts: list[str]) -> object:
        captured.append(list(texts))
        return real_encode(texts)

    encoder.encode_texts = spy  # type: ignore[method-assign]
    try:
        _, margins, *_ = detector.margins(image, CAPTION)
    finally:
        del encoder.encode_texts  # type: ignore[method-assign]
    texts = captured[0]

    detector.score(image, "", CAPTION)  # warm-up
    batched = _best_of(repeats, lambda: detector.score(image, "", CAPTION))

    def naive() -> list[float]:
        return [
            float(encoder.encode_texts([t])[0] @ encoder.encode_images([image])[0]) for t in texts
        ]

    naive_s = _best_of(repeats, naive)
    image_vector = encoder.encode_images([image])[0]
    batched_sims = encoder.encode_texts(texts) @ image_vector
    same = bool(np.allclose(np.array(naive()), batched_sims, atol=1e-4))

    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": threads,
        "encoder": encoder.id,
        "caption": CAPTION,
        "tokens": tokens,
        "judged_phrases": len(margins),
        "text_variants": len(texts),
        "grounding_s": batched,
        "naive_s": naive_s,
        "speedup": naive_s / batched,
        "same_scores": same,
        "repeats": repeats,
        "timing": "best of repeats, wall clock, after a warm-up call",
    }
    print(
        f"{results['machine']}, torch {results['torch']} ({threads} threads), {encoder.id}\n"
        f"  caption of {tokens} tokens, {len(margins)} judged phrases, {len(texts)} text variants\n"
        f"  grounding detector (image once, one text batch): {1000 * batched:8.1f} ms\n"
        f"  naive (image + one text per variant):            {1000 * naive_s:8.1f} ms\n"
        f"  speed-up {naive_s / batched:.1f}x; same scores: {same}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS}")
    return results


if __name__ == "__main__":
    main()
