"""Recommendation and search quality with the embedded encoder, before and after issue 10.

Run: ``.venv/bin/python -m benchmarks.bench_quality`` (``--examples N``, ``--seed S``,
``--skip search|recommend``). Prints two tables and writes ``benchmarks/results/quality.json``.

Recommendations. The probability-photo benchmark (:mod:`visuallens_app.lens.synthetic_photos`):
histories of 10-300 photos made as ImageNet probability vectors (clear, blurry, hubs of nothing,
documents) and mapped by the real embedded encoder; candidates of themes that compete inside
a category. Every row ranks the same questions in the same candidate order; intervals are 95%
bootstrap intervals, the differences paired (the same resampled questions). Rows:

- naive: the mean of all photos vs each candidate;
- random: the exact expectation;
- no_retrieval, retrieval_only, full: the shipped pipeline (fitted weights);
- "before": the encoder and pipeline as they were (first-synonym class names, no hub
  correction, hand-set weights 1/0.5/0.75, no photo cap, no confidence weighting, single-photo
  profile words, duplicates at cosine 0.92); and the new encoder with that old pipeline.
  The "an object" prompt and the document-class filter cannot be switched back; the
  documents of this benchmark are caught by either.

Search. 21 text queries over 17 scikit-image photos plus a blurred-noise hub, a second hub
and a photographed text page: the rank of the right photo, for the first encoder (first-
synonym class names, no correction) and the shipped one.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from visuallens_app.lens.evaluate import PhotoVectorCache, first_hit_rank, random_expected
from visuallens_app.lens.matching import MatchWeights
from visuallens_app.lens.pipeline import LensConfig, default_vocabulary, recommend
from visuallens_app.lens.synthetic_photos import make_photo_benchmark
from visuallens_app.models.embedded import EmbeddedEncoder

RESULTS = Path(__file__).parent / "results" / "quality.json"

SEARCH_PHOTOS = (
    "chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "hubble_deep_field",
    "horse", "camera", "coins", "moon", "retina", "brick", "grass", "gravel",
)  # fmt: skip
QUERIES = (
    ("cat", "chelsea"), ("a tabby cat", "chelsea"), ("a cup of coffee", "coffee"),
    ("espresso", "coffee"), ("rocket", "rocket"), ("a rocket launch", "rocket"),
    ("motorcycle", "motorcycle_left"), ("astronaut", "astronaut"), ("a person", "astronaut"),
    ("a woman", "astronaut"), ("stars in space", "hubble_deep_field"),
    ("galaxies", "hubble_deep_field"), ("coins", "coins"), ("money", "coins"),
    ("the moon", "moon"), ("a horse", "horse"), ("a man with a camera", "camera"),
    ("a photographer", "camera"), ("a brick wall", "brick"), ("grass", "grass"),
    ("a page of text", "page"),
)  # fmt: skip

BEFORE = {
    "weights": MatchWeights(1.0, 0.5, 0.75),
    "use_reliability": False,
    "max_photo_share": None,
    "min_support": 1,
    "duplicate_threshold": 0.92,
}


def _bootstrap(values: np.ndarray, resamples: np.ndarray) -> tuple[float, float, float]:
    means = values[resamples].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def recommendation_quality(n: int, seed: int, bootstrap: int = 1000) -> dict[str, Any]:
    cache = Path("/tmp") / "visuallens-bench-encoders"
    new = EmbeddedEncoder(cache_dir=cache)
    old = EmbeddedEncoder(cache_dir=cache, class_names="wordnet", hub_correction=False)
    vocabulary = default_vocabulary()
    vectors = PhotoVectorCache()
    rows: dict[str, tuple[EmbeddedEncoder, LensConfig]] = {
        "naive": (new, LensConfig.naive()),
        "no_retrieval": (new, LensConfig.no_retrieval()),
        "retrieval_only": (new, LensConfig.retrieval_only()),
        "full": (new, LensConfig()),
        "before: old encoder, old pipeline": (old, LensConfig(**BEFORE)),
        "before: old encoder, naive": (old, LensConfig.naive()),
        "new encoder, old pipeline": (new, LensConfig(**BEFORE)),
    }
    benchmarks = {
        enc.id: make_photo_benchmark(enc, n, seed=seed)
        for enc in {new.id: new, old.id: old}.values()
    }
    order_rng = np.random.default_rng(seed)
    base = benchmarks[new.id]
    orders = [order_rng.permutation(len(e.candidates)) for e in base]
    sizes = np.array([len(e.history_vectors) for e in base if e.history_vectors is not None])
    rr: dict[str, np.ndarray] = {}
    hit1: dict[str, np.ndarray] = {}
    rr["random"] = np.array(
        [random_expected(len(e.candidates), len(e.ground_truth))["mrr"] for e in base]
    )
    hit1["random"] = np.array(
        [random_expected(len(e.candidates), len(e.ground_truth))["hit@1"] for e in base]
    )
    seconds: dict[str, float] = {}
    for name, (encoder, config) in rows.items():
        started = time.perf_counter()
        ranks = []
        for example, order in zip(benchmarks[encoder.id], orders, strict=True):
            candidates = [example.candidates[i] for i in order]
            result = recommend(
                vectors.history(example, encoder),
                candidates,
                example.category,
                encoder,
                config=config,
                vocabulary=vocabulary,
                k=len(candidates),
            )
            ranking = [r.item.id for r in result.recommendations]
            ranks.append(first_hit_rank(ranking, example.ground_truth))
        rr[name] = 1.0 / np.array(ranks, dtype=np.float64)
        hit1[name] = (np.array(ranks) == 1).astype(np.float64)
        seconds[name] = time.perf_counter() - started
    resamples = np.random.default_rng(seed + 1).integers(0, n, size=(bootstrap, n))
    table = {
        name: {"mrr": _bootstrap(rr[name], resamples), "hit@1": _bootstrap(hit1[name], resamples)}
        for name in ["naive", "random", *[r for r in rows if r != "naive"]]
    }
    differences = {
        f"full - {other}": _bootstrap(rr["full"] - rr[other], resamples)
        for other in (
            "naive",
            "no_retrieval",
            "retrieval_only",
            "before: old encoder, old pipeline",
        )
    }
    by_size = {}
    for low, high in ((10, 30), (31, 100), (101, 300)):
        mask = (sizes >= low) & (sizes <= high)
        by_size[f"{low}-{high}"] = {
            "questions": int(mask.sum()),
            **{
                name: float(rr[name][mask].mean())
                for name in ("naive", "full", "before: old encoder, old pipeline")
            },
        }
    return {"table": table, "differences": differences, "by_size": by_size, "seconds": seconds}


def search_quality() -> dict[str, Any]:
    from tests.samples import hub_image, photographed_page, sample_image

    images = [sample_image(n) for n in SEARCH_PHOTOS]
    images += [hub_image(0), hub_image(1), photographed_page()]
    names = [*SEARCH_PHOTOS, "hub", "hub2", "page"]
    cache = Path("/tmp") / "visuallens-bench-encoders"
    encoders = {
        "before (first synonyms, no correction)": EmbeddedEncoder(
            cache_dir=cache, class_names="wordnet", hub_correction=False
        ),
        "after (shipped)": EmbeddedEncoder(cache_dir=cache),
    }
    probs = encoders["after (shipped)"].image_probabilities(images)
    out: dict[str, Any] = {}
    for label, encoder in encoders.items():
        vectors, _ = encoder.vectors_from_probabilities(probs)
        texts = encoder.encode_texts([q for q, _ in QUERIES])
        scores = vectors @ texts.T
        ranks = []
        for j, (_, expected) in enumerate(QUERIES):
            order = [names[i] for i in np.argsort(-scores[:, j], kind="stable")]
            ranks.append(order.index(expected) + 1)
        out[label] = ranks
    return {"queries": [q for q, _ in QUERIES], "expected": [e for _, e in QUERIES], **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=("search", "recommend"), default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {"python": platform.python_version(), "seed": args.seed}
    if args.skip != "recommend":
        rec = recommendation_quality(args.examples, args.seed)
        result["recommend"] = rec
        print(f"Probability-photo benchmark, {args.examples} questions, seed {args.seed}")
        print(f"{'method':<36}{'MRR %':>22}{'Hit@1 %':>22}")
        for name, cells in rec["table"].items():
            mrr, hit = cells["mrr"], cells["hit@1"]
            print(
                f"{name:<36}{100 * mrr[0]:8.1f} [{100 * mrr[1]:4.1f}, {100 * mrr[2]:4.1f}]"
                f"{100 * hit[0]:8.1f} [{100 * hit[1]:4.1f}, {100 * hit[2]:4.1f}]"
            )
        for name, (mean, low, high) in rec["differences"].items():
            print(f"{name:<48} {100 * mean:+5.1f} [{100 * low:+5.1f}, {100 * high:+5.1f}]")
        for span, row in rec["by_size"].items():
            print(
                f"history {span}: "
                + ", ".join(
                    f"{k} {100 * v:.1f}" if k != "questions" else f"{v} questions"
                    for k, v in row.items()
                )
            )
    if args.skip != "search":
        search = search_quality()
        result["search"] = search
        labels = [k for k in search if k not in ("queries", "expected")]
        print(f"\n{'query':<24}{'right photo':<20}" + "".join(f"{lab[:24]:>26}" for lab in labels))
        for j, query in enumerate(search["queries"]):
            print(
                f"{query:<24}{search['expected'][j]:<20}"
                + "".join(f"{search[lab][j]:>26}" for lab in labels)
            )
        for lab in labels:
            ranks = np.array(search[lab])
            print(
                f"{lab}: MRR {np.mean(1 / ranks):.3f}, top-1 {int((ranks == 1).sum())}/{len(ranks)}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
