"""Recommendation latency: the vectorised lens pipeline against a naive Python-loop version.

Run: ``.venv/bin/python -m benchmarks.bench_recommend`` (``--photos``, ``--candidates``,
``--repeats`` to change the setup). Prints a summary and writes
``benchmarks/results/recommend.json``.

Setup. The real embedded encoder is loaded and embeds everything textual for real: the shipped
aspect vocabulary, the prompts and the candidates (100 items of the shipped catalog, relabelled
into one category). Photo vectors are synthetic but shaped like the embedded encoder's ConSE
vectors: each is a normalised convex mixture of 10 text embeddings (the aspect vocabulary's
terms stand in for ImageNet class names), drawn around 60 "themes" so the library has clusters
the way a real one does (and some near-duplicate bursts). They are written into a real
PhotoStore, and :class:`~visuallens_app.lens.pipeline.Recommender` is timed warm: model loaded,
every embedding cached, as in the GUI after the first question.

Naive. The same stages written the obvious way: Python loops over photos and candidates with a
numpy dot product per pair, per-photo aspect scoring recomputed every time, no cached library
statistics. It re-encodes nothing either (it gets the same cached vectors).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app.lens.catalog import Catalog, CatalogItem, load_default_catalog
from visuallens_app.lens.history import encode_texts_cached
from visuallens_app.lens.matching import embed_items
from visuallens_app.lens.pipeline import LensConfig, Recommender
from visuallens_app.lens.retrieval import CATEGORY_TEMPLATES, JUNK_PROMPTS, PHOTO_PROMPTS
from visuallens_app.lens.vocabulary import AspectVocabulary
from visuallens_app.library.store import NewPhoto, PhotoStore
from visuallens_app.models.base import Encoder

RESULTS = Path(__file__).parent / "results" / "recommend.json"
CATEGORY = "coffee shop"


def synthetic_conse(
    basis: NDArray[np.float32], n: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """``n`` unit vectors, each a convex mix of 10 basis rows around one of 60 themes."""
    themes = [rng.choice(len(basis), size=25, replace=False) for _ in range(60)]
    out = np.zeros((n, basis.shape[1]), dtype=np.float32)
    for i in range(n):
        theme = themes[int(rng.integers(len(themes)))]
        rows = rng.choice(theme, size=10, replace=False)
        weights = np.sort(rng.dirichlet(np.full(10, 0.5)))[::-1]
        out[i] = weights @ basis[rows]
        if i and rng.random() < 0.05:  # a burst: a near copy of the previous shot
            out[i] = out[i - 1] + rng.normal(scale=0.01, size=basis.shape[1])
    unit: NDArray[np.float32] = out / np.linalg.norm(out, axis=1, keepdims=True)
    return unit


def candidates(n: int) -> list[CatalogItem]:
    items = load_default_catalog().items
    return [replace(it, category=CATEGORY) for it in items[:n]]


def fill_store(store: PhotoStore, vectors: NDArray[np.float32], encoder_id: str) -> None:
    store.add_roots([Path("/bench")])
    for start in range(0, len(vectors), 2000):
        chunk = range(start, min(start + 2000, len(vectors)))
        photos = [
            NewPhoto(Path(f"/bench/{i:06d}.jpg"), Path("/bench"), 1, 0, f"h{i}", 1, 1, "JPEG")
            for i in chunk
        ]
        store.write_batch(photos, {f"h{i}": vectors[i] for i in chunk}, encoder_id)


# -- the naive version ---------------------------------------------------------------------------


def naive_recommend(
    photos: list[NDArray[np.float32]],
    items: list[CatalogItem],
    *,
    item_vectors: list[NDArray[np.float32]],
    prompt_vectors: list[NDArray[np.float32]],
    junk: list[NDArray[np.float32]],
    good: list[NDArray[np.float32]],
    terms: list[str],
    term_vectors: list[NDArray[np.float32]],
    w: int = 64,
    k: int = 10,
    rounds: int = 4,
) -> list[str]:
    """The pipeline as a first version would write it: loops, one dot product at a time."""
    dot = np.dot
    proto = np.mean(prompt_vectors, axis=0) + np.mean(item_vectors, axis=0)
    proto = proto / np.linalg.norm(proto)
    kept = [
        i
        for i, v in enumerate(photos)
        if max(float(dot(v, j)) for j in junk) <= max(float(dot(v, g)) for g in good)
    ]
    # Per-term statistics and top aspects, photo by photo (one matrix-vector product each).
    term_matrix = np.stack(term_vectors)
    raw_rows = [term_matrix @ v for v in photos]
    mean = sum(raw_rows) / len(photos)
    std = np.sqrt(np.maximum(sum(r * r for r in raw_rows) / len(photos) - mean * mean, 1e-6))
    z_rows = [(row - mean) / std for row in raw_rows]
    top_sets = [set(np.argsort(-z)[:8].tolist()) for z in z_rows]
    n_terms = len(term_vectors)
    df = [0] * n_terms
    for top in top_sets:
        for t in top:
            df[t] += 1

    def retrieve(score: dict[int, float]) -> list[int]:
        ranked = sorted(kept, key=lambda i: -score[i])
        chosen: list[int] = []
        for i in ranked:
            if all(float(dot(photos[i], photos[j])) <= 0.92 for j in chosen):
                chosen.append(i)
            if len(chosen) == w:
                break
        return chosen

    base = {i: float(dot(photos[i], proto)) for i in kept}
    retrieved = retrieve(base)
    weights = [0.0] * n_terms
    for _ in range(rounds):
        counts = [sum(1 for i in retrieved if t in top_sets[i]) for t in range(n_terms)]
        weights = [
            max(
                0.0,
                math.log((c + 1) / (len(retrieved) + 2)) - math.log((d + 1) / (len(photos) + 2)),
            )
            if c
            else 0.0
            for c, d in zip(counts, df, strict=True)
        ]
        active = [(t, wt) for t, wt in enumerate(weights) if wt]
        score = {i: base[i] + sum(wt * float(z_rows[i][t]) for t, wt in active) for i in kept}
        new = retrieve(score)
        if set(new) == set(retrieved):
            break
        retrieved = new
    profile = sum(photos[i] for i in retrieved) / len(retrieved)
    scores = []
    for c, vec in enumerate(item_vectors):
        cos_profile = float(dot(profile, vec))
        near = sorted((float(dot(photos[i], vec)) for i in retrieved), reverse=True)[:3]
        aspect = sum(wt * float(dot(term_vectors[t], vec)) for t, wt in enumerate(weights) if wt)
        scores.append((cos_profile + sum(near) / 3 + aspect, items[c].id))
    return [name for _, name in sorted(scores, reverse=True)[:k]]


# -- running -------------------------------------------------------------------------------------


def timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--naive-repeats", type=int, default=2)
    args = parser.parse_args()

    from visuallens_app.models.embedded import EmbeddedEncoder

    t0 = time.perf_counter()
    encoder: Encoder = EmbeddedEncoder()
    vocabulary = AspectVocabulary.load()
    items = candidates(args.candidates)
    catalog = Catalog("bench", Path("."), tuple(items))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = PhotoStore(Path(tmp))
        basis = encode_texts_cached(encoder, vocabulary.terms, store.db)
        vectors = synthetic_conse(basis, args.photos, rng)
        fill_store(store, vectors, encoder.id)
        recommender = Recommender(store, encoder, vocabulary=vocabulary)
        config = LensConfig()
        first_start = time.perf_counter()
        fast_top = recommender.recommend(CATEGORY, catalog, k=10, config=config)
        first_ms = (time.perf_counter() - first_start) * 1000
        setup_s = time.perf_counter() - t0
        fast = timed(lambda: recommender.recommend(CATEGORY, catalog, 10, config), args.repeats)

        item_vecs = embed_items(items, encoder, db=store.db).text
        prompt_vecs = encode_texts_cached(
            encoder, [t.format(CATEGORY) for t in CATEGORY_TEMPLATES], store.db
        )
        junk = encode_texts_cached(encoder, JUNK_PROMPTS, store.db)
        good = encode_texts_cached(encoder, PHOTO_PROMPTS, store.db)
        photo_list = list(vectors)
        naive_top: list[str] = []

        def run_naive() -> None:
            nonlocal naive_top
            naive_top = naive_recommend(
                photo_list,
                items,
                item_vectors=list(item_vecs),
                prompt_vectors=list(prompt_vecs),
                junk=list(junk),
                good=list(good),
                terms=list(vocabulary.terms),
                term_vectors=list(basis),
            )

        naive = timed(run_naive, args.naive_repeats)
        store.close()

    fast_med = statistics.median(fast)
    naive_med = statistics.median(naive)
    fast_ids = [r.item.id for r in fast_top.recommendations]
    result = {
        "photos": args.photos,
        "candidates": len(items),
        "vocabulary_terms": len(vocabulary.terms),
        "encoder": encoder.id,
        "photo_vectors": "synthetic ConSE-like mixtures of vocabulary text embeddings",
        "first_call_ms": round(first_ms, 1),
        "warm_median_ms": round(fast_med, 2),
        "warm_p95_ms": round(sorted(fast)[max(0, int(0.95 * len(fast)) - 1)], 2),
        "naive_median_ms": round(naive_med, 1),
        "speedup": round(naive_med / fast_med, 1),
        "budget_ms": 150,
        "within_budget": fast_med <= 150,
        "top10_overlap_with_naive": len(set(fast_ids) & set(naive_top)),
        "refinement": fast_top.notes,
        "setup_s": round(setup_s, 1),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"recommend over {args.photos} photos x {len(items)} candidates: "
        f"warm median {fast_med:.1f} ms (p95 {result['warm_p95_ms']} ms, first call "
        f"{first_ms:.0f} ms); naive {naive_med:.0f} ms; speed-up {naive_med / fast_med:.0f}x; "
        f"budget 150 ms: {'ok' if fast_med <= 150 else 'MISSED'}"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
