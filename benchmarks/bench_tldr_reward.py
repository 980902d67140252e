"""Reward-model scoring: many captions in batches (one forward pass each) vs one at a time.

Run: ``.venv/bin/python -m benchmarks.bench_tldr_reward`` (``--vlm DIR|NAME`` for a real model,
``--captions``, ``--batch-size``, ``--repeats``). Prints a summary and writes
``benchmarks/results/tldr_reward.json``.

Setup. Without ``--vlm`` the tiny random Qwen2-VL of ``tests/tiny_vlms.py`` (hidden 32, 2 layers)
is built in a temporary folder: no pretrained VLM is reachable offline. On it a forward pass is
mostly fixed overhead, so the ratio says what batching saves per call, not what it saves on a
3B model. The captions are real sentences about the scikit-image sample photos, each with its own
photo; the head is random (the timing does not depend on its weights). Both ways score the same
items with :class:`~visuallens_app.tldr.reward.RewardModel` (no heatmaps) and must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "tldr_reward.json"

CAPTIONS = [
    "A tabby cat is lying on a wooden floor and looking at the camera.",
    "A cup of coffee on a white saucer, with a spoon next to it.",
    "An astronaut in a white space suit holds a helmet in front of a flag.",
    "A rocket stands on the launch pad under a clear blue sky.",
    "A red motorcycle is parked on the grass near a road.",
]


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", default=None, help="a VLM folder or cached Hub name")
    parser.add_argument("--captions", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import skimage
    import torch
    from PIL import Image

    from visuallens_app.tldr.reward import RewardModel
    from visuallens_app.vlm import load_vlm

    names = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle_left"]
    folder = Path(skimage.__file__).parent / "data"
    photos = [Image.open(next(folder.glob(f"{n}.*"))).convert("RGB") for n in names]
    items = [
        (photos[i % len(photos)], "", CAPTIONS[i % len(CAPTIONS)]) for i in range(args.captions)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        source = args.vlm
        if source is None:
            sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
            import tiny_vlms

            source = str(tiny_vlms.build("qwen2_vl", Path(scratch) / "qwen2_vl"))
        vlm = load_vlm(source, device=args.device)
        reward = RewardModel(vlm, heatmaps=False)
        torch.manual_seed(0)
        with torch.no_grad():
            reward.head.weight.normal_()
        reward.score_many(items[:2], batch_size=2)  # warm-up
        batched_scores = reward.score_many(items, batch_size=args.batch_size)
        single_scores = [reward.score(*item) for item in items]
        worst = max(
            abs((a.p_good or 0) - (b.p_good or 0))
            for x, y in zip(batched_scores, single_scores, strict=True)
            for a, b in zip(x.tokens, y.tokens, strict=True)
        )
        batched = timed(lambda: reward.score_many(items, batch_size=args.batch_size), args.repeats)
        single = timed(lambda: [reward.score(*item) for item in items], args.repeats)
    batched_s, single_s = statistics.median(batched), statistics.median(single)
    result = {
        "vlm": vlm.describe(),
        "captions": args.captions,
        "batch_size": args.batch_size,
        "tokens_per_caption": round(
            sum(len(s.tokens) for s in batched_scores) / len(batched_scores), 1
        ),
        "batched_median_s": round(batched_s, 3),
        "one_at_a_time_median_s": round(single_s, 3),
        "speedup": round(single_s / batched_s, 2),
        "captions_per_s_batched": round(args.captions / batched_s, 1),
        "max_p_good_difference": worst,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"reward-model scoring of {args.captions} captions on {vlm.describe()}: batched "
        f"({args.batch_size} per pass) {batched_s:.2f} s, one at a time {single_s:.2f} s, "
        f"speed-up {single_s / batched_s:.1f}x; largest P(good) difference {worst:.1e}"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
