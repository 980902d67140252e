"""Recall of an approximate search against exact search, and the nprobe calibration built on it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app.jobs import CancelToken

logger = logging.getLogger(__name__)

#: Search results: per query, (photo id, cosine) pairs, best first.
SearchResults = list[list[tuple[int, float]]]

_CALIBRATION_QUERIES = 256
_CALIBRATION_K = 10


def recall_at_k(approx: SearchResults, exact: SearchResults, k: int) -> float:
    """Mean fraction of each query's true top-``k`` ids that ``approx`` also returned in its top-k.

    Queries whose exact list is empty are skipped; with none left the recall is 1.0.
    """
    fractions: list[float] = []
    for approx_row, exact_row in zip(approx, exact, strict=True):
        truth = {photo_id for photo_id, _ in exact_row[:k]}
        if truth:
            found = {photo_id for photo_id, _ in approx_row[:k]}
            fractions.append(len(truth & found) / len(truth))
    return float(np.mean(fractions)) if fractions else 1.0


def check_cancel(cancel: CancelToken | None) -> None:
    """Block while paused and raise Cancelled once cancelled (no-op without a token)."""
    if cancel is not None:
        cancel.check()


def _nprobe_candidates(nlist: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... up to ``nlist``: doubling, with a midpoint for finer choice."""
    candidates: set[int] = set()
    power = 1
    while power <= nlist:
        candidates.update({power, min(nlist, power * 3 // 2)})
        power *= 2
    candidates.add(nlist)
    return sorted(c for c in candidates if 1 <= c <= nlist)


def calibrate_nprobe(
    index: Any,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    *,
    target_recall: float,
    calibration_queries: NDArray[np.float32] | None,
    rng: np.random.Generator,
    cancel: CancelToken | None,
) -> tuple[int, float]:
    """The smallest ``nprobe`` whose recall@10 against brute force reaches ``target_recall``."""
    import faiss

    k = _CALIBRATION_K
    if calibration_queries is not None:
        queries = np.ascontiguousarray(calibration_queries, dtype=np.float32).reshape(-1, index.d)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        queries = queries.astype(np.float32)
        self_ids = np.full(len(queries), -1, dtype=np.int64)
    else:
        # Leave-one-out: an indexed vector stands for a query from the same distribution, and its
        # own id is dropped from both result lists (finding itself would inflate the recall).
        rows = rng.choice(len(ids), size=min(len(ids), _CALIBRATION_QUERIES), replace=False)
        queries = vectors[rows]
        self_ids = ids[rows]
    check_cancel(cancel)
    exact_scores, exact_rows = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    exact = _drop_self(ids[exact_rows], exact_scores, self_ids, k)
    best = (int(index.nlist), 0.0)
    for nprobe in _nprobe_candidates(int(index.nlist)):
        check_cancel(cancel)
        index.nprobe = nprobe
        scores, labels = index.search(queries, k + 1)
        recall = recall_at_k(_drop_self(labels, scores, self_ids, k), exact, k)
        if recall >= target_recall:
            return nprobe, recall
        best = (nprobe, recall)
    logger.warning("IVF calibration reached recall %.3f only (target %.3f)", best[1], target_recall)
    return best


def _drop_self(
    labels: NDArray[np.int64], scores: NDArray[np.float32], self_ids: NDArray[np.int64], k: int
) -> SearchResults:
    rows: SearchResults = []
    for row_ids, row_scores, own in zip(
        labels.tolist(), scores.tolist(), self_ids.tolist(), strict=True
    ):
        hits = [(i, s) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0 and i != own]
        rows.append(hits[:k])
    return rows
