"""Search benchmark: the approximate (IVF) index against exact brute force, in one run.

    .venv/bin/python -m benchmarks.bench_search [--n 1000000] [--dim 512]

The vectors are synthetic but shaped like image embeddings: a few thousand gaussian clusters of
uneven size on the unit sphere, all inside a common cone (CLIP-like embeddings are anisotropic:
two unrelated photos still have cosine ~0.3). Uniform random vectors would be the wrong test:
in 512 dimensions all their pairwise distances are nearly equal, so no ANN index can beat brute
force on them, while real photo collections are strongly clustered.

Queries are fresh draws from the same mixture (not indexed vectors). Latency is single-query,
one at a time, as in the app; recall@10 is against exact search over the same vectors.
Writes benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from visuallens_app.index import VectorIndex, recall_at_k

RESULTS = Path(__file__).parent / "results" / "search.json"


class ClusteredSphere:
    """A mixture of gaussian clusters on the unit sphere, resembling image embeddings.

    Two levels, as in a photo library: ~100 topics (pets, food, landscapes...) inside a common
    cone, each holding clusters (this cat, that beach) close to each other. Members vary mostly
    along a few directions shared by all clusters (lighting, framing, colour), which is what
    makes neighbouring clusters overlap as in real embeddings; isotropic noise in 512
    dimensions alone would keep every cluster cleanly apart and make any index look perfect.
    Cluster sizes are log-normal (a few big subjects, many small ones), spreads vary. The
    result has a median nearest-neighbour cosine of ~0.85 and 10th-neighbour ~0.76.
    """

    def __init__(
        self, dim: int, clusters: int, seed: int = 0, topics: int = 100, shared_rank: int = 8
    ) -> None:
        self.rng = np.random.default_rng(seed)
        mean = self._unit(self.rng.standard_normal((1, dim), dtype=np.float32))
        # 0.7 x the shared direction + a unit random offset: topic-topic cosine ~0.33.
        topic_dirs = self._unit(0.7 * mean + self._offsets(topics, dim))
        # Cluster centres at cosine ~0.9 from their topic.
        parents = self.rng.integers(0, topics, clusters)
        self.centres = self._unit(topic_dirs[parents] + 0.5 * self._offsets(clusters, dim))
        self.basis = self._unit(self.rng.standard_normal((shared_rank, dim), dtype=np.float32))
        weights = self.rng.lognormal(0.0, 1.0, clusters)
        self.weights = weights / weights.sum()
        # Noise norm 0.7-1.2 relative to the centre.
        self.spread = self.rng.uniform(0.7, 1.2, clusters).astype(np.float32)

    def _offsets(self, n: int, dim: int) -> NDArray[np.float32]:
        """``n`` random vectors of norm ~1."""
        return (self.rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)).astype(
            np.float32
        )

    @staticmethod
    def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def sample(self, n: int, chunk: int = 100_000) -> NDArray[np.float32]:
        """``n`` unit vectors, generated in chunks to keep float64 temporaries small."""
        dim = self.centres.shape[1]
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            labels = self.rng.choice(len(self.weights), size=m, p=self.weights)
            rank = len(self.basis)
            shared = self.rng.standard_normal((m, rank), dtype=np.float32) / np.sqrt(rank)
            # ~90% of the noise variance along the shared directions, ~10% isotropic.
            noise = 0.954 * (shared @ self.basis) + 0.3 * self._offsets(m, dim)
            points = self.centres[labels] + self.spread[labels, None] * noise
            out[start : start + m] = self._unit(points)
        return out


def rss_mib() -> float:
    """Current resident memory (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def latencies_ms(index: VectorIndex, queries: NDArray[np.float32], k: int) -> NDArray[np.float64]:
    for q in queries[:3]:  # warm caches and faiss's lazy per-thread state
        index.search(q, k)
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q, k)
        times.append((time.perf_counter() - start) * 1000)
    return np.asarray(times)


def timed_build(
    ids: NDArray[np.int64], vectors: NDArray[np.float32], threshold: int
) -> tuple[VectorIndex, float, float]:
    before = rss_mib()
    start = time.perf_counter()
    index = VectorIndex.build(
        ids, vectors, fingerprint="bench", exact_threshold=threshold, gpu=False
    )
    return index, time.perf_counter() - start, rss_mib() - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    parser.add_argument("--latency-queries", type=int, default=300, help="single queries, IVF")
    parser.add_argument("--exact-latency-queries", type=int, default=40, help="single, exact")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss

    threads = faiss.omp_get_max_threads()
    print(f"faiss {faiss.__version__}, {threads} threads, n={args.n:,} d={args.dim}")
    start = time.perf_counter()
    mixture = ClusteredSphere(args.dim, args.clusters, args.seed)
    vectors = mixture.sample(args.n)
    queries = mixture.sample(args.queries)
    # Non-contiguous ids, like SQLite rowids after deletions.
    ids = np.sort(np.random.default_rng(args.seed).choice(4 * args.n, args.n, replace=False))
    ids = ids.astype(np.int64)
    print(f"generated data in {time.perf_counter() - start:.1f} s")

    exact, exact_build_s, exact_mib = timed_build(ids, vectors, threshold=args.n + 1)
    print(f"exact built in {exact_build_s:.1f} s")
    approx, approx_build_s, approx_mib = timed_build(ids, vectors, threshold=0)
    print(f"{approx.kind} built in {approx_build_s:.1f} s (nprobe {approx.nprobe})")
    del vectors

    exact_results = exact.search(queries, args.k)
    approx_results = approx.search(queries, args.k)
    recall = recall_at_k(approx_results, exact_results, args.k)

    approx_ms = latencies_ms(approx, queries[: args.latency_queries], args.k)
    exact_ms = latencies_ms(exact, queries[: args.exact_latency_queries], args.k)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        approx.save(Path(tmp), "bench")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = VectorIndex.load(Path(tmp), "bench", expected_fingerprint="bench", gpu=False)
        load_s = time.perf_counter() - start
        if loaded is None or len(loaded) != args.n:
            raise SystemExit("the saved index did not load back")
        file_mib = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        del loaded

    nlist = approx.nlist
    result = {
        "n": args.n,
        "dim": args.dim,
        "clusters": args.clusters,
        "k": args.k,
        "faiss": faiss.__version__,
        "threads": faiss.omp_get_max_threads(),
        "machine": platform.processor() or platform.machine(),
        "approx": {
            "kind": approx.kind,
            "nlist": nlist,
            "nprobe": approx.nprobe,
            "calibrated_recall_at_10": approx.calibrated_recall,
            "build_s": round(approx_build_s, 2),
            "rss_delta_mib": round(approx_mib),
            "p50_ms": round(float(np.percentile(approx_ms, 50)), 3),
            "p95_ms": round(float(np.percentile(approx_ms, 95)), 3),
            "recall_at_10": round(recall, 4),
            "save_s": round(save_s, 2),
            "load_s": round(load_s, 2),
            "file_mib": round(file_mib),
        },
        "exact": {
            "build_s": round(exact_build_s, 2),
            "rss_delta_mib": round(exact_mib),
            "p50_ms": round(float(np.percentile(exact_ms, 50)), 3),
            "p95_ms": round(float(np.percentile(exact_ms, 95)), 3),
        },
    }
    result["speedup_p50"] = round(result["exact"]["p50_ms"] / result["approx"]["p50_ms"], 1)

    a, e = result["approx"], result["exact"]
    print()
    label = f"{a['kind']} nlist={nlist} nprobe={a['nprobe']}"
    rows = [
        ("exact (flat IP)", e["build_s"], e["rss_delta_mib"], e["p50_ms"], e["p95_ms"], 1.0),
        (label, a["build_s"], a["rss_delta_mib"], a["p50_ms"], a["p95_ms"], a["recall_at_10"]),
    ]
    print(f"{'index':<28}{'build s':>9}{'RSS MiB':>9}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}")
    for row in rows:
        print(f"{row[0]:<28}" + "".join(f"{v:>9}" for v in row[1:5]) + f"{row[5]:>11}")
    print(f"speedup (p50, exact / approx): {result['speedup_p50']}x")
    print(f"save {a['save_s']} s, load (with CRC check) {a['load_s']} s, file {a['file_mib']} MiB")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
