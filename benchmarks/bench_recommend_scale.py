"""Recommendation time against the number of candidates in one category (issue 12 item 4).

Run: ``.venv/bin/python -m benchmarks.bench_recommend_scale`` (``--candidates 1000,10000,100000``,
``--baseline-ref REF``, ``--baseline-timeout S``). Prints a table and writes
``benchmarks/results/recommend_scale.json``.

What is timed is one ``visuallens recommend`` after the catalog has been embedded once: the
catalog folder parsed (``load_catalog``), a fresh :class:`Recommender` over the store (history
read, junk scores, per-photo aspects from the store's caches), the candidates' vectors read from
the store's item cache, and the whole ranking with explanations. The encoder is loaded before
the clock starts, and the items' vectors are written into the store's item cache beforehand
(synthetic, shaped like the embedded encoder's: mixtures of aspect-term embeddings), because
embedding 100,000 descriptions with MiniLM on a laptop CPU is a one-off of many minutes that
the cache exists to avoid; that cost is linear and measured separately (``--cold`` texts/s).

Baseline: the same measurement, in the same run, on the code of ``--baseline-ref`` (default: the
commit this branch started from), extracted with ``git archive`` into a temporary folder and run
in a subprocess with that folder first on ``sys.path``. A run that exceeds
``--baseline-timeout`` is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "recommend_scale.json"
CATEGORY = "coffee shop"
PHOTOS = 2000
#: The commit this work started from (the code whose 50k run did not finish in 600 s).
DEFAULT_BASELINE = "11ad502"


def _write_catalog(folder: Path, n: int) -> None:
    """``n`` distinct items of one category, their texts drawn from the shipped catalog."""
    from visuallens_app.lens.catalog import load_default_catalog

    base = load_default_catalog().items
    with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
        for i in range(n):
            item = base[i % len(base)]
            row = {
                "name": f"{item.name} no. {i}",
                "category": CATEGORY,
                "description": item.description,
                "tags": list(item.tags),
            }
            out.write(json.dumps(row) + "\n")


def worker(n: int) -> dict[str, Any]:
    """One measurement with whatever ``visuallens_app`` is first on ``sys.path``."""
    import numpy as np

    from benchmarks.bench_recommend import fill_store, synthetic_conse
    from visuallens_app.lens.catalog import load_catalog
    from visuallens_app.lens.history import ITEM_VECTORS, encode_texts_cached, ensure_lens_tables
    from visuallens_app.lens.matching import item_hash
    from visuallens_app.lens.pipeline import Recommender
    from visuallens_app.lens.vocabulary import AspectVocabulary
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.embedded import EmbeddedEncoder

    encoder = EmbeddedEncoder()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "catalog").mkdir()
        _write_catalog(root / "catalog", n)
        store = PhotoStore(root / "library")
        basis = encode_texts_cached(encoder, AspectVocabulary.load().terms, store.db)
        fill_store(store, synthetic_conse(basis, PHOTOS, rng), encoder.id)
        items = load_catalog(root / "catalog").catalog.items
        vectors = synthetic_conse(basis, len(items), rng)
        ensure_lens_tables(store.db)
        with store.db.atomic():
            store.db.conn.executemany(
                f"INSERT OR REPLACE INTO {ITEM_VECTORS} "
                "(item_id, item_hash, encoder_id, text_vector, image_vector, n_images) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (it.id, item_hash(it), encoder.id, v.tobytes(), b"", 0)
                    for it, v in zip(items, vectors, strict=True)
                ],
            )
        # Warm the library-side caches (junk scores, per-photo aspects) as a first question
        # on a small catalog would; what is timed is the candidates' share.
        store.close()
        store = PhotoStore(root / "library")
        start, cpu = time.perf_counter(), time.process_time()
        catalog = load_catalog(root / "catalog").catalog
        loaded = time.perf_counter()
        result = _recommend(Recommender(store, encoder), catalog)
        done, cpu_done = time.perf_counter(), time.process_time()
        store.close()
    return {
        "candidates": n,
        "seconds": round(done - start, 3),
        # CPU time of the process: what others' load on a shared machine leaves alone.
        "cpu_s": round(cpu_done - cpu, 3),
        "load_catalog_s": round(loaded - start, 3),
        "recommend_s": round(done - loaded, 3),
        "top3": [r.item.name for r in result.recommendations[:3]],
    }


def _recommend(recommender: Any, catalog: Any) -> Any:
    """What ``visuallens recommend`` calls: the lens service where there is one."""
    try:
        from visuallens_app.lens.service import LensOptions, recommend
    except ImportError:  # the baseline: the CLI called the pipeline directly
        return recommender.recommend(CATEGORY, catalog, k=10)
    report = recommend(recommender, catalog, CATEGORY, LensOptions(k=10))
    return report.lens


def cold_rate(n: int) -> float:
    """Texts per second the embedded encoder embeds catalog descriptions at (first run's cost)."""
    from visuallens_app.lens.catalog import load_default_catalog
    from visuallens_app.lens.matching import item_text
    from visuallens_app.models.embedded import EmbeddedEncoder

    encoder = EmbeddedEncoder()
    base = load_default_catalog().items
    texts = [f"{item_text(base[i % len(base)])} {i}" for i in range(n)]
    start = time.perf_counter()
    encoder.encode_texts(texts)
    return n / (time.perf_counter() - start)


def _run_worker(n: int, pythonpath: Path | None, timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    here = Path(__file__).resolve().parent.parent
    paths = [str(pythonpath)] if pythonpath is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(here)])
    command = [sys.executable, "-m", "benchmarks.bench_recommend_scale", "--worker", str(n)]
    cwd = pythonpath if pythonpath is not None else here
    try:
        done = subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"candidates": n, "seconds": None, "timed_out_after_s": timeout}
    if done.returncode != 0:
        return {"candidates": n, "seconds": None, "error": done.stderr.strip().splitlines()[-1:]}
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def _baseline_tree(ref: str, into: Path) -> Path:
    """The package and benchmarks of ``ref`` (plus this benchmark), extracted into ``into``."""
    here = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(here), "archive", ref, "visuallens_app", "resources", "benchmarks"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    # The baseline runs this file's worker (the measurement), over its own package.
    (into / "benchmarks" / Path(__file__).name).write_bytes(Path(__file__).read_bytes())
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", default="1000,10000,100000")
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--baseline-candidates", default="1000,5000,10000,100000")
    parser.add_argument("--baseline-timeout", type=float, default=300.0)
    parser.add_argument("--cold", type=int, default=512, help="texts for the cold-embedding rate")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker)))
        return

    sizes = [int(s) for s in args.candidates.split(",")]
    base_sizes = [int(s) for s in args.baseline_candidates.split(",")]
    rows: dict[str, list[dict[str, Any]]] = {"current": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        tree = _baseline_tree(args.baseline_ref, Path(tmp)) if args.baseline_ref else None
        for n in sorted(set(sizes) | set(base_sizes)):
            if n in sizes:
                rows["current"].append(_run_worker(n, None, 1800.0))
                print("current ", rows["current"][-1], flush=True)
            if tree is not None and n in base_sizes:
                rows["baseline"].append(_run_worker(n, tree, args.baseline_timeout))
                print("baseline", rows["baseline"][-1], flush=True)
    rate = cold_rate(args.cold) if args.cold else None

    def seconds(kind: str, n: int) -> float | None:
        return next((r["seconds"] for r in rows[kind] if r["candidates"] == n), None)

    table = []
    for n in sorted(set(sizes) | set(base_sizes)):
        now, before = seconds("current", n), seconds("baseline", n)
        timeout = next(
            (r.get("timed_out_after_s") for r in rows["baseline"] if r["candidates"] == n), None
        )
        table.append(
            {
                "candidates": n,
                "current_s": now,
                "baseline_s": before,
                "baseline_timed_out_after_s": timeout,
                "speedup": round(before / now, 1) if now and before else None,
                "speedup_at_least": round(timeout / now, 1) if now and timeout else None,
            }
        )
    print(f"{'candidates':>10}  {'current s':>10}  {'baseline s':>11}  ratio")
    for row in table:
        before = (
            f"{row['baseline_s']:.2f}"
            if row["baseline_s"] is not None
            else (f"> {row['baseline_timed_out_after_s']:.0f}" if row["speedup_at_least"] else "-")
        )
        now = f"{row['current_s']:.2f}" if row["current_s"] is not None else "-"
        ratio = (
            f"{row['speedup']}x"
            if row["speedup"]
            else (f">= {row['speedup_at_least']}x" if row["speedup_at_least"] else "")
        )
        print(f"{row['candidates']:>10}  {now:>10}  {before:>11}  {ratio}")
    if rate is not None:
        print(f"cold: the embedded encoder embeds {rate:.0f} catalog descriptions/s (once)")
    result = {
        "table": table,
        "runs": rows,
        "baseline_ref": args.baseline_ref,
        "photos": PHOTOS,
        "cold_texts_per_s": round(rate, 1) if rate else None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
