"""The core calls the GUI makes, as plain functions run on worker threads (no Qt in here).

Each task opens its own :class:`PhotoStore` (a store belongs to the thread that opened it; WAL
lets these readers run while the indexer writes), except searches and recommendations, which
keep theirs in a :class:`QueryCache` on one dedicated thread. Tasks return plain records that
Qt item models wrap. Heavy modules are imported inside the functions, so importing the GUI stays
cheap and the window appears before torch loads.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visuallens_app.errors import Cancelled, CatalogError
from visuallens_app.jobs import CancelToken, Progress

if TYPE_CHECKING:
    from visuallens_app.lens.catalog import Catalog
    from visuallens_app.lens.rerank import ProfileGrid
    from visuallens_app.lens.service import LensReport
    from visuallens_app.library.thumbnails import ThumbnailCache

#: Results a text or similar-photo search returns.
SEARCH_K = 200


@dataclass(frozen=True, slots=True)
class PhotoItem:
    """One photo as a grid row: the store record, its thumbnail file, and a score in results."""

    record: Any  # visuallens_app.library.store.PhotoRecord
    thumbnail: Path
    score: float | None = None
    match: bool | None = None  # in results: above the calibrated cut-off or a weaker match

    @property
    def id(self) -> int:
        return int(self.record.id)

    @property
    def path(self) -> Path:
        return Path(self.record.path)


@dataclass(frozen=True, slots=True)
class BrowseQuery:
    """What the library grid shows: folder filter, capture-date range (ISO dates), sort order."""

    root: Path | None = None
    date_from: str | None = None
    date_to: str | None = None
    newest_first: bool = True


@dataclass(frozen=True, slots=True)
class LibrarySummary:
    roots: list[Path]
    counts: dict[str, int]
    failures: list[tuple[str, str]]
    folders: list[Path] = field(default_factory=list)  # roots and the folders inside with photos


class SerialEncoder:
    """Lets one loaded model serve every worker, one call at a time (one job per model).

    Indexing encodes batch by batch, so a search waits at most for one batch.
    """

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return str(self._encoder.id)

    @property
    def dim(self) -> int:
        return int(self._encoder.dim)

    @property
    def input_size(self) -> int:
        return int(self._encoder.input_size)

    def encode_images(self, images: Sequence[Any]) -> Any:
        with self._lock:
            return self._encoder.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> Any:
        with self._lock:
            return self._encoder.encode_texts(texts)

    def __getattr__(self, name: str) -> Any:
        # Every other method call (signals with the vectors, probabilities, load) holds the
        # lock too; anything else passes through as it is (a model held as an attribute, such
        # as the classifier TLDR's grounding reads its feature maps from, is not a method).
        attr = getattr(self._encoder, name)
        if not inspect.ismethod(attr):
            return attr

        def serial(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return serial


def _open(library_dir: Path) -> Any:
    """Open the store (racing first opens are handled inside it, see ``apply_migrations``)."""
    from visuallens_app.library.store import PhotoStore

    return PhotoStore(library_dir)


@contextmanager
def open_store(library_dir: Path) -> Iterator[Any]:
    store = _open(library_dir)
    try:
        yield store
    finally:
        store.close()


def _items(store: Any, records: Sequence[Any]) -> list[PhotoItem]:
    thumbs = store.thumbnails
    return [PhotoItem(r, thumbs.path_for(r.content_hash)) for r in records]


def _hit_items(store: Any, hits: Sequence[Any]) -> list[PhotoItem]:
    """Search hits as grid rows, each with its score and whether it is a match."""
    thumbs = store.thumbnails
    return [
        PhotoItem(h.photo, thumbs.path_for(h.photo.content_hash), h.score, h.match) for h in hits
    ]


# -- encoder ----------------------------------------------------------------------------------


def load_encoder(name: str, device: str) -> tuple[SerialEncoder, str]:
    """Load the configured encoder (torch imports happen here, off the UI thread)."""
    from visuallens_app.models.base import load_now
    from visuallens_app.models.registry import load_encoder as load

    choice = load(name or "auto", device=device or "auto")
    load_now(choice.encoder)  # the weights load lazily otherwise: on this worker, not at a search
    return SerialEncoder(choice.encoder), choice.reason


def download_clip(ctx: Any) -> Generator[Progress, None, Path]:
    """Fetch the default CLIP weights, reporting bytes as progress; cancellable between chunks."""
    from visuallens_app.models.registry import download_clip_weights

    def progress(done: int, total: int | None) -> None:
        if ctx.cancel.cancelled:
            raise Cancelled
        ctx.report(Progress(done, total or 0, "Downloading CLIP weights", stage="download"))

    path = download_clip_weights(None, None, progress)
    return path
    yield  # pragma: no cover - makes this a generator, so the runner treats it as a long job


def download_vlm(ctx: Any, name: str) -> Generator[Progress, None, Path]:
    """Fetch a vision-language model into the Hugging Face cache, with byte progress."""
    from visuallens_app.vlm.loading import download_vlm as fetch

    def progress(done: int, total: int | None) -> None:
        if ctx.cancel.cancelled:
            raise Cancelled
        ctx.report(Progress(done, total or 0, f"Downloading {name}", stage="download", unit="B"))

    path = fetch(name, progress)
    return path
    yield  # pragma: no cover - makes this a generator, so the runner treats it as a long job


def local_vlms() -> list[str]:
    """Names of the vision-language models in the Hugging Face cache (for a pick list)."""
    from visuallens_app.vlm.loading import list_local_vlms

    return [model.name for model in list_local_vlms()]


# -- library --------------------------------------------------------------------------------


def summary(library_dir: Path) -> LibrarySummary:
    from visuallens_app.library.paths import display_path

    with open_store(library_dir) as store:
        return LibrarySummary(
            roots=store.roots(),
            counts=store.counts(),
            failures=[(display_path(p), why) for p, why in store.failures()],
            folders=store.photo_folders(),
        )


def page(library_dir: Path, query: BrowseQuery, offset: int, limit: int) -> list[PhotoItem]:
    """One page of the library grid, in the query's order."""
    with open_store(library_dir) as store:
        return _page(store, query, offset, limit)


def _page(store: Any, query: BrowseQuery, offset: int, limit: int) -> list[PhotoItem]:
    records = store.list_photos(
        root=query.root,
        date_from=query.date_from,
        date_to=query.date_to,
        newest_first=query.newest_first,
        limit=limit,
        offset=offset,
    )
    return _items(store, records)


def count_photos(store: Any, query: BrowseQuery) -> int:
    """How many photos ``query`` shows (a plain COUNT, not ``counts()``'s GROUP BY)."""
    return int(
        store.count_photos(root=query.root, date_from=query.date_from, date_to=query.date_to)
    )


@dataclass(frozen=True, slots=True)
class BrowseHead:
    """What the grid needs to show a query at once: the row count and a few pages of rows."""

    total: int
    pages: dict[int, list[PhotoItem]]


def browse_head(
    library_dir: Path, query: BrowseQuery, pages: Sequence[int], page_size: int
) -> BrowseHead:
    """The count of ``query`` and the rows of ``pages``, read in one transaction (consistent)."""
    with open_store(library_dir) as store, store.db.conn:
        store.db.execute("BEGIN")
        total = count_photos(store, query)
        rows = {
            p: _page(store, query, p * page_size, page_size) for p in pages if p * page_size < total
        }
        return BrowseHead(total, rows)


def index(
    library_dir: Path, encoder: Any, roots: Sequence[Path], cancel: CancelToken
) -> Generator[Progress, None, Any]:
    """Bring the library up to date with ``roots`` (the core generator, with its own store)."""
    from visuallens_app.library.indexer import index_folders

    with open_store(library_dir) as store:
        report = yield from index_folders(store, encoder, list(roots), cancel=cancel)
    return report


def forget_folder(library_dir: Path, root: Path) -> int:
    with open_store(library_dir) as store:
        return int(store.remove_root(root))


# -- search ---------------------------------------------------------------------------------


class QueryState:
    """One open store with the searcher and recommender built over it for one encoder."""

    def __init__(self, key: str, encoder: Any, store: Any) -> None:
        self.key = key
        self.encoder = encoder
        self.store = store
        self.thread = threading.get_ident()
        self._search: Any = None
        self._recommender: Any = None
        self._aspects: tuple[str, Any] | None = None

    @property
    def search(self) -> Any:  # visuallens_app.library.search.PhotoSearch
        if self._search is None:
            from visuallens_app.library.search import PhotoSearch

            self._search = PhotoSearch(self.store, self.encoder)
        return self._search

    @property
    def recommender(self) -> Any:  # visuallens_app.lens.pipeline.Recommender
        if self._recommender is None:
            from visuallens_app.lens.pipeline import Recommender

            self._recommender = Recommender(self.store, self.encoder)
        return self._recommender

    def close(self) -> None:
        # A connection can only be closed on its own thread; elsewhere it is dropped and the
        # garbage collector closes it.
        if threading.get_ident() == self.thread:
            self.store.close()


class QueryCache:
    """What searches and recommendations keep between runs for the current library and encoder.

    :class:`PhotoSearch` keeps its FAISS index while the store's fingerprint holds and the
    :class:`Recommender` its history while the store's generation holds, so indexing batches
    invalidate them by themselves; another library or encoder replaces them. The store they
    read belongs to the thread that opened it, so the GUI runs every job using this cache on one
    dedicated worker thread (the session's ``query`` lane); a call from any other thread gets a
    fresh state rather than a connection of another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: QueryState | None = None

    def state(self, library_dir: Path, encoder: Any) -> QueryState:
        key = os.path.abspath(library_dir)
        with self._lock:
            state = self._state
            if (
                state is not None
                and state.key == key
                and state.encoder is encoder
                and state.thread == threading.get_ident()
            ):
                return state
            self._state = None
        if state is not None:
            state.close()
        fresh = QueryState(key, encoder, _open(library_dir))
        with self._lock:
            self._state = fresh
        return fresh

    def close(self) -> None:
        """Close the kept store (call on the thread that used the cache)."""
        with self._lock:
            state, self._state = self._state, None
        if state is not None:
            state.close()


def search_text(
    queries: QueryCache, library_dir: Path, encoder: Any, text: str, k: int = SEARCH_K
) -> list[PhotoItem]:
    state = queries.state(library_dir, encoder)
    hits = state.search.text(text, k)
    return _hit_items(state.store, hits)


def search_similar(
    queries: QueryCache, library_dir: Path, encoder: Any, path: Path, k: int = SEARCH_K
) -> list[PhotoItem]:
    state = queries.state(library_dir, encoder)
    hits = state.search.similar(path, k)
    return _hit_items(state.store, hits)


def photo_aspects(
    queries: QueryCache, library_dir: Path, encoder: Any, photo_id: int, k: int = 8
) -> list[tuple[str, float]]:
    """Aspect words for one photo from the lens (zero-shot against the shipped vocabulary)."""
    try:
        from visuallens_app.lens.aspects import AspectSpace
        from visuallens_app.lens.vocabulary import AspectVocabulary
    except ImportError:
        return []
    state = queries.state(library_dir, encoder)
    history = state.recommender.history()  # kept between photos while the library holds
    rows = [i for i, pid in enumerate(history.ids) if int(pid) == photo_id]
    if not rows:
        return []
    fingerprint = state.store.fingerprint(encoder.id)
    if state._aspects is None or state._aspects[0] != fingerprint:
        space = AspectSpace.build(AspectVocabulary.load(), encoder, history, db=state.store.db)
        state._aspects = (fingerprint, space)
    space = state._aspects[1]
    terms, scores = space.top(history.vectors[rows[0] : rows[0] + 1], k)
    return [(space.terms[int(t)], float(s)) for t, s in zip(terms[0], scores[0], strict=True)]


# -- recommendations -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogInfo:
    catalog: Catalog
    problems: list[str]
    shipped: bool


def load_catalog(folder: Path | None) -> CatalogInfo:
    """The shipped catalog (``folder`` None) or one the user imported, with its problems listed."""
    from visuallens_app.lens.catalog import load_catalog as load_folder
    from visuallens_app.lens.catalog import load_default_catalog

    if folder is None:
        catalog, problems, shipped = load_default_catalog(), [], True
    else:
        loaded = load_folder(Path(folder))
        catalog, problems, shipped = loaded.catalog, [str(p) for p in loaded.problems], False
    if not catalog.items:
        raise CatalogError(f"The catalog at {catalog.root} has no usable items.")
    return CatalogInfo(catalog, problems, shipped)


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    photo_id: int
    path: Path
    thumbnail: Path | None
    contribution: float
    caption: str | None = None


@dataclass(frozen=True, slots=True)
class RecommendationCard:
    rank: int
    name: str
    description: str
    score: float
    aspects: list[tuple[str, float]]
    evidence: list[EvidenceItem]
    url: str | None = None
    rating: float | None = None
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class RecommendationView:
    """What the panel draws: the lens service's report as cards, and its profile grid."""

    report: LensReport
    cards: list[RecommendationCard]
    grid: ProfileGrid | None  # the numbered grid of the profile photos, as the re-ranker sees it

    @property
    def category(self) -> str:
        return self.report.category

    @property
    def notes(self) -> list[str]:
        return list(self.report.notes)

    @property
    def profile_aspects(self) -> list[tuple[str, float]]:
        return list(self.report.profile_aspects)

    @property
    def retrieved(self) -> int:
        return self.report.retrieved

    @property
    def reranked(self) -> bool:
        return self.report.reranked

    @property
    def library_note(self) -> str | None:
        return self.report.library_note


def _cards(report: LensReport, thumbs: ThumbnailCache) -> list[RecommendationCard]:
    return [
        RecommendationCard(
            rank=ranked.rank,
            name=ranked.item.name,
            description=ranked.item.description,
            score=ranked.score,
            aspects=list(ranked.aspects),
            evidence=[
                EvidenceItem(
                    e.photo.photo_id,
                    e.photo.path,
                    thumbs.path_for(e.photo.content_hash),
                    e.contribution,
                    e.photo.caption,
                )
                for e in ranked.evidence
            ],
            url=ranked.item.url,
            rating=ranked.item.rating,
            explanation=ranked.explanation,
        )
        for ranked in report.items
    ]


def _grid(report: LensReport, thumbs: ThumbnailCache) -> ProfileGrid | None:
    """The profile grid from the library's thumbnails (the photo itself where one is missing)."""
    from PIL import Image

    if not report.profile:
        return None
    hashes = {p.index: p.content_hash for p in report.profile}

    def load(index: int) -> Image.Image | None:
        try:
            with Image.open(thumbs.path_for(hashes[index])) as image:
                return image.convert("RGB")
        except OSError:
            return None

    return report.grid(load)


def read_catalog(
    library_dir: Path, encoder: Any, catalog: Catalog, category: str, cancel: CancelToken
) -> Generator[Progress, None, None]:
    """Embed the descriptions of ``category`` the library has not read yet, with progress.

    :func:`~visuallens_app.lens.service.prepare` on the pool, with a store of its own: for a
    large catalog this takes minutes (stage ``"catalog"``), and the query lane's searches must
    not queue behind it. Cancellable between batches, keeping the batches done; for a category
    read before it yields nothing.
    """
    from visuallens_app.lens.pipeline import Recommender
    from visuallens_app.lens.service import prepare

    with open_store(library_dir) as store:
        yield from prepare(Recommender(store, encoder), catalog, category, cancel)


def recommend(  # noqa: PLR0917
    queries: QueryCache,
    library_dir: Path,
    encoder: Any,
    category: str,
    catalog: Catalog,
    k: int,
    retrieval_size: int,
    cancel: CancelToken,
) -> RecommendationView:
    """Rank the catalog's items of ``category`` for this library, with evidence and the grid.

    On the query lane, after :func:`read_catalog` has embedded the category's descriptions.
    """
    from visuallens_app.lens.service import LensOptions
    from visuallens_app.lens.service import recommend as lens_recommend

    state = queries.state(library_dir, encoder)
    report = lens_recommend(
        state.recommender, catalog, category, LensOptions(k=k, w=retrieval_size), cancel
    )
    cancel.check()
    thumbs = state.store.thumbnails
    return RecommendationView(report, _cards(report, thumbs), _grid(report, thumbs))


def rerank_view(
    vlm: Any, library_dir: Path, view: RecommendationView, cancel: CancelToken, *, caption: bool
) -> RecommendationView:
    """``view``'s cards in the vision-language model's order (the paper's re-ranker).

    With ``caption`` (the captions feature uses this same model) the profile photos without a
    caption are captioned first and cached, as ``visuallens recommend`` does; the model sees the
    grid already drawn. It runs on the model's lane, so the store is opened here.
    """
    from visuallens_app.lens.rerank import MLLMReranker
    from visuallens_app.lens.service import with_vlm
    from visuallens_app.vlm.captions import VlmCaptioner

    if not view.cards:
        return view
    with open_store(library_dir) as store:
        report = with_vlm(
            view.report,
            captioner=VlmCaptioner(vlm) if caption else None,
            reranker=MLLMReranker(vlm),
            db=store.db,
            grid=view.grid,
            cancel=cancel,
        )
        return RecommendationView(report, _cards(report, store.thumbnails), view.grid)


def caption_library(vlm: Any, library_dir: Path, cancel: CancelToken) -> Any:
    """The long job that captions every photo without a caption from this model yet."""
    from visuallens_app.lens.aspects import caption_photos
    from visuallens_app.vlm.captions import VlmCaptioner

    with open_store(library_dir) as store:
        return (yield from caption_photos(store, VlmCaptioner(vlm), cancel=cancel))
