"""VisualLens end to end: retrieval -> aspects -> refinement -> matching -> explanations.

:func:`recommend` is the pure function the evaluation harness calls per question (history,
candidates, category in; ranked, explained recommendations out). :class:`Recommender` wraps it
for the GUI and the CLI: it holds the encoder and the store, and keeps everything that depends
only on the library or the catalog (history matrix, junk scores, per-photo aspects, item
vectors) in memory between questions, so a recommendation over 10,000 photos is milliseconds.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import CatalogError, NotEnoughHistoryError
from visuallens_app.jobs import CancelToken, Job, run_to_end
from visuallens_app.lens.aspects import (
    AspectSpace,
    Captioner,
    LibraryAspects,
    Vocabulary,
    history_captions,
    library_aspects,
)
from visuallens_app.lens.catalog import Catalog, CatalogItem
from visuallens_app.lens.explain import (
    DEFAULT_EVIDENCE_FLOOR,
    Evidence,
    evidence_floor_of,
    matched_aspects,
    photo_relatedness,
    photo_support,
    relates_to_any,
    supporting_photos,
)
from visuallens_app.lens.history import History
from visuallens_app.lens.matching import (
    ItemVectors,
    MatchComponents,
    MatchExample,
    MatchWeights,
    candidate_term_affinity,
    embed_items,
    items_words,
    match_components,
    shipped_match_weights,
)
from visuallens_app.lens.prior import (
    Prior,
    blend,
    catalog_prior,
    evidence_strength,
    personal_share,
    speaking_photos,
    speaking_weights,
)
from visuallens_app.lens.refine import (
    MIN_SUPPORT,
    AspectExample,
    profile_weights,
    refine_retrieval,
    term_prior_vector,
)
from visuallens_app.lens.retrieval import (
    MAX_PHOTO_SHARE,
    SMALL_LIBRARY,
    category_prototype,
    collapse_near_duplicates,
    junk_margin,
    photo_reliability,
    relevance_weights,
    retrieval_size,
    retrieve,
    space_thresholds,
)
from visuallens_app.models.base import Encoder

if TYPE_CHECKING:
    from visuallens_app.library.store import PhotoStore

#: Below this many photos there is no preference to read; the paper drops users with < 10.
MIN_HISTORY = 3
#: Photos below this reliability (classifier confidence under about 0.09) are never shown as
#: evidence: the classifier could not say what is in them.
READABLE = 0.5
#: Captions are written for the photos that make the profile grid (8x8 tiles), best first.
CAPTIONED_PHOTOS = 64

_blas_controller: list[Any] = []


def _single_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Run the lens's matrix work on one BLAS thread.

    Its matrices are small (at most library x 384), where OpenBLAS's thread hand-off costs more
    than it saves, and badly so on a busy 2-core machine where torch and the GUI also run:
    benchmarks/bench_recommend.py measured 295 ms per question with default threads under load
    against 45 ms with one. threadpoolctl (installed with scikit-learn) does this per call
    without touching the encoder's threads; without it, nothing changes.
    """
    try:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    if not _blas_controller:
        _blas_controller.append(ThreadpoolController())
    limited: contextlib.AbstractContextManager[Any] = _blas_controller[0].limit(
        limits=1, user_api="blas"
    )
    return limited


@dataclass(frozen=True)
class LensConfig:
    """Switches and knobs of one recommendation (the evaluation harness's ablations).

    ``use_retrieval=False`` is the paper's "no retrieval" baseline (the whole history is the
    profile); :meth:`retrieval_only` is "retrieval + profile matching", everything else off.

    ``w`` is the paper's retrieval size; with ``adaptive_w`` it is a floor and retrieval keeps
    every photo on the category side of the cosines' split
    (:func:`~visuallens_app.lens.retrieval.retrieval_size`), up to ``w_max``.

    ``junk_threshold`` None and ``duplicate_threshold`` "auto" take the encoder's own
    (:func:`~visuallens_app.lens.retrieval.space_thresholds`). ``use_reliability`` weighs
    photos the classifier was unsure of less; ``max_photo_share`` caps one photo's share of
    the profile; ``min_support`` is how many retrieved photos a profile word needs.
    ``weights`` default to the shipped fitted ones (``resources/lens/match_weights.json``).
    ``use_prior`` matches only the photos that relate to the category and mixes in the
    catalog's own order as far as they say little (:mod:`visuallens_app.lens.prior`).
    """

    w: int = 64
    adaptive_w: bool = True
    w_max: int = 256
    use_retrieval: bool = True
    use_filter: bool = True
    use_aspects: bool = True
    use_refinement: bool = True
    use_evidence: bool = True
    refine_rounds: int = 4
    junk_threshold: float | None = None
    duplicate_threshold: float | Literal["auto"] | None = "auto"
    time_window: float | None = None  # seconds; None: duplicates by cosine alone
    refine_mix: float = 0.5
    use_reliability: bool = True
    max_photo_share: float | None = MAX_PHOTO_SHARE
    min_support: int = MIN_SUPPORT
    use_prior: bool = True
    weights: MatchWeights = field(default_factory=shipped_match_weights)
    term_weights: Mapping[str, float] | None = field(default=None, hash=False)
    explain_photos: int = 3
    explain_aspects: int = 5
    profile_terms: int = 10

    @classmethod
    def no_retrieval(cls, **changes: Any) -> LensConfig:
        return cls(use_retrieval=False, use_refinement=False, **changes)

    @classmethod
    def retrieval_only(cls, **changes: Any) -> LensConfig:
        settings: dict[str, Any] = {
            "use_aspects": False,
            "use_refinement": False,
            "use_evidence": False,
            "use_prior": False,
        }
        return cls(**{**settings, **changes})

    @classmethod
    def naive(cls, **changes: Any) -> LensConfig:
        """The plain mean of every photo matched against the candidates: nothing else."""
        settings: dict[str, Any] = {
            "use_retrieval": False,
            "use_filter": False,
            "use_aspects": False,
            "use_refinement": False,
            "use_evidence": False,
            "use_reliability": False,
            "use_prior": False,
            "duplicate_threshold": None,
        }
        return cls(**{**settings, **changes})


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item, its score and the reasons drawn from the user's photos."""

    item: CatalogItem
    score: float
    evidence: tuple[Evidence, ...]
    aspects: tuple[tuple[str, float], ...]

    def as_json(self) -> dict[str, object]:
        from visuallens_app.library.paths import display_path

        return {
            "id": self.item.id,
            "name": self.item.name,
            "score": round(self.score, 6),
            "evidence": [display_path(e.path) for e in self.evidence],
            "aspects": [{"term": t, "contribution": round(c, 6)} for t, c in self.aspects],
        }


@dataclass(frozen=True, slots=True)
class LensResult:
    """Ranked recommendations, the retrieved photos (history indices, ranked), the profile.

    ``captions`` pairs a history index from ``retrieved`` with its photo's caption, in
    retrieval order; empty when no captioner was given (or no retrieved photo was readable).
    ``personal`` is the share of the order the photos decided (0: none relates, the order is
    the catalog's prior, described by ``prior_basis``; 1: the photos alone). ``photos_relate``
    says whether any retrieved photo relates to any candidate at the evidence floor (all of
    them, not the listed: False means no item, listed or not, has a photo behind it).
    """

    recommendations: tuple[Recommendation, ...]
    retrieved: tuple[int, ...]
    profile_aspects: tuple[tuple[str, float], ...]
    notes: tuple[str, ...]
    captions: tuple[tuple[int, str], ...] = ()
    personal: float = 1.0
    prior_basis: str | None = None
    photos_relate: bool = True
    #: The history the indices above point into (the library may change while it is shown).
    history: History | None = field(default=None, compare=False, repr=False)

    def caption_of(self, index: int) -> str | None:
        """The caption of the history photo at ``index``, when it has one."""
        return next((text for i, text in self.captions if i == index), None)


@dataclass(eq=False)
class _Library:
    """What depends on the history alone (computed once per library state)."""

    history: History
    margin: NDArray[np.float32] | None = None
    aspects: LibraryAspects | None = None
    evidence_floor: float = DEFAULT_EVIDENCE_FLOOR


@dataclass(frozen=True, eq=False)
class _Scored:
    """Everything one question computed, for the result and for training examples."""

    retrieved: NDArray[np.int64]
    photo_weights: NDArray[np.float32] | None  # relevance of each retrieved photo, mean 1
    items: ItemVectors
    components: MatchComponents
    total: NDArray[np.float32]
    profile: NDArray[np.float32] | None  # (V,) aspect weights, None without aspects
    space: AspectSpace | None
    notes: tuple[str, ...]
    personal: float = 1.0
    prior: Prior | None = None
    #: Whether a retrieved photo relates to a candidate, when the prior's pass measured it.
    relates: bool | None = None


def default_vocabulary() -> Vocabulary | None:
    """The shipped aspect vocabulary, or None when it is missing (aspects are then skipped)."""
    from visuallens_app.errors import VisualLensError
    from visuallens_app.lens.vocabulary import AspectVocabulary

    try:
        return AspectVocabulary.load()
    except (OSError, VisualLensError):
        return None


def candidates_for(catalog: Catalog, category: str) -> list[CatalogItem]:
    """The catalog's items in ``category``; an unknown category names the close matches."""
    items = catalog.in_category(category)
    if items:
        return items
    known = catalog.categories()
    close = difflib.get_close_matches(category.strip().casefold(), known, n=3, cutoff=0.5)
    hint = (
        f" Did you mean {' or '.join(repr(c) for c in close)}?"
        if close
        else f" Known categories: {', '.join(known)}."
    )
    raise CatalogError(f"The catalog has no category {category!r}.{hint}")


def _check_history(n: int) -> None:
    """Refuse a history of ``n`` photos when it is too small to profile."""
    if n < MIN_HISTORY:
        have = "no photos" if n == 0 else f"only {n} photo{'s' if n != 1 else ''}"
        raise NotEnoughHistoryError(
            f"The library has {have} indexed with this encoder; index a folder with at least "
            f"{MIN_HISTORY} photos (`visuallens index FOLDER`) to get recommendations."
        )


def _score(
    lib: _Library,
    candidates: Sequence[CatalogItem],
    category: str,
    encoder: Encoder,
    *,
    config: LensConfig,
    vocabulary: Vocabulary | None,
    db: Any | None,
    items: ItemVectors | None = None,
    cancel: CancelToken | None = None,
) -> _Scored:
    history = lib.history
    _check_history(len(history))
    if not candidates:
        raise CatalogError(f"There are no candidates to rank for {category!r}.")
    notes: list[str] = []
    check = cancel.check if cancel is not None else (lambda: None)
    own_junk, own_duplicate = space_thresholds(encoder)
    junk_threshold = own_junk if config.junk_threshold is None else config.junk_threshold
    duplicate = (
        own_duplicate if config.duplicate_threshold == "auto" else config.duplicate_threshold
    )
    reliability = photo_reliability(history) if config.use_reliability else None

    keep: NDArray[np.bool_] | None = None
    if config.use_filter:
        if lib.margin is None:
            lib.margin = junk_margin(history, encoder, db)
        keep = lib.margin <= junk_threshold
        dropped = int((~keep).sum())
        if dropped:
            noun = "photo" if dropped == 1 else "photos"
            notes.append(f"Left out {dropped} screenshot/document-like {noun}.")
        if int(keep.sum()) < MIN_HISTORY:
            notes.append("Too few photos left after filtering; the filter was not applied.")
            keep = None
    check()

    if items is None:
        items = embed_items(candidates, encoder, db=db)
    prototype = category_prototype(candidates, encoder, items, category=category, db=db)
    check()

    w = config.w
    if config.use_retrieval:
        if config.adaptive_w:
            pool = np.flatnonzero(keep) if keep is not None else np.arange(len(history))
            w = retrieval_size(history.vectors[pool] @ prototype, config.w, config.w_max)
        retrieved = retrieve(
            history,
            prototype,
            w,
            keep=keep,
            duplicate_threshold=duplicate,
            time_window=config.time_window,
        )
    else:
        pool = np.flatnonzero(keep) if keep is not None else np.arange(len(history))
        order = pool[np.argsort(-(history.vectors[pool] @ prototype), kind="stable")]
        retrieved = (
            collapse_near_duplicates(history, duplicate, config.time_window, order=order)
            if duplicate is not None
            else order.astype(np.int64)
        )
    check()

    def relevance(rows: NDArray[np.int64]) -> NDArray[np.float32] | None:
        # Without retrieval (the paper's baseline) every photo counts the same.
        if not config.use_retrieval:
            return None
        return relevance_weights(
            history,
            rows,
            prototype,
            keep,
            reliability=reliability,
            max_share=config.max_photo_share,
        )

    profile: NDArray[np.float32] | None = None
    space: AspectSpace | None = None
    if config.use_aspects and vocabulary is None:
        notes.append("No aspect vocabulary found; matched on photos only.")
    elif config.use_aspects and vocabulary is not None:
        if lib.aspects is None:
            space = AspectSpace.build(vocabulary, encoder, history, db=db)
            lib.aspects = library_aspects(history, space, db=db)
        aspects = lib.aspects
        space = aspects.space
        term_prior = term_prior_vector(config.term_weights, space.terms)
        if config.use_refinement and config.use_retrieval:
            refined = refine_retrieval(
                history,
                aspects,
                prototype,
                retrieved,
                w=w,
                rounds=config.refine_rounds,
                mix=config.refine_mix,
                keep=keep,
                duplicate_threshold=duplicate,
                time_window=config.time_window,
                term_prior=term_prior,
                reliability=reliability,
                max_share=config.max_photo_share,
                min_support=config.min_support,
            )
            retrieved, profile = refined.retrieved, refined.weights
            state = "converged" if refined.converged else "stopped at the cap"
            rounds = "round" if refined.rounds == 1 else "rounds"
            notes.append(f"Refinement {state} after {refined.rounds} {rounds}.")
        else:
            profile = profile_weights(
                aspects,
                retrieved,
                photo_weights=relevance(retrieved),
                term_prior=term_prior,
                keep=keep,
                min_support=config.min_support,
            )
    check()

    # The ranking rests on the retrieved photos that relate to the category's items, as much
    # as they do; the catalog's prior orders what they leave open (lens/prior.py).
    relates: bool | None = None  # whether a retrieved photo relates to any candidate
    matched, share, prior = retrieved, 1.0, None
    matched_weights: NDArray[np.float32] | None = None
    if config.use_prior and vocabulary is not None and len(retrieved):
        if lib.aspects is None:
            space_ = AspectSpace.build(vocabulary, encoder, history, db=db)
            lib.aspects = library_aspects(history, space_, db=db)
        rel = photo_relatedness(history.vectors[retrieved], items.view(), lib.aspects.space.vectors)
        trust = reliability[retrieved] if reliability is not None else None
        speaks = speaking_photos(
            rel, lib.evidence_floor, None if trust is None else trust >= READABLE
        )
        share = personal_share(evidence_strength(rel, lib.evidence_floor, speaks, trust))
        if space is not None and rel.size:  # the evidence's test in _result, over all items
            related_rows = rel.max(axis=1) >= lib.evidence_floor
            if trust is not None:
                related_rows &= trust >= READABLE
            relates = bool(related_rows.any())
        prior = catalog_prior(candidates, items, prototype)
        if len(history) <= SMALL_LIBRARY:
            # Retrieval keeps every photo of a small library, so the photos that relate to
            # the category's items take its place, each as far as it relates: a photo that
            # relates to nothing here, left out or added, no longer reorders the category.
            # (Above it retrieval does choose, and this cut cost 3 MRR points on the
            # benchmark's large histories: a photo's best single item is a narrow test.)
            matched = retrieved[speaks]
            matched_weights = speaking_weights(relevance(matched), rel, lib.evidence_floor, speaks)
            if profile is not None:
                profile = (
                    profile_weights(
                        lib.aspects,
                        matched,
                        photo_weights=matched_weights,
                        term_prior=term_prior_vector(config.term_weights, lib.aspects.space.terms),
                        keep=keep,
                        min_support=config.min_support,
                    )
                    if len(matched)
                    else None
                )
        if share == 0.0 and relates is not False:
            # Some photo passes the evidence floor for an item, none by the category's margin.
            # (Where none passes it, the report says "nothing relates" above the list.)
            notes.append(
                f"Your photos say too little about {category} to order it: ranked by {prior.basis}."
            )
        elif share < 0.5:
            notes.append(
                f"Few of your photos relate to {category}: they decide {share:.0%} of the "
                f"order, {prior.basis} the rest."
            )
    check()

    photo_weights = relevance(retrieved)

    components = match_components(
        history.vectors[matched],
        items,
        aspect_weights=profile,
        term_vectors=space.vectors if space is not None else None,
        terms=space.terms if space is not None else (),
        item_word_sets=items_words(candidates) if profile is not None else (),
        photo_weights=photo_weights if matched_weights is None else matched_weights,
        use_evidence=config.use_evidence,
        photo_reliability=reliability[matched] if reliability is not None else None,
    )
    weights = config.weights
    if profile is None:
        weights = replace(weights, aspects=0.0)
    if not config.use_evidence:
        weights = replace(weights, evidence=0.0)
    total = components.total(weights)
    if prior is not None:
        total = blend(prior.scores, total, share)
    return _Scored(
        retrieved,
        photo_weights,
        items,
        components,
        total,
        profile,
        space,
        tuple(notes),
        share,
        prior,
        relates,
    )


def _result(
    lib: _Library, candidates: Sequence[CatalogItem], scored: _Scored, config: LensConfig, k: int
) -> LensResult:
    history = lib.history
    order = np.argsort(-scored.total, kind="stable")[: max(0, k)]
    retrieved = scored.retrieved
    view = scored.items.view()
    # Centred on all candidates, not the k listed: an explanation must not depend on k.
    support = photo_support(history.vectors[retrieved], view[order], view.mean(axis=0))
    if scored.photo_weights is not None:
        # Each photo's share of the (weighted) profile cosine, not just its closeness.
        support = support * scored.photo_weights[:, None]
    readable: NDArray[np.bool_] | None = None
    if config.use_reliability:
        # A photo the classifier could not read (blurred noise, a texture) is never a reason.
        readable = photo_reliability(history)[retrieved] >= READABLE
        support = np.where(readable[:, None], support, 0.0).astype(np.float32)
    terms = scored.space.terms if scored.space is not None else ()
    related = (
        photo_relatedness(history.vectors[retrieved], view[order], scored.space.vectors)
        >= lib.evidence_floor
        if scored.space is not None and len(retrieved)
        else None
    )
    # Over every candidate, so that "nothing relates" does not change with k (issue 11).
    photos_relate = scored.relates
    if photos_relate is None:
        if scored.space is None or not len(retrieved):
            photos_relate = bool(len(retrieved))  # no relation test: any photo may be evidence
        else:
            photos_relate = relates_to_any(
                history.vectors[retrieved],
                view,
                scored.space.vectors,
                lib.evidence_floor,
                readable=readable,
            )
    shares = scored.components.term_contributions
    contributions = shares.rows(order) if shares is not None else None  # the listed rows only
    recommendations = tuple(
        Recommendation(
            item=candidates[int(c)],
            score=float(scored.total[c]),
            evidence=supporting_photos(
                history, retrieved, support, col, config.explain_photos, related=related
            )
            if len(retrieved)
            else (),
            aspects=matched_aspects(terms, contributions, col, config.explain_aspects),
        )
        for col, c in enumerate(order)
    )
    profile_aspects: tuple[tuple[str, float], ...] = ()
    if scored.profile is not None and scored.space is not None:
        top = np.argsort(-scored.profile, kind="stable")[: config.profile_terms]
        profile_aspects = tuple(
            (scored.space.terms[int(t)], round(float(scored.profile[t]), 6))
            for t in top
            if scored.profile[t] > 0
        )
    return LensResult(
        recommendations,
        tuple(int(i) for i in retrieved),
        profile_aspects,
        scored.notes,
        personal=scored.personal,
        prior_basis=scored.prior.basis if scored.prior is not None else None,
        photos_relate=photos_relate,
    )


def _with_captions(
    result: LensResult,
    history: History,
    captioner: Captioner | None,
    db: Any | None,
    cancel: CancelToken | None = None,
) -> LensResult:
    """``result`` with the captions of its first :data:`CAPTIONED_PHOTOS` retrieved photos."""
    if captioner is None or not result.retrieved:
        return result
    rows = result.retrieved[:CAPTIONED_PHOTOS]
    found = history_captions(history, rows, captioner, db=db, cancel=cancel)
    return replace(result, captions=tuple((i, found[i]) for i in rows if found.get(i)))


def recommend(
    history: History,
    candidates: Sequence[CatalogItem],
    category: str,
    encoder: Encoder,
    *,
    config: LensConfig | None = None,
    vocabulary: Vocabulary | None = None,
    store: PhotoStore | None = None,
    k: int = 10,
    captioner: Captioner | None = None,
) -> LensResult:
    """Rank ``candidates`` for ``category`` from the user's ``history``, with explanations.

    Parameters
    ----------
    history
        The user's photos with vectors from ``encoder``.
    candidates
        The items to rank (all of one category).
    vocabulary
        Aspect vocabulary; None uses the shipped one (aspects are skipped if it is missing).
    store
        Used only for its caches (text and item embeddings, per-photo aspects); without it
        everything is computed in memory.
    k
        How many recommendations to return.
    captioner
        When given, the top retrieved photos are captioned (read from the store's cache where
        there) into ``LensResult.captions``; without it nothing is captioned.

    Raises
    ------
    NotEnoughHistoryError
        Fewer than three photos.
    CatalogError
        No candidates.
    """
    config = config or LensConfig()
    vocab = vocabulary if vocabulary is not None else default_vocabulary()
    db = store.db if store is not None else None
    lib = _Library(history, evidence_floor=evidence_floor_of(encoder))
    with _single_blas_thread():
        scored = _score(lib, candidates, category, encoder, config=config, vocabulary=vocab, db=db)
    return _with_captions(_result(lib, candidates, scored, config, k), history, captioner, db)


def training_examples(
    history: History,
    candidates: Sequence[CatalogItem],
    category: str,
    encoder: Encoder,
    ground_truth: Sequence[str],
    *,
    config: LensConfig | None = None,
    vocabulary: Vocabulary | None = None,
    store: PhotoStore | None = None,
) -> tuple[MatchExample, AspectExample | None]:
    """One labelled question as inputs to :func:`~visuallens_app.lens.matching.fit_match_weights`
    and :func:`~visuallens_app.lens.refine.fit_aspect_weights` (None without aspects)."""
    config = config or LensConfig()
    vocab = vocabulary if vocabulary is not None else default_vocabulary()
    db = store.db if store is not None else None
    with _single_blas_thread():
        scored = _score(
            _Library(history, evidence_floor=evidence_floor_of(encoder)),
            candidates,
            category,
            encoder,
            config=config,
            vocabulary=vocab,
            db=db,
        )
    truth = set(ground_truth)
    positives = np.array([c.id in truth for c in candidates], dtype=bool)
    match = MatchExample(scored.components.stacked(), positives)
    aspect = None
    if scored.profile is not None and scored.space is not None:
        affinity = candidate_term_affinity(scored.space.vectors, scored.items)
        aspect = AspectExample(scored.profile, affinity, positives)
    return match, aspect


class Recommender:
    """Recommendations over one store with one encoder, caching what questions share.

    The history and everything derived from it are reloaded when the store's fingerprint
    changes (photos added or removed); item vectors are kept per catalog item and content.
    """

    def __init__(
        self,
        store: PhotoStore,
        encoder: Encoder,
        *,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self._vocabulary = vocabulary
        self._vocabulary_loaded = vocabulary is not None
        self._fingerprint: str | None = None
        self._generation: int | None = None
        self._library: _Library | None = None
        self._items: dict[tuple[str, ...], ItemVectors] = {}

    @property
    def vocabulary(self) -> Vocabulary | None:
        if not self._vocabulary_loaded:
            self._vocabulary = default_vocabulary()
            self._vocabulary_loaded = True
        return self._vocabulary

    def library(self) -> _Library:
        # The store's fingerprint (library id + encoder + write generation) is a few one-row
        # reads; the history is reloaded only when it moved.
        fingerprint = self.store.fingerprint(self.encoder.id)
        if self._library is None or fingerprint != self._fingerprint:
            self._library = _Library(
                History.from_store(self.store, self.encoder.id),
                evidence_floor=evidence_floor_of(self.encoder),
            )
            self._fingerprint = fingerprint
        return self._library

    def history(self) -> History:
        return self.library().history

    def check_history(self) -> None:
        """Refuse (:class:`NotEnoughHistoryError`) a library with too few photos to profile,
        before anything slow is done for a question it cannot answer.

        Before the history is loaded this is one count in the store (a catalog read on its own
        thread need not load every vector for it); :meth:`recommend` checks the history itself.
        """
        if self._library is not None and self._fingerprint == self.store.fingerprint(
            self.encoder.id
        ):
            _check_history(len(self._library.history))
        else:
            _check_history(self.store.encoders().get(self.encoder.id, 0))

    def item_vectors(self, items: Sequence[CatalogItem]) -> ItemVectors:
        return run_to_end(self.item_vectors_job(items))

    def item_vectors_job(
        self, items: Sequence[CatalogItem], cancel: CancelToken | None = None
    ) -> Job[ItemVectors]:
        """:meth:`item_vectors` as a long job: progress while items new to the library are
        embedded (minutes for a large catalog's first question), cancellable between batches."""
        from visuallens_app.lens.matching import embed_items_job, item_hash

        hashes = [item_hash(it) for it in items]
        key = tuple(f"{it.id}\0{h}" for it, h in zip(items, hashes, strict=True))
        cached = self._items.get(key)
        if cached is None:
            cached = yield from embed_items_job(
                items, self.encoder, db=self.store.db, hashes=hashes, cancel=cancel
            )
            self._items[key] = cached
        return cached

    def recommend(
        self,
        category: str,
        catalog: Catalog,
        k: int = 10,
        config: LensConfig | None = None,
        cancel: CancelToken | None = None,
        *,
        captioner: Captioner | None = None,
    ) -> LensResult:
        """Top ``k`` items of ``category`` in ``catalog`` for this library's owner.

        With a ``captioner``, the top retrieved photos' captions are added (cached in the
        store, so only photos never captioned before cost a model call).
        """
        config = config or LensConfig()
        lib = self.library()
        _check_history(len(lib.history))
        candidates = candidates_for(catalog, category)
        items = self.item_vectors(candidates)
        with _single_blas_thread():
            scored = _score(
                lib,
                candidates,
                category,
                self.encoder,
                config=config,
                vocabulary=self.vocabulary,
                db=self.store.db,
                items=items,
                cancel=cancel,
            )
        result = replace(_result(lib, candidates, scored, config, k), history=lib.history)
        return _with_captions(result, lib.history, captioner, self.store.db, cancel)
