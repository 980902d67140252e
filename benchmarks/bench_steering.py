"""Sweep cost: cells scored on prepared prompts against the naive full forward per cell.

Run: ``.venv/bin/python -m benchmarks.bench_steering`` (``--vlm DIR`` for a real model,
``--questions``, ``--layers``, ``--alphas``). Prints a summary and writes
``benchmarks/results/steering.json``.

Setup. Without ``--vlm``, a small random LLaVA is built offline (the test models' builder with
4 decoder layers of width 128; its vision tower is the tests' tiny CLIP, so the ratio here is a
floor: a real tower costs far more per image than this one). Questions are multiple-choice about
the scikit-image sample photos. The grid is 4 layers x 4 alphas.

Fast (the app's sweep): each question is prepared once (processor, vision tower, embeddings:
:func:`visuallens_app.steering.apply.prepare`) and each cell re-runs only the language model on
the recorded inputs. Naive: for every cell, the prompt is encoded again and the whole model
runs (what :func:`visuallens_app.vlm.scoring.first_token_probabilities` under the hooks does).
Both pick the same answer letter for every question and cell (checked, and reported).
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
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "steering.json"


def build_model(folder: Path, *, layers: int, hidden: int) -> Path:
    """The tests' tiny LLaVA with a deeper, wider language model."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import tiny_vlms

    original = tiny_vlms._llama

    def deeper(vocab: int, **extra: Any) -> Any:
        config = original(vocab, **extra)
        config.num_hidden_layers, config.hidden_size = layers, hidden
        config.intermediate_size, config.num_attention_heads = hidden * 4, 4
        config.num_key_value_heads, config.head_dim = 4, hidden // 4
        return config

    tiny_vlms._llama = deeper
    try:
        return tiny_vlms.build("llava", folder)
    finally:
        tiny_vlms._llama = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vlm", help="a local vision-language model folder (default: built here)")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--layers", default="", help="default: 4 evenly spaced layers")
    parser.add_argument("--alphas", default="0.25,0.5,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from visuallens_app.steering import apply, bench, vectors
    from visuallens_app.steering.sweep import parse_alphas
    from visuallens_app.vlm import load_vlm
    from visuallens_app.vlm.hooks import hook_count
    from visuallens_app.vlm.scoring import first_token_probabilities, option_token_ids

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.vlm) if args.vlm else build_model(Path(tmp) / "m", layers=4, hidden=128)
        vlm = load_vlm(folder)
        count = vlm.num_layers
        layers = (
            vectors.parse_layers(args.layers, count)
            if args.layers
            else sorted({round(i * (count - 1) / 3) for i in range(4)})
        )
        alphas = parse_alphas(args.alphas)
        rng = np.random.default_rng(0)
        v = rng.normal(size=vlm.hidden_size).astype(np.float32)
        vector = vectors.SteeringVector(
            dict.fromkeys(layers, v), "mean_shift", "spatial", vlm.name, "bench"
        )
        import skimage

        samples = sorted((Path(skimage.__file__).parent / "data").glob("*.png"))[:6]
        items = [
            bench.BenchItem(
                i + 1,
                samples[i % len(samples)],
                f"Is the main object on the left or the right? ({i})",
                ("left", "right", "centre"),
                i % 3,
            )
            for i in range(args.questions)
        ]
        photos = [bench.open_photo(item.image) for item in items]
        cells = [(layer, alpha) for layer in layers for alpha in alphas]

        def fast() -> list[int]:
            answers = []
            for item, photo in zip(items, photos, strict=True):
                ids = option_token_ids(vlm, item.letters)
                prepared = apply.prepare(vlm, photo, item.prompt())
                mask = prepared.mask("image")
                for layer, alpha in cells:
                    steering = apply.steerings(vector, [layer], alpha, mask)
                    answers.append(int(np.argmax(prepared.probabilities(ids, steering))))
            return answers

        def naive() -> list[int]:
            from visuallens_app.vlm.prompts import encode

            answers = []
            for item, photo in zip(items, photos, strict=True):
                ids = option_token_ids(vlm, item.letters)
                for layer, alpha in cells:
                    inputs = encode(vlm, [item.prompt()], [[photo]])
                    mask = apply.steering_mask(vlm, inputs, "image")
                    with apply.applied(vlm, apply.steerings(vector, [layer], alpha, mask)):
                        p = first_token_probabilities(vlm, photo, item.prompt(), ids)
                    answers.append(int(np.argmax(p)))
            return answers

        fast()  # warm-up: first calls allocate
        timings: dict[str, list[float]] = {"fast": [], "naive": []}
        outputs: dict[str, list[int]] = {}
        for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
            for name, fn in (("naive", naive), ("fast", fast)):
                start = time.perf_counter()
                outputs[name] = fn()
                timings[name].append(time.perf_counter() - start)
        assert hook_count(vlm.model) == 0
        fast_s, naive_s = statistics.median(timings["fast"]), statistics.median(timings["naive"])
        result = {
            "model": vlm.describe(),
            "built_here": not args.vlm,
            "questions": len(items),
            "layers": layers,
            "alphas": alphas,
            "cells": len(cells),
            "fast_median_s": round(fast_s, 3),
            "naive_median_s": round(naive_s, 3),
            "fast_ms_per_cell_question": round(1000 * fast_s / (len(cells) * len(items)), 2),
            "naive_ms_per_cell_question": round(1000 * naive_s / (len(cells) * len(items)), 2),
            "speedup": round(naive_s / fast_s, 2),
            "target_speedup": 2.0,
            "same_answers": outputs["fast"] == outputs["naive"],
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"steering sweep, {len(layers)} layers x {len(alphas)} alphas on {len(items)} questions "
        f"({vlm.describe()}): prepared {fast_s:.2f} s, naive {naive_s:.2f} s, speed-up "
        f"{result['speedup']}x (target 2x); same answers: {result['same_answers']}"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
