"""Iterative aspect refinement, without the paper's 70B LLM.

The paper keeps, over about four rounds, only the aspect words that help predict the ground
truth. With no labels at recommendation time, two signals are available: *frequency*, how
often an aspect occurs among the category-relevant photos beyond chance ("latte art" in many of
them), and *contrast*, how much more often it occurs there than in the rest of the library (one
that occurs everywhere, "outdoor", says nothing). Contrast alone fails when most of the library
is about the category, since then every category word is equally common everywhere; frequency
alone cannot tell a café word from a word that is common in all photos. Each round weights
aspects by frequency scaled by contrast (:func:`aspect_strength`), re-scores the library with
prototype cosine + weighted aspect profile, re-retrieves, and stops when the retrieved set no
longer changes. With a labelled train split, :func:`fit_aspect_weights` learns
per-term multipliers instead of trusting contrast alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from visuallens_app.lens.aspects import LibraryAspects
from visuallens_app.lens.history import History, standardise
from visuallens_app.lens.retrieval import relevance_weights, retrieve

#: Pseudo-photos of library rate mixed into the retrieved and the rest's rates: an aspect seen
#: on one photo of 64 is not yet evidence of anything, nor is a rest of three photos.
LIFT_SMOOTHING = 2.0
#: Aspects kept in a profile; the long tail of tiny weights is noise.
PROFILE_TERMS = 24
#: Retrieved photos a profile word should occur in (among their top aspects): one photo alone
#: supplied every word of a small library's profile (issue 10). Where some word has that
#: support, a word with less counts only UNSUPPORTED_SHARE of its weight.
MIN_SUPPORT = 2
UNSUPPORTED_SHARE = 0.25


def aspect_strength(
    retrieved_counts: NDArray[np.float64],
    rest_counts: NDArray[np.float64],
    n_retrieved: float,
    n_rest: float,
    *,
    chance: float = 0.0,
    smoothing: float = LIFT_SMOOTHING,
    max_terms: int = PROFILE_TERMS,
) -> NDArray[np.float32]:
    """Per-term weights: frequency above chance among the retrieved photos, scaled by lift.

    Lift alone (the contrast with the rest of the library) says whether a term belongs to the
    category, not whether the user prefers it: when most of the library is about the category,
    the user's favourite dish and every other dish are equally "category" and equally lifted
    (lift near 0 for all), and only their frequency tells them apart. So the weight is the
    term's rate among the retrieved photos above ``chance`` (the rate at which any term is among
    a photo's top aspects at random: k / V), times ``2 * sigmoid(lift)``, a bounded (x0 to x2)
    correction that favours terms specific to these photos. Both rates in the lift are shrunk
    towards the library rate, so when few photos are left out (the retrieved set is nearly the
    library) lift is near 0 and frequency decides. Terms absent from the retrieved photos get
    nothing; only the ``max_terms`` largest are kept; weights sum to 1 (or are all zero).
    """
    p_lib = (retrieved_counts + rest_counts + 0.5) / (n_retrieved + n_rest + 1.0)
    p_ret = (retrieved_counts + smoothing * p_lib) / (n_retrieved + smoothing)
    p_rest = (rest_counts + smoothing * p_lib) / (n_rest + smoothing)
    p_ret = np.clip(p_ret, 1e-6, 1 - 1e-6)
    p_rest = np.clip(p_rest, 1e-6, 1 - 1e-6)
    lift = np.log(p_ret / (1 - p_ret)) - np.log(p_rest / (1 - p_rest))
    excess = np.maximum(retrieved_counts / max(n_retrieved, 1e-12) - chance, 0.0)
    weights = np.where(retrieved_counts > 0, excess * 2.0 / (1.0 + np.exp(-lift)), 0.0)
    if max_terms < len(weights) and np.count_nonzero(weights) > max_terms:
        cut = np.partition(weights, len(weights) - max_terms)[len(weights) - max_terms]
        weights = np.where(weights >= cut, weights, 0.0)
    total = float(weights.sum())
    return (weights / total if total > 0 else weights).astype(np.float32)


def profile_weights(
    aspects: LibraryAspects,
    retrieved: NDArray[np.int64],
    *,
    photo_weights: NDArray[np.float32] | None = None,
    term_prior: NDArray[np.float32] | None = None,
    keep: NDArray[np.bool_] | None = None,
    min_support: int = 1,
) -> NDArray[np.float32]:
    """The aspect profile (V,) of the photos at ``retrieved`` against the rest of the library.

    ``photo_weights`` (mean 1, e.g. :func:`~visuallens_app.lens.retrieval.relevance_weights`)
    make a clearly relevant photo's aspects count more than a marginal one's. ``keep`` (the
    non-preference filter's mask) leaves screenshots and documents out of "the rest" too, so
    they cannot make a term look specific. With ``min_support`` > 1 a term found in fewer
    retrieved photos (of those weighing at least the mean, with ``photo_weights``) counts
    :data:`UNSUPPORTED_SHARE` of its weight, where any term has that support (otherwise one
    photo is all there is to read, and counts fully).
    """
    rest = np.ones(len(aspects), dtype=bool) if keep is None else keep.copy()
    rest[retrieved] = False
    rest_rows = np.flatnonzero(rest)
    counts = aspects.counts(retrieved, photo_weights)
    if min_support > 1:
        # Support is counted among the photos that speak for the category at least as much
        # as the average retrieved one: two marginal photos sharing "harness" are no reason.
        relevant = (
            retrieved[np.asarray(photo_weights) >= 1.0 - 1e-6]
            if photo_weights is not None
            else retrieved
        )
        support = aspects.counts(relevant)
        supported = support >= min_support - 1e-9
        if supported.any():
            counts = np.where(supported, counts, UNSUPPORTED_SHARE * counts)
    weights = aspect_strength(
        counts,
        aspects.counts(rest_rows),
        float(len(retrieved)),
        float(len(rest_rows)),
        chance=aspects.top_terms.shape[1] / len(aspects.space),
    )
    if term_prior is not None:
        weights = weights * term_prior
        total = float(weights.sum())
        weights = weights / total if total > 0 else weights
    return weights.astype(np.float32, copy=False)


@dataclass(frozen=True, eq=False)
class Refinement:
    """The outcome of refinement: the final retrieval, its aspect profile, how it got there."""

    retrieved: NDArray[np.int64]  # history indices, best first
    weights: NDArray[np.float32]  # (V,) aspect profile of ``retrieved``
    rounds: int  # re-scoring rounds actually run
    converged: bool  # True when the retrieved set stopped changing before the cap


def refine_retrieval(
    history: History,
    aspects: LibraryAspects,
    prototype: NDArray[np.float32],
    initial: NDArray[np.int64],
    *,
    w: int = 64,
    rounds: int = 4,
    mix: float = 0.5,
    keep: NDArray[np.bool_] | None = None,
    duplicate_threshold: float | None = None,
    time_window: float | None = None,
    term_prior: NDArray[np.float32] | None = None,
    reliability: NDArray[np.float32] | None = None,
    max_share: float | None = None,
    min_support: int = 1,
) -> Refinement:
    """Alternate aspect weighting and re-retrieval until the retrieved set is stable.

    Parameters
    ----------
    initial
        The prototype-only retrieval to start from.
    rounds
        Cap on re-scoring rounds (the paper used about four).
    mix
        Share of the standardised aspect-profile score in the ranking score; the rest is the
        standardised prototype cosine, which anchors retrieval to the category.
    keep, duplicate_threshold, time_window
        As in :func:`~visuallens_app.lens.retrieval.retrieve`.
    term_prior
        Learned per-term multipliers (:func:`fit_aspect_weights`), or None.
    reliability, max_share
        As in :func:`~visuallens_app.lens.retrieval.relevance_weights`.
    min_support
        As in :func:`profile_weights`.
    """
    cosine = history.vectors @ prototype
    base = standardise(cosine)
    retrieved = np.asarray(initial, dtype=np.int64)

    def profile_of(rows: NDArray[np.int64]) -> NDArray[np.float32]:
        relevance = relevance_weights(
            history,
            rows,
            prototype,
            keep,
            scores=cosine,
            reliability=reliability,
            max_share=max_share,
        )
        return profile_weights(
            aspects,
            rows,
            photo_weights=relevance,
            term_prior=term_prior,
            keep=keep,
            min_support=min_support,
        )

    weights = profile_of(retrieved)
    done = 0
    converged = False
    for _ in range(max(0, rounds)):
        if not weights.any():
            converged = True
            break
        query, offset = aspects.space.linear_query(weights)
        aspect_score = standardise(history.vectors @ query - offset)
        scores = (1.0 - mix) * base + mix * aspect_score
        new = retrieve(
            history,
            prototype,
            w,
            keep=keep,
            duplicate_threshold=duplicate_threshold,
            time_window=time_window,
            scores=scores,
        )
        done += 1
        same = set(new.tolist()) == set(retrieved.tolist())
        retrieved = new
        weights = profile_of(retrieved)
        if same:
            converged = True
            break
    return Refinement(retrieved, weights, done, converged)


# -- learning term weights from a labelled split -----------------------------------------------


@dataclass(frozen=True, eq=False)
class AspectExample:
    """One labelled question, reduced to what aspect weighting needs.

    ``profile`` is the user's aspect profile (V,) from :func:`profile_weights`; ``candidates``
    (m, V) is each candidate's affinity to each term, centred across the candidates
    (:func:`visuallens_app.lens.matching.candidate_term_affinity`); ``positives`` (m,) marks the
    ground truth.
    """

    profile: NDArray[np.float32]
    candidates: NDArray[np.float32]
    positives: NDArray[np.bool_]


def fit_aspect_weights(
    examples: Sequence[AspectExample],
    terms: Sequence[str],
    *,
    l2: float = 1.0,
    steps: int = 300,
    learning_rate: float = 0.05,
) -> dict[str, float]:
    """Learn per-term multipliers exp(theta_t) that make aspect matching rank the truth first.

    A listwise (softmax over each question's candidates) logistic regression: the candidate
    score is ``sum_t profile_t * exp(theta_t) * affinity_ct`` and the loss is the negative log
    probability of the ground-truth candidates, plus ``l2 * |theta|^2`` so that terms without
    evidence keep multiplier 1. Plain numpy with Adam; a few seconds for thousands of questions.

    Returns
    -------
    dict
        term -> multiplier, for :attr:`~visuallens_app.lens.pipeline.LensConfig.term_weights`.
    """
    usable = [e for e in examples if e.positives.any() and len(e.positives) > 1]
    n_terms = len(terms)
    theta = np.zeros(n_terms, dtype=np.float64)
    if not usable:
        return dict.fromkeys(terms, 1.0)
    moment = np.zeros_like(theta)
    velocity = np.zeros_like(theta)
    for step in range(1, steps + 1):
        grad = 2.0 * l2 * theta / len(usable)
        scale = np.exp(theta)
        for example in usable:
            feats = example.candidates.astype(np.float64) * example.profile[None, :]  # (m, V)
            logits = feats @ scale
            logits -= logits.max()
            prob = np.exp(logits)
            prob /= prob.sum()
            target = example.positives.astype(np.float64)
            target /= target.sum()
            # d(-sum target*log prob)/d logits = prob - target, chained through exp(theta).
            grad += ((prob - target) @ feats) * scale / len(usable)
        moment = 0.9 * moment + 0.1 * grad
        velocity = 0.999 * velocity + 0.001 * grad * grad
        m_hat = moment / (1 - 0.9**step)
        v_hat = velocity / (1 - 0.999**step)
        theta -= learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
    return {t: float(np.exp(v)) for t, v in zip(terms, theta, strict=True)}


def term_prior_vector(
    term_weights: Mapping[str, float] | None, terms: Sequence[str]
) -> NDArray[np.float32] | None:
    """Learned multipliers aligned with ``terms`` (1 for terms the training never saw)."""
    if not term_weights:
        return None
    return np.array([float(term_weights.get(t, 1.0)) for t in terms], dtype=np.float32)
