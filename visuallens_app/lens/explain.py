"""Why an item was recommended: the user's own photos that support it, and the aspects it matched.

A photo supports a candidate when it is closer to *this* candidate than to the average
candidate of the question (cosine minus the photo's mean cosine over all candidates). The raw
cosine would credit the same generic photos to every candidate; the centred one names the
photos that set this candidate apart, which is what a user reads as a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from visuallens_app.lens.history import History


@dataclass(frozen=True, slots=True)
class Evidence:
    """One supporting photo: its library id, its path, and how much it pushed the item up."""

    photo_id: int
    path: Path
    contribution: float


def photo_support(
    photo_vectors: NDArray[np.float32],
    item_view: NDArray[np.float32],
    centre: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """(r, m) centred cosine of each retrieved photo to each candidate in ``item_view``.

    ``centre`` is the mean vector of *every* candidate of the question (default: of the rows
    given). Passing it matters when ``item_view`` holds only the listed items: centring on the
    listed ones would make an item's evidence depend on how many items are shown (``-k``).
    """
    sims = photo_vectors @ item_view.T
    mean = sims.mean(axis=1, keepdims=True) if centre is None else (photo_vectors @ centre)[:, None]
    out: NDArray[np.float32] = (sims - mean).astype(np.float32)
    return out


#: A photo relates to an item when its cosine to the item, standardised over the photo's cosines
#: to the aspect vocabulary (a null set of unrelated words every encoder embeds for the lens), is
#: at least the encoder's floor. The floor is a property of the space, so an encoder that was
#: measured declares its own (``evidence_floor``); ``python -m benchmarks.evidence_floor`` on the
#: sample photos x the shipped catalog gave, for the embedded encoder: v1 -0.39, v2
#: (hub-corrected) 2.19, where 0.5% of 6,303 unrelated pairs and 38% of 81 related ones reach it
#: (AUC 0.86; the raw cosine's 0.87, the centred cosine's 0.70). Other encoders get one standard
#: deviation above the unrelated words: unmeasured, so lenient rather than silent.
DEFAULT_EVIDENCE_FLOOR = 1.0


def evidence_floor_of(encoder: object) -> float:
    """The evidence floor ``encoder`` declares, else :data:`DEFAULT_EVIDENCE_FLOOR`."""
    floor = getattr(encoder, "evidence_floor", DEFAULT_EVIDENCE_FLOOR)
    return float(floor)


#: Evidence weaker than this share of the strongest is noise, not a reason worth showing: a
#: coffee photo at +0.52 explains an espresso bar; a motorcycle at +0.006 beside it does not.
RELATIVE_FLOOR = 0.25

#: A photo closer to a candidate than to the average candidate by less than this (centred
#: cosine) is no evidence at all: better to show none than a cat photo for a café window.
PHOTO_FLOOR = 0.035  # set by eye on the sample photos: rocket +0.048 for an aviation museum


def photo_relatedness(
    photo_vectors: NDArray[np.float32],
    item_view: NDArray[np.float32],
    term_vectors: NDArray[np.float32],
) -> NDArray[np.float32]:
    """(r, m) how much each photo relates to each item, in standard deviations of the photo's
    cosines to the aspect vocabulary (compare with the encoder's evidence floor)."""
    null = photo_vectors @ term_vectors.T
    mean = null.mean(axis=1, keepdims=True)
    std = np.maximum(null.std(axis=1, keepdims=True), 1e-6)
    out: NDArray[np.float32] = ((photo_vectors @ item_view.T - mean) / std).astype(np.float32)
    return out


def relates_to_any(
    photo_vectors: NDArray[np.float32],
    item_view: NDArray[np.float32],
    term_vectors: NDArray[np.float32],
    floor: float,
    *,
    readable: NDArray[np.bool_] | None = None,
    block: int = 8192,
) -> bool:
    """Whether any photo (of the ``readable`` ones) relates to at least one item at ``floor``.

    Over every candidate, not the listed ones, so that a sentence resting on it does not depend
    on how many items are shown. A photo's relatedness is its cosine standardised by its own
    null statistics, so its best item is its best cosine: items are read in blocks of ``block``
    and no (photos x candidates) matrix is kept (100,000 candidates).
    """
    rows = photo_vectors if readable is None else photo_vectors[readable]
    if not len(rows) or not len(item_view):
        return False
    null = rows @ term_vectors.T
    mean = null.mean(axis=1)
    std = np.maximum(null.std(axis=1), 1e-6)
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    for start in range(0, len(item_view), block):
        np.maximum(best, (rows @ item_view[start : start + block].T).max(axis=1), out=best)
    return bool((((best - mean) / std) >= floor).any())


def _strong(values: NDArray[np.float32], order: NDArray[np.intp], floor: float = 0.0) -> list[int]:
    """Indices in ``order`` above ``floor`` and at least RELATIVE_FLOOR x the best value."""
    best = float(values[order[0]]) if len(order) else 0.0
    cut = max(floor, RELATIVE_FLOOR * best)
    return [int(j) for j in order if values[j] > 0 and values[j] >= cut]


def supporting_photos(
    history: History,
    retrieved: NDArray[np.int64],
    support: NDArray[np.float32],
    column: int,
    k: int = 3,
    *,
    related: NDArray[np.bool_] | None = None,
) -> tuple[Evidence, ...]:
    """Up to ``k`` retrieved photos with the largest positive support for candidate ``column``.

    Photos far weaker than the best one (:data:`RELATIVE_FLOOR`) are left out, and so are photos
    that do not relate to the item at all: ``related`` (r, m), from :func:`photo_relatedness` and
    the encoder's evidence floor, or without it photos barely closer to this candidate than to the
    average one (:data:`PHOTO_FLOOR`). A recommendation with no photo evidence says that nothing
    in the photos relates to it, never names a photo that means nothing.
    """
    col = support[:, column]
    if related is not None:
        col = np.where(related[:, column], col, 0.0).astype(np.float32)
    order = np.argsort(-col, kind="stable")
    chosen = _strong(col, order[:k], PHOTO_FLOOR if related is None else 0.0)
    return tuple(
        Evidence(
            photo_id=int(history.ids[retrieved[j]]),
            path=history.paths[int(retrieved[j])],
            contribution=round(float(col[j]), 6),
        )
        for j in chosen
    )


def matched_aspects(
    terms: Sequence[str], contributions: NDArray[np.float32] | None, row: int, k: int = 5
) -> tuple[tuple[str, float], ...]:
    """Up to ``k`` aspect words that raised candidate ``row``'s aspect score most, with shares.

    Words far weaker than the strongest (:data:`RELATIVE_FLOOR`) are left out.
    """
    if contributions is None:
        return ()
    values = contributions[row]
    order = np.argsort(-values, kind="stable")[:k]
    return tuple((terms[t], round(float(values[t]), 6)) for t in _strong(values, order))
