"""A CLIP text query without open_clip: the cached numpy text side against open_clip's tower.

    .venv/bin/python -m benchmarks.bench_clip_text [--arch ViT-B-32] [--rounds 5] [--batch 256]

One random-weight checkpoint (safetensors, as a pretrained download is) serves both paths:
- cold query: a fresh process from start to one text's vector, once through open_clip (the
  encoder's tower loaded the way it was before the cache: ``load(images=False)``) and once
  through the cache entry that open_clip's first load wrote (``clip_text.py``); rounds
  interleaved, medians and their ratio;
- batch: ``--batch`` texts of mixed lengths in one process, open_clip's tower vs the numpy
  tower, texts per second (rounds interleaved after a warm-up), and the smallest cosine
  between the two paths' vectors.
Results go to ``benchmarks/results/clip_text.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

_ONE_QUERY = """
import sys
from visuallens_app.models.clip import ClipEncoder
encoder = ClipEncoder.from_checkpoint(sys.argv[1], arch=sys.argv[2], device="cpu")
if sys.argv[3] == "open_clip":
    encoder.load(images=False)
encoder.encode_texts([sys.argv[4]])
assert (sys.argv[3] == "open_clip") == ("open_clip" in sys.modules)
"""


_PHRASES = (
    "a photo of",
    "the red bicycle",
    "a cat asleep on the sofa",
    "friends on the beach at night",
    "snow",
    "a birthday cake with candles in a dark kitchen",
)


def _texts(n: int) -> list[str]:
    """``n`` distinct texts of 2 to 20 words."""
    return [
        " ".join(_PHRASES[j % len(_PHRASES)] for j in range(i, i + 1 + i % 4)) + f" {i}"
        for i in range(n)
    ]


def _cold(checkpoint: Path, arch: str, path: str, query: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _ONE_QUERY, str(checkpoint), arch, path, query],
        env=env,
        check=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    from safetensors.torch import save_file

    from visuallens_app.models.clip import ClipEncoder

    work = Path(tempfile.mkdtemp(prefix="vl-clip-text-"))
    root = Path(__file__).parent.parent
    env = {
        **os.environ,
        "VISUALLENS_CACHE_DIR": str(work / "cache"),
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
    }
    os.environ["VISUALLENS_CACHE_DIR"] = env["VISUALLENS_CACHE_DIR"]
    checkpoint = work / "clip.safetensors"
    model = ClipEncoder.random(args.arch, seed=0)._model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    del model

    through = ClipEncoder.from_checkpoint(checkpoint, arch=args.arch, device="cpu")
    through.load(images=False)  # open_clip's load writes the cache entry
    texts = _texts(args.batch)
    cached = ClipEncoder.from_checkpoint(checkpoint, arch=args.arch, device="cpu")
    assert cached._cached_text_side() is not None, "no cache entry was written"

    cold: dict[str, list[float]] = {"open_clip": [], "cache": []}
    for r in range(args.rounds):
        order = ["open_clip", "cache"] if r % 2 == 0 else ["cache", "open_clip"]
        for path in order:
            cold[path].append(_cold(checkpoint, args.arch, path, f"a query {r}", env))
            print(f"cold {path}: {cold[path][-1]:.2f} s", file=sys.stderr)

    batch: dict[str, list[float]] = {"open_clip": [], "cache": []}
    runners = {"open_clip": through, "cache": cached}
    vectors = {name: enc.encode_texts(texts) for name, enc in runners.items()}  # warm-up
    for r in range(args.rounds):
        for name in ["open_clip", "cache"] if r % 2 == 0 else ["cache", "open_clip"]:
            start = time.perf_counter()
            runners[name].encode_texts(texts)
            batch[name].append(len(texts) / (time.perf_counter() - start))
    cosine = float((vectors["open_clip"] * vectors["cache"]).sum(axis=1).min())

    med_cold = {k: statistics.median(v) for k, v in cold.items()}
    med_batch = {k: statistics.median(v) for k, v in batch.items()}
    summary: dict[str, Any] = {
        "arch": f"{args.arch} random weights",
        "rounds": args.rounds,
        "batch": args.batch,
        "load_average": os.getloadavg(),
        "cold_query_s": med_cold,
        "cold_query_open_clip_over_cache": med_cold["open_clip"] / med_cold["cache"],
        "batch_texts_per_s": med_batch,
        "batch_cache_over_open_clip": med_batch["cache"] / med_batch["open_clip"],
        "min_cosine": cosine,
        "all": {"cold_s": cold, "batch_texts_per_s": batch},
    }
    print(
        f"cold query   open_clip {med_cold['open_clip']:6.2f} s   cache {med_cold['cache']:6.2f} s"
        f"   {summary['cold_query_open_clip_over_cache']:5.2f}x faster\n"
        f"{args.batch} texts   open_clip {med_batch['open_clip']:6.0f}/s   cache "
        f"{med_batch['cache']:6.0f}/s   {summary['batch_cache_over_open_clip']:5.2f}x\n"
        f"min cosine between the paths {cosine:.7f}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "clip_text.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
