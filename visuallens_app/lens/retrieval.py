"""Stage 1 of VisualLens: find the history photos relevant to a category.

The paper scores every history photo by cosine to one category embedding (the mean image
embedding of the category's candidates) and keeps the top w = 64. A real photo library adds
two problems the benchmarks did not have, handled here before ranking: photos that say nothing
about taste (screenshots, documents, receipts...) and bursts of near-identical shots, which
would otherwise fill the 64 slots with one moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.history import History, encode_texts_cached
from visuallens_app.models.base import Encoder

if TYPE_CHECKING:
    from visuallens_app.lens.matching import ItemVectors

#: Prompt ensemble for a category without candidate images. Several wordings averaged (the CLIP
#: paper's prompt-ensembling trick) cancel the quirks of any one phrasing; the "inside"/"at"
#: forms pull towards what people photograph there, not the shop front.
CATEGORY_TEMPLATES = (
    "a photo of a {}",
    "a {}",
    "the inside of a {}",
    "something you would see at a {}",
)

#: What a non-preference photo looks like. Each is compared against PHOTO_PROMPTS; the best
#: match of each side decides, so one strong "receipt" match is enough to drop a photo.
JUNK_PROMPTS = (
    "a screenshot of a phone screen",
    "a screenshot of a website",
    "a screenshot of a chat conversation",
    "a scanned document",
    "a page of printed text",
    "a shopping receipt",
    "an invoice",
    "an internet meme with text",
    "a whiteboard with writing",
    "a handwritten note",
    "a QR code",
    "a barcode",
    "a presentation slide",
    "a spreadsheet",
)
PHOTO_PROMPTS = (
    "a photo of a place",
    "a photo of food",
    "a drink",
    "a photo of a person",
    "a landscape",
    "an animal",
    "a building",
    "an object",
    "a room",
    "a street",
    "a vehicle",
    "a plant",
)
# No catch-all ("an object"): it was the best photo prompt for half of all photos and beat
# every junk prompt on a real scanned page (issue 10).

#: Default margin (best junk cosine minus best photo cosine) above which a photo is dropped,
#: for encoders that do not declare their own (``junk_margin_threshold``).
DEFAULT_JUNK_THRESHOLD = 0.0
#: Cosine above which two photos count as the same shot, for encoders that do not declare
#: their own (``duplicate_cosine``): CLIP puts different shots of one scene around 0.85-0.9.
DEFAULT_DUPLICATE_THRESHOLD = 0.92
#: Classifier probability mass on document-like classes at or above which a photo is dropped
#: as a document or screenshot (:class:`~visuallens_app.models.base.PhotoSignals`): a
#: photographed page scores 0.7, every scikit-image photo at most 0.016.
DEFAULT_DOCUMENT_THRESHOLD = 0.15
#: Classifier confidence (top-class probability) at which a photo counts fully; below it a
#: photo's weight falls off linearly to :data:`MIN_RELIABILITY`. The sample photos the
#: classifier reads (cat 0.59, espresso 0.92, moped 0.61) are above it; blurred noise
#: (0.04), grass (0.06) and the deep field (0.11) are well below.
CONFIDENT = 0.25
MIN_RELIABILITY = 0.2
#: The most any one photo may weigh in a profile, as a share of all retrieved photos' weight
#: (never below twice the uniform share, so a 4-photo profile can still lean on its best).
MAX_PHOTO_SHARE = 0.2
#: How sharply relevance weights follow the standardised prototype cosines (softmax inverse
#: temperature): 1 where retrieval chooses among the photos, 2 in a library of at most
#: SMALL_LIBRARY photos (the paper's w: retrieval keeps them all), where the weights choose.
#: On the probability-photo benchmark 2 everywhere cost 17 MRR points on 101-300-photo
#: histories and changed nothing on 10-30-photo ones; on the 12 sample photos it stopped a
#: blurred-noise image from changing two categories' top recommendation.
RELEVANCE_SHARPNESS = 1.0
SMALL_LIBRARY_SHARPNESS = 2.0
SMALL_LIBRARY = 64


def space_thresholds(encoder: Encoder) -> tuple[float, float]:
    """(junk margin, duplicate cosine) thresholds for ``encoder``'s space.

    Both depend on the space: the embedded encoder's hub correction moved its margins, and
    in its ConSE space a cosine cannot tell a copy from another photo of the same kind, so it
    declares its own (``junk_margin_threshold``, ``duplicate_cosine``); other encoders get
    the defaults.
    """
    junk = getattr(encoder, "junk_margin_threshold", DEFAULT_JUNK_THRESHOLD)
    duplicate = getattr(encoder, "duplicate_cosine", DEFAULT_DUPLICATE_THRESHOLD)
    return float(junk), float(duplicate)


def photo_reliability(history: History) -> NDArray[np.float32]:
    """Per photo, how far its vector can be trusted (MIN_RELIABILITY..1; 1 where unknown).

    A photo the classifier is unsure about is an average of many class names, close to every
    prompt (a hub); it still counts, but less.
    """
    confidence = history.confidence
    known = np.isfinite(confidence)
    scaled = np.clip(np.where(known, confidence, CONFIDENT) / CONFIDENT, 0.0, 1.0)
    out: NDArray[np.float32] = (MIN_RELIABILITY + (1 - MIN_RELIABILITY) * scaled).astype(np.float32)
    return out


def document_like(
    history: History, threshold: float = DEFAULT_DOCUMENT_THRESHOLD
) -> NDArray[np.bool_]:
    """True for photos whose classifier puts ``threshold`` or more mass on document classes."""
    flagged: NDArray[np.bool_] = np.isfinite(history.document) & (history.document >= threshold)
    return flagged


def cap_shares(
    weights: NDArray[np.float32], max_share: float = MAX_PHOTO_SHARE
) -> NDArray[np.float32]:
    """``weights`` (mean 1) with no entry above ``max_share`` of the total, mean kept at 1.

    The cap is never below twice the uniform share; what a capped photo loses goes to the
    others in proportion to their weights (repeated until nothing exceeds the cap).
    """
    n = len(weights)
    if n == 0:
        return weights
    cap = max(max_share, 2.0 / n) * n  # in units of the mean
    out = np.asarray(weights, dtype=np.float64).copy()
    for _ in range(n):
        over = out > cap + 1e-9
        if not over.any():
            break
        excess = float((out[over] - cap).sum())
        out[over] = cap
        free = ~over & (out < cap)
        if not free.any():
            break
        out[free] += excess * out[free] / max(float(out[free].sum()), 1e-12)
    result: NDArray[np.float32] = (out * (n / max(float(out.sum()), 1e-12))).astype(np.float32)
    return result


def category_prototype(
    candidates: Sequence[CatalogItem],
    encoder: Encoder,
    item_vectors: ItemVectors | None = None,
    *,
    category: str | None = None,
    db: Any | None = None,
) -> NDArray[np.float32]:
    """The category's embedding v_c (unit vector), against which history photos are ranked.

    Where candidates have images this is the paper's choice: the mean of the items' image
    embeddings (each item's images averaged first, so an item with 30 photos does not outvote
    one with 2). Where none has images it averages two text views with equal weight: a prompt
    ensemble for the category name (what such a place generally looks like) and the items'
    own text embeddings (what *these* candidates are about, e.g. latte art, pastries).

    Parameters
    ----------
    candidates
        The category's catalog items; their ``category`` is used when ``category`` is None.
    encoder
        The active encoder (for the prompts and, without ``item_vectors``, the items).
    item_vectors
        Precomputed item embeddings (:func:`visuallens_app.lens.matching.embed_items`).
    category
        The category's name for the prompts.
    db
        The store's database, to cache text embeddings.
    """
    from visuallens_app.lens.matching import embed_items

    if not candidates and not category:
        raise ValueError("a prototype needs candidates or a category name")
    vectors = (
        item_vectors
        if item_vectors is not None or not candidates
        else embed_items(candidates, encoder, db=db)
    )
    if vectors is not None and vectors.has_image.any():
        proto = vectors.image[vectors.has_image].mean(axis=0)
    else:
        name = category or candidates[0].category
        prompts = encode_texts_cached(encoder, [t.format(name) for t in CATEGORY_TEMPLATES], db)
        proto = _unit(prompts.mean(axis=0))
        if vectors is not None and len(vectors):
            proto = proto + _unit(vectors.text.mean(axis=0))
    return _unit(proto)


def junk_margin(history: History, encoder: Encoder, db: Any | None = None) -> NDArray[np.float32]:
    """Per photo: best cosine to a non-preference prompt minus best cosine to a photo prompt.

    Where the encoder's classifier saw a document (:func:`document_like`), the margin is
    raised to at least 1, so a photographed page is dropped even where the prompts miss it.
    """
    junk = encode_texts_cached(encoder, JUNK_PROMPTS, db)
    good = encode_texts_cached(encoder, PHOTO_PROMPTS, db)
    if len(history) == 0:
        return np.zeros(0, dtype=np.float32)
    margin = (history.vectors @ junk.T).max(axis=1) - (history.vectors @ good.T).max(axis=1)
    margin = np.where(document_like(history), np.maximum(margin, 1.0), margin)
    out: NDArray[np.float32] = margin.astype(np.float32)
    return out


def filter_non_preference(
    history: History,
    encoder: Encoder,
    threshold: float | None = None,
    *,
    db: Any | None = None,
    margin: NDArray[np.float32] | None = None,
) -> NDArray[np.bool_]:
    """Mask of photos to keep: False for screenshots, documents, receipts, memes, QR codes...

    Zero-shot, so it works with any encoder and needs no labels; ``threshold`` trades recall of
    junk for safety of real photos (raise it to drop less; None: the encoder's own).
    ``margin`` reuses a precomputed
    :func:`junk_margin` (the Recommender computes it once per library).
    """
    scores = junk_margin(history, encoder, db) if margin is None else margin
    if threshold is None:
        threshold = space_thresholds(encoder)[0]
    keep: NDArray[np.bool_] = scores <= threshold
    return keep


def collapse_near_duplicates(
    history: History,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    time_window: float | None = None,
    *,
    order: Sequence[int] | NDArray[np.integer[Any]] | None = None,
    block: int = 2048,
) -> NDArray[np.int64]:
    """Representatives of groups of near-identical photos, in ``order`` (default: history order).

    Two photos are duplicates when their cosine exceeds ``threshold`` and, with ``time_window``
    (seconds), when they were taken within that window (photos without a capture time only
    need the cosine). Going through ``order`` a kept photo absorbs every later duplicate of it,
    so passing a ranking keeps the best-ranked shot of each burst.

    Pairs are found blockwise (``block`` rows at a time), so memory stays O(block x n); on the
    retrieval path this only ever sees a few hundred photos.
    """
    idx = (
        np.arange(len(history), dtype=np.int64)
        if order is None
        else np.asarray(order, dtype=np.int64)
    )
    m = len(idx)
    if m < 2:
        return idx.copy()
    vectors = history.vectors[idx]
    times = _seconds(history.taken_at, idx) if time_window is not None else None
    pairs: list[tuple[NDArray[np.intp], NDArray[np.intp]]] = []
    for start in range(0, m, block):
        sims = vectors[start : start + block] @ vectors[start:].T
        # Only pairs (earlier, later): the leader pass below never looks backwards.
        close = np.triu(sims > threshold, k=1)
        if times is not None:
            dt = np.abs(times[start : start + block, None] - times[None, start:])
            # NaN (unknown time) compares False, so unknown-time pairs rely on the cosine alone.
            close &= ~(dt > time_window)
        rows, cols = np.nonzero(close)
        pairs.append((rows + start, cols + start))
    removed = np.zeros(m, dtype=bool)
    # Duplicates are rare, so this loop runs over a handful of pairs, not over m photos.
    for r, c in zip(
        np.concatenate([p[0] for p in pairs]).tolist(),
        np.concatenate([p[1] for p in pairs]).tolist(),
        strict=True,
    ):
        if not removed[r]:
            removed[c] = True
    return idx[~removed]


def retrieve(
    history: History,
    prototype: NDArray[np.float32],
    w: int = 64,
    *,
    keep: NDArray[np.bool_] | None = None,
    duplicate_threshold: float | None = DEFAULT_DUPLICATE_THRESHOLD,
    time_window: float | None = None,
    scores: NDArray[np.float32] | None = None,
) -> NDArray[np.int64]:
    """Up to ``w`` history indices, best first, by cosine to ``prototype``.

    Parameters
    ----------
    keep
        Mask from :func:`filter_non_preference`; False rows are never retrieved.
    duplicate_threshold
        Collapse near-duplicates among the ranked photos (None: don't).
    scores
        Rank by these instead of the prototype cosine (refinement passes its mixed score).
    """
    s = history.vectors @ prototype if scores is None else np.asarray(scores, np.float32)
    pool = np.flatnonzero(keep) if keep is not None else np.arange(len(history))
    if len(pool) == 0 or w <= 0:
        return np.zeros(0, dtype=np.int64)
    pool_scores = s[pool]
    # Over-fetch so that collapsing bursts still leaves w distinct photos, doubling while it
    # does not: the pairwise check costs fetch^2, so start small rather than at a fixed 4w.
    fetch = min(len(pool), w if duplicate_threshold is None else 2 * w)
    while True:
        if fetch < len(pool):
            top = np.argpartition(-pool_scores, fetch - 1)[:fetch]
        else:
            top = np.arange(len(pool))
        ranked = pool[top[np.argsort(-pool_scores[top], kind="stable")]].astype(np.int64)
        if duplicate_threshold is None:
            break
        ranked = collapse_near_duplicates(history, duplicate_threshold, time_window, order=ranked)
        if len(ranked) >= w or fetch >= len(pool):
            break
        fetch = min(len(pool), 2 * fetch)
    return ranked[:w]


def retrieval_size(scores: NDArray[np.floating[Any]], w: int, w_max: int | None = None) -> int:
    """How many photos to retrieve: those on the category side of the scores' natural split.

    The paper's fixed w = 64 suits its libraries, where the asked category is a minority; when
    most of a library is about the category, a fixed w drops relevant photos and the profile
    is read from a sample instead of the whole. The split is Otsu's threshold on the cosines
    (the cut that maximises the variance between the two sides, parameter-free), and the
    count is clamped to ``[w, w_max]``: never fewer photos than the paper keeps, and a bounded
    cost on a large library where the split is not sharp.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = len(values)
    upper = n if w_max is None else max(w, w_max)
    if n <= w or w <= 0:
        return max(0, min(n, w))
    above = np.arange(1, n, dtype=np.float64)
    totals = np.cumsum(values)
    mean_above = totals[:-1] / above
    mean_below = (totals[-1] - totals[:-1]) / (n - above)
    between = above * (n - above) * (mean_above - mean_below) ** 2
    split = int(np.argmax(between)) + 1
    return int(min(max(split, w), upper, n))


def relevance_weights(
    history: History,
    retrieved: NDArray[np.int64],
    prototype: NDArray[np.float32],
    keep: NDArray[np.bool_] | None = None,
    *,
    scores: NDArray[np.float32] | None = None,
    reliability: NDArray[np.float32] | None = None,
    max_share: float | None = None,
) -> NDArray[np.float32]:
    """Per retrieved photo, how strongly it speaks for the category (mean 1).

    A softmax of the photos' prototype cosines, standardised over the (kept) library. With a
    library larger than w this is a mild emphasis on the clearest photos; with a small one,
    where "top 64" is every photo, it is what stops the cat from counting as much as the cup
    of coffee in a coffee-shop profile. ``reliability`` (:func:`photo_reliability`, history
    aligned) scales each photo down where the classifier was unsure; ``max_share``
    (:func:`cap_shares`) stops one photo from becoming the whole profile, which with few
    photos the softmax alone allowed (40-60% for the top photo of a 12-photo library).
    """
    if len(retrieved) == 0:
        return np.zeros(0, dtype=np.float32)
    if scores is None:
        scores = history.vectors @ prototype
    pool = scores[keep] if keep is not None and keep.any() else scores
    std = float(pool.std())
    z = (scores[retrieved] - float(pool.mean())) / (std if std > 1e-8 else 1.0)
    small = len(pool) <= SMALL_LIBRARY
    sharpness = SMALL_LIBRARY_SHARPNESS if small else RELEVANCE_SHARPNESS
    e = np.exp(sharpness * (z - z.max()))
    if reliability is not None:
        e = e * reliability[retrieved]
    out: NDArray[np.float32] = (e * (len(e) / max(float(e.sum()), 1e-30))).astype(np.float32)
    if max_share is not None:
        out = cap_shares(out, max_share)
    return out


def _unit(v: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    n = float(np.linalg.norm(v))
    return (np.asarray(v) / max(n, 1e-12)).astype(np.float32)


def _seconds(taken_at: Sequence[str | None], idx: NDArray[np.int64]) -> NDArray[np.float64]:
    """Capture times as POSIX seconds (NaN where unknown or unparsable)."""
    out = np.full(len(idx), np.nan)
    for k, i in enumerate(idx):
        text = taken_at[int(i)]
        if not text:
            continue
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            continue
        # Naive EXIF times are local wall-clock; comparing them with each other is still right.
        out[k] = stamp.timestamp()
    return out
