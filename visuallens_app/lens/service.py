"""One recommendation for every front-end: the lens service the CLI and the window both call.

:func:`recommend` takes the library (through a :class:`~visuallens_app.lens.pipeline.Recommender`
over its store and encoder), the catalog, the category and :class:`LensOptions` (how many items,
the retrieval size, a captioner and a re-ranker when wanted) and returns a :class:`LensReport`:
ranked items with their explanations and evidence photos, the photos of the profile grid, the
profile's aspect words and the notes. The front-ends only format it (``visuallens recommend``
prints it, the Recommendations panel draws it); neither assembles a recommendation itself.

The window runs the model-free part on its query thread and the vision-language part (captions,
re-ranking) on the model's thread: :func:`recommend` without a captioner or re-ranker, then
:func:`with_vlm` on the report, which is exactly what :func:`recommend` does in one go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from visuallens_app._gc import collector_paused
from visuallens_app.errors import VisualLensError
from visuallens_app.jobs import CancelToken, Job
from visuallens_app.lens.aspects import Captioner, history_captions
from visuallens_app.lens.catalog import Catalog, CatalogItem
from visuallens_app.lens.history import History
from visuallens_app.lens.pipeline import (
    CAPTIONED_PHOTOS,
    LensConfig,
    LensResult,
    Recommendation,
    Recommender,
    candidates_for,
)
from visuallens_app.lens.rerank import MAX_CANDIDATES, ProfileGrid, TagRanker, profile_grid

#: What an item's explanation says when none of the user's photos is evidence for it.
NOTHING_RELATES = "Nothing in your photos relates to this."

#: Tiles of the profile grid (the paper's 8x8).
GRID_TILES = 64


@dataclass(frozen=True)
class LensOptions:
    """How to answer one question: list size, retrieval size, and the optional VLM parts.

    ``w`` None keeps ``config.w``; ``captioner`` captions the profile photos that have no
    caption yet (cached in the library); ``reranker`` re-orders the items as the paper does.
    """

    k: int = 10
    w: int | None = None
    captioner: Captioner | None = None
    reranker: TagRanker | None = None
    config: LensConfig = field(default_factory=LensConfig)

    def lens_config(self) -> LensConfig:
        return self.config if self.w is None else replace(self.config, w=self.w)


@dataclass(frozen=True, slots=True)
class LibraryPhoto:
    """One of the user's photos as a front-end shows it."""

    index: int  # row in the report's history
    photo_id: int
    path: Path
    content_hash: str
    caption: str | None = None


@dataclass(frozen=True, slots=True)
class EvidencePhoto:
    """A photo behind a recommendation, and how much it pushed the item up."""

    photo: LibraryPhoto
    contribution: float


@dataclass(frozen=True, slots=True)
class RankedItem:
    """One recommended catalog item with everything its card or line shows."""

    rank: int
    item: CatalogItem
    score: float
    evidence: tuple[EvidencePhoto, ...]
    aspects: tuple[tuple[str, float], ...]

    @property
    def relates(self) -> bool:
        """True when at least one of the user's photos is evidence for this item."""
        return bool(self.evidence)

    @property
    def explanation(self) -> str:
        """One line: the photos behind the item, or that nothing in the photos relates to it."""
        if not self.evidence:
            return NOTHING_RELATES
        return "Because of " + ", ".join(e.photo.path.name for e in self.evidence) + "."

    def as_json(self) -> dict[str, object]:
        from visuallens_app.library.paths import display_path

        row: dict[str, object] = {
            "id": self.item.id,
            "name": self.item.name,
            "score": round(self.score, 6),
            "evidence": [display_path(e.photo.path) for e in self.evidence],
            "aspects": [{"term": t, "contribution": round(c, 6)} for t, c in self.aspects],
            "relates": self.relates,
        }
        captions = {
            display_path(e.photo.path): e.photo.caption for e in self.evidence if e.photo.caption
        }
        if captions:
            row["captions"] = captions
        return row


@dataclass(frozen=True, eq=False)
class LensReport:
    """The full answer to one question, for any front-end to format.

    ``profile`` holds the photos of the profile grid (the top retrieved, best first, at most
    :data:`GRID_TILES`); ``retrieved`` how many photos the profile was built from;
    ``library_note`` is set when nothing in the library relates to any of the category's items
    (listed or not, so it reads the same for every list size).
    ``lens`` and ``history`` are what a later :func:`with_vlm` pass needs.
    """

    category: str
    items: tuple[RankedItem, ...]
    profile: tuple[LibraryPhoto, ...]
    profile_aspects: tuple[tuple[str, float], ...]
    notes: tuple[str, ...]
    retrieved: int
    lens: LensResult
    history: History
    reranked: bool = False

    @property
    def library_note(self) -> str | None:
        """A sentence for above the list when no photo relates to any of the category's items.

        Decided over every candidate (:attr:`LensResult.photos_relate`), not the listed ones:
        an explanation must not depend on how many items are listed (issue 11 item 4).
        """
        if not self.items or self.lens.photos_relate:
            return None
        if self.lens.prior_basis is not None and self.lens.personal < 0.5:
            return (
                f"Nothing in your photos relates to {self.category}: these are its items "
                f"ranked by {self.lens.prior_basis}, without photos behind them."
            )
        return (
            f"Nothing in your photos relates to {self.category}: these are the catalog's "
            "items in the order your photos suggest, without photos behind them."
        )

    def as_json(self) -> list[dict[str, object]]:
        return [item.as_json() for item in self.items]

    def grid(self, load: Callable[[int], Image.Image | None] | None = None) -> ProfileGrid:
        """The numbered profile grid of :attr:`profile` (``load``: a tile image by history row).

        The window draws this grid and the re-ranker reads the same one.
        """
        captions = {p.index: p.caption for p in self.profile if p.caption}
        return profile_grid(
            self.history.paths,
            [p.index for p in self.profile],
            captions,
            max_tiles=GRID_TILES,
            load=load,
        )


def _photo(history: History, index: int, captions: Mapping[int, str]) -> LibraryPhoto:
    return LibraryPhoto(
        index=index,
        photo_id=int(history.ids[index]),
        path=history.paths[index],
        content_hash=history.content_hashes[index],
        caption=captions.get(index),
    )


def _report(
    category: str, result: LensResult, history: History, *, k: int, reranked: bool = False
) -> LensReport:
    captions = dict(result.captions)
    row_of = {int(pid): i for i, pid in enumerate(history.ids)}

    def item(rank: int, rec: Recommendation) -> RankedItem:
        evidence = tuple(
            EvidencePhoto(_photo(history, row_of[e.photo_id], captions), e.contribution)
            for e in rec.evidence
            if e.photo_id in row_of
        )
        return RankedItem(rank, rec.item, rec.score, evidence, rec.aspects)

    return LensReport(
        category=category,
        items=tuple(item(r, rec) for r, rec in enumerate(result.recommendations[:k], start=1)),
        profile=tuple(_photo(history, i, captions) for i in result.retrieved[:GRID_TILES]),
        profile_aspects=result.profile_aspects,
        notes=result.notes,
        retrieved=len(result.retrieved),
        lens=result,
        history=history,
        reranked=reranked,
    )


def check_options(options: LensOptions) -> None:
    """Raise the one-sentence error for a list or retrieval size a user mistyped."""
    if options.k < 1:
        raise VisualLensError("-k must be at least 1.")
    if options.w is not None and options.w < 1:
        raise VisualLensError("-w must be at least 1.")


def prepare(
    recommender: Recommender,
    catalog: Catalog,
    category: str,
    cancel: CancelToken | None = None,
) -> Job[None]:
    """Embed ``category``'s items the library has no vectors for yet, as a long job.

    The first question about a large catalog embeds every item description once (minutes for
    100,000); this yields Progress meanwhile (stage ``"catalog"``) and stops at ``cancel``
    between batches, keeping what was embedded. Front-ends run it before :func:`recommend`,
    which then finds every vector in memory; for a catalog the library knows already it yields
    nothing. A library too small to answer is refused first, not after the read.
    """
    candidates = candidates_for(catalog, category)
    recommender.check_history()
    yield from recommender.item_vectors_job(candidates, cancel)


def recommend(
    recommender: Recommender,
    catalog: Catalog,
    category: str,
    options: LensOptions | None = None,
    cancel: CancelToken | None = None,
) -> LensReport:
    """Rank ``catalog``'s items of ``category`` for the library behind ``recommender``.

    With ``options.captioner`` the profile photos are captioned (from the library's cache where
    they were captioned before); with ``options.reranker`` the vision-language model orders the
    items, seeing the same grid the window shows. Raises the lens's one-sentence errors (an
    unknown category, too few photos, a bad option).
    """
    options = options or LensOptions()
    check_options(options)
    depth = options.k
    if options.reranker is not None:
        # The re-ranker orders every candidate it can take; the top k are shown after.
        depth = max(options.k, min(len(candidates_for(catalog, category)), MAX_CANDIDATES))
    with collector_paused():
        result = recommender.recommend(
            category,
            catalog,
            depth,
            options.lens_config(),
            cancel,
            captioner=options.captioner,
        )
    # The history the ranking used, not the library's newest: indexing may have written since.
    history = result.history if result.history is not None else recommender.history()
    report = _report(category, result, history, k=depth)
    if options.reranker is not None:
        report = with_vlm(report, reranker=options.reranker, cancel=cancel)
    return _cut(report, options.k)


def _cut(report: LensReport, k: int) -> LensReport:
    return replace(report, items=report.items[:k]) if len(report.items) > k else report


def with_vlm(
    report: LensReport,
    *,
    captioner: Captioner | None = None,
    reranker: TagRanker | None = None,
    db: Any | None = None,
    grid: ProfileGrid | None = None,
    cancel: CancelToken | None = None,
) -> LensReport:
    """``report`` with the vision-language model's part: captions, then the re-ranked order.

    ``captioner`` captions the profile photos still lacking one (cached in ``db``); ``grid`` is
    the profile grid already drawn (it is built here otherwise). The items keep their
    explanations; only their order and ranks change.
    """
    result, history = report.lens, report.history
    if captioner is not None and result.retrieved:
        rows = result.retrieved[:CAPTIONED_PHOTOS]
        found = history_captions(history, rows, captioner, db=db, cancel=cancel)
        result = replace(result, captions=tuple((i, found[i]) for i in rows if found.get(i)))
        report = replace(
            _report(report.category, result, history, k=len(report.items)),
            reranked=report.reranked,
        )
        if grid is not None:  # the same tiles, now with their captions for the prompt
            by_row = dict(result.captions)
            captions = {t: by_row[i] for t, i in enumerate(grid.rows, 1) if i in by_row}
            grid = ProfileGrid(grid.image, grid.rows, captions)
    if reranker is None or not report.items:
        return report
    if cancel is not None:
        cancel.check()
    from visuallens_app.lens.rerank import rerank_result

    shown = replace(result, recommendations=result.recommendations[: len(report.items)])
    ranked = rerank_result(
        reranker,
        shown,
        history.paths,
        f"recommend a {report.category}",
        grid=grid if grid is not None else report.grid(),
    )
    by_id = {id(rec): item for rec, item in zip(shown.recommendations, report.items, strict=True)}
    items = tuple(
        replace(by_id[id(rec)], rank=rank) for rank, rec in enumerate(ranked.recommendations, 1)
    )
    return replace(report, items=items, notes=ranked.notes, lens=ranked, reranked=True)


def photos_of(report: LensReport) -> Sequence[LibraryPhoto]:
    """Every distinct photo the report shows (evidence first, then the profile), once each."""
    seen: dict[int, LibraryPhoto] = {}
    for item in report.items:
        for e in item.evidence:
            seen.setdefault(e.photo.index, e.photo)
    for photo in report.profile:
        seen.setdefault(photo.index, photo)
    return list(seen.values())


__all__ = [
    "NOTHING_RELATES",
    "EvidencePhoto",
    "LensOptions",
    "LensReport",
    "LibraryPhoto",
    "RankedItem",
    "check_options",
    "photos_of",
    "prepare",
    "recommend",
    "with_vlm",
]
