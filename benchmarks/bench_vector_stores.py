"""Vector stores side by side, same vectors, same queries, same run: FAISS vs Qdrant.

    .venv/bin/python -m benchmarks.bench_vector_stores [--n 10000,20000,50000] [--dim 512]
        [--qdrant local:DIR | http://HOST:6333]

Each store is filled the way the app fills it (``open_vector_store`` over ids and vectors, as
they come out of the library) and then asked single queries one at a time, as the app asks
them. Recall@10 is against exact brute force over the same vectors. The vectors are
``bench_search``'s clustered, anisotropic stand-in for photo embeddings.

Without ``--qdrant URL`` the Qdrant side is its in-process mode (``local:`` in a temporary
folder): the same client and code path as a server, but its search is numpy brute force and its
storage a SQLite file of pickles, so it measures the client and the app's code, not a Qdrant
server's HNSW index. Writes benchmarks/results/vector_stores.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks.bench_search import ClusteredSphere, rss_mib
from visuallens_app.index.stores import StoreTarget, VectorStore, open_vector_store

RESULTS = Path(__file__).parent / "results" / "vector_stores.json"


def latencies_ms(store: VectorStore, queries: NDArray[np.float32], k: int) -> NDArray[np.float64]:
    store.search(queries[0], k)  # warm-up
    out = []
    for q in queries:
        start = time.perf_counter()
        store.search(q, k)
        out.append((time.perf_counter() - start) * 1000)
    return np.asarray(out)


def measure(
    spec: str,
    target: StoreTarget,
    *,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    queries: NDArray[np.float32],
    truth: list[list[int]],
    k: int,
) -> dict[str, float | str]:
    start = time.perf_counter()
    store = open_vector_store(spec, target, fingerprint="bench", fetch=lambda: (ids, vectors))
    fill_s = time.perf_counter() - start
    start = time.perf_counter()
    again = open_vector_store(spec, target, fingerprint="bench", fetch=lambda: (ids, vectors))
    reopen_s = time.perf_counter() - start
    assert len(again) == len(ids)
    lat = latencies_ms(store, queries, k)
    found = [{pid for pid, _ in hits} for hits in store.search(queries, k)]
    recall = float(np.mean([len(f & set(t)) / k for f, t in zip(found, truth, strict=True)]))
    return {
        "store": "qdrant-local" if spec.startswith("local:") else spec,
        "fill_s": round(fill_s, 2),
        "reopen_s": round(reopen_s, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "recall_at_10": round(recall, 4),
        "rss_mib": round(rss_mib(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10000,20000,50000", help="comma-separated sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--qdrant", default="", help="a Qdrant URL; default: local mode")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.n.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            # A folder per size: local mode filters every point of a collection in Python, so
            # the points of an earlier size would slow this one down.
            qdrant = args.qdrant or f"local:{Path(tmp) / f'qdrant-{n}'}"
            space = ClusteredSphere(args.dim, clusters=max(50, n // 200), seed=n)
            vectors = space.sample(n)
            ids = np.arange(n, dtype=np.int64)
            queries = space.sample(args.queries)
            exact = queries @ vectors.T
            truth = [np.argsort(-row)[: args.k].tolist() for row in exact]
            del exact
            for spec in ("faiss", qdrant):
                target = StoreTarget(f"bench-{n}", "bench-encoder", Path(tmp) / f"faiss-{n}", "b")
                row = {
                    "n": n,
                    **measure(
                        spec,
                        target,
                        ids=ids,
                        vectors=vectors,
                        queries=queries,
                        truth=truth,
                        k=args.k,
                    ),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(
        f"{'n':>9} {'store':>26} {'fill s':>8} {'reopen s':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'recall@10':>9}"
    )
    for row in rows:
        print(
            f"{row['n']:>9} {row['store']:>26} {row['fill_s']:>8} {row['reopen_s']:>9} "
            f"{row['p50_ms']:>8} {row['p95_ms']:>8} {row['recall_at_10']:>9}"
        )
    for n in sizes:
        faiss, other = (r for r in rows if r["n"] == n)
        ratio = float(other["p50_ms"]) / max(float(faiss["p50_ms"]), 1e-9)
        print(f"n={n}: {other['store']} p50 is {ratio:.1f}x FAISS's")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": platform.platform(), "dim": args.dim, "k": args.k, "rows": rows}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
