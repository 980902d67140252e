"""What a category is ranked by when the user's photos say little about it.

In a small library most categories have no photo that relates to them (a dozen everyday photos
and fourteen categories), and their candidates' personal scores are near-ties that any photo
added or removed reorders: the top coffee-shop, hotel and bakery picks all changed when one
coffee photo left a 12-photo history (issue 10). So a ranking mixes two things:

- the catalog's own **prior**, which no photo moves: the items' ratings where the catalog has
  them, else how typical each item is of its category (its closeness to the category
  prototype, the same vector retrieval uses);
- the **personal** ranking of the pipeline, built only from the photos that relate to the
  category (:func:`speaking_photos`), and counted by how strongly they relate
  (:func:`evidence_strength`, :func:`personal_share`).

A photo relates to the category when it relates to at least one of its items by the encoder's
evidence floor (:func:`~visuallens_app.lens.explain.photo_relatedness`), the same test that
decides whether a photo is shown as evidence, so a ranking the photos decide is also a ranking
with photos behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.history import standardise
from visuallens_app.lens.matching import ItemVectors

#: Evidence strength (summed standard deviations above the floor, see
#: :func:`evidence_strength`) at which the photos and the prior count the same. One photo a
#: full standard deviation above the floor for some item is where a relation stops being
#: borderline: 0.5% of unrelated photo-item pairs reach the floor, far fewer pass it by one.
HALF_STRENGTH = 1.0

#: How far a photo's best item must pass the evidence floor for the photo to speak for the
#: category: a category has some thirty items, and the best of them passes the floor by chance.
#: On ``benchmarks.evidence_floor``'s pairs (14 sample photos x 14 categories), the best
#: *unrelated* item of a category reached the floor for 10% of photo-category pairs and passed
#: it by 0.39 for 5% (by 1.14 for 1%); related ones pass it by up to 3.
CATEGORY_MARGIN = 0.4

#: With ratings, how much the typicality of an item breaks ties between equal ratings.
TYPICALITY_TIEBREAK = 0.1


@dataclass(frozen=True, slots=True)
class Prior:
    """The catalog's own order of one category's candidates (standardised, (m,)), and its basis.

    ``basis`` says in words what the order follows, for the note a user reads.
    """

    scores: NDArray[np.float32]
    basis: str


def catalog_prior(
    candidates: Sequence[CatalogItem], items: ItemVectors, prototype: NDArray[np.float32]
) -> Prior:
    """The order no photo moves: by rating where the catalog rates items, else by typicality.

    Typicality is the item's cosine to the category prototype (its images where it has any,
    else its text), so among cafés the most café-like one comes first. Items without a rating
    in a catalog that rates others get the mean rating.
    """
    typical = standardise(items.view() @ prototype)
    ratings = [c.rating for c in candidates]
    known = [r for r in ratings if r is not None]
    if not known or len(set(known)) < 2:
        return Prior(typical, "how typical of the category each item is")
    mean = float(np.mean(known))
    rated = np.array([mean if r is None else r for r in ratings], dtype=np.float32)
    scores = (standardise(rated) + TYPICALITY_TIEBREAK * typical).astype(np.float32)
    return Prior(scores, "the catalog's ratings")


def speaking_photos(
    relatedness: NDArray[np.float32],
    floor: float,
    readable: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """(r,) True for the photos that relate to at least one candidate (and can be read).

    ``relatedness`` is (r, m) from :func:`~visuallens_app.lens.explain.photo_relatedness`;
    ``readable`` leaves out photos the classifier could not read (never evidence either).
    """
    if relatedness.size == 0:
        return np.zeros(len(relatedness), dtype=bool)
    speaks: NDArray[np.bool_] = relatedness.max(axis=1) > floor + CATEGORY_MARGIN
    if readable is not None:
        speaks = speaks & readable
    return speaks


def _excess(
    relatedness: NDArray[np.float32],
    floor: float,
    speaks: NDArray[np.bool_],
    reliability: NDArray[np.float32] | None,
) -> NDArray[np.float32]:
    excess = np.maximum(relatedness[speaks].max(axis=1) - floor - CATEGORY_MARGIN, 0.0)
    if reliability is not None:
        excess = excess * reliability[speaks]
    out: NDArray[np.float32] = excess.astype(np.float32)
    return out


def speaking_weights(
    relevance: NDArray[np.float32] | None,
    relatedness: NDArray[np.float32],
    floor: float,
    speaks: NDArray[np.bool_],
) -> NDArray[np.float32]:
    """Per speaking photo (mean 1), how much it counts in the personal ranking.

    Its ``relevance`` to the category (the retrieval weights, None: uniform) times
    ``1 - exp(-excess)`` of its excess over the category margin: nothing at the margin, nearly
    all of its relevance one standard deviation past it. A photo barely related then weighs
    next to nothing, so leaving it out moves nothing.
    """
    excess = _excess(relatedness, floor, speaks, None)
    base = np.ones(len(excess), dtype=np.float32) if relevance is None else relevance
    weights = base * (1.0 - np.exp(-excess))
    total = float(weights.sum())
    if total <= 0:
        return np.ones(len(excess), dtype=np.float32)
    out: NDArray[np.float32] = (weights * (len(weights) / total)).astype(np.float32)
    return out


def evidence_strength(
    relatedness: NDArray[np.float32],
    floor: float,
    speaks: NDArray[np.bool_],
    reliability: NDArray[np.float32] | None = None,
) -> float:
    """How strongly the photos speak for the category: per speaking photo, how far its best
    item relation passes the floor (in standard deviations), weighed by its reliability, summed.

    Summed, not averaged: two photos of cats say more than one, and a hundred unrelated photos
    beside them take nothing away.
    """
    return float(_excess(relatedness, floor, speaks, reliability).sum())


def personal_share(strength: float, half: float = HALF_STRENGTH) -> float:
    """The share (0..1) of the ranking the photos decide: s^2 / (s^2 + half^2).

    Squared, so that a faint relation moves almost nothing (strength 0.2: 4%) while clear ones
    decide (strength 2: 80%): a weak relation of one photo must not reorder a category's
    near-ties, which is all it could do.
    """
    return strength**2 / (strength**2 + half**2) if strength > 0 else 0.0


def blend(
    prior: NDArray[np.float32], personal: NDArray[np.float32], share: float
) -> NDArray[np.float32]:
    """(m,) ``share`` of the standardised personal scores plus the rest of the prior's."""
    out: NDArray[np.float32] = ((1.0 - share) * prior + share * standardise(personal)).astype(
        np.float32
    )
    return out
