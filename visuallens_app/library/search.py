"""Text -> photos and photo -> similar photos, over the vector store derived from the store."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import LibraryError, NotEnoughHistoryError, VisualLensError
from visuallens_app.library.decode import DecodeError, decode_photo
from visuallens_app.library.paths import display_path
from visuallens_app.library.store import PhotoRecord, PhotoStore, encoder_key
from visuallens_app.models.base import Encoder

if TYPE_CHECKING:
    from visuallens_app.index.stores import VectorStore


#: A hit is a *match* when the query is closer to the photo than the photo's own cosines to a
#: null set are, by this many of their standard deviations: for a text query the null set is
#: every 4th word of the aspect vocabulary (words about anything), for a photo a spread sample
#: of the library's own photos. Standardising per photo is what keeps hubs (photos close to
#: everything, which float to the top of every query) below the line, and it is in units of
#: the encoder's own spread, so it holds for any encoder. Measured on 23 sample images and 5
#: copies by ``python -m benchmarks.search_cutoff [--z Z]`` (embedded encoder, conse-v2): text
#: at 2.0 / 2.5 keeps 9 / 7 of 13 wanted photos above the line and 17 / 7 of 547 others; photo
#: queries at 2.5 find all 5 copies, with 1 of 130 others.
TEXT_MATCH_Z = 2.0
IMAGE_MATCH_Z = 2.5
#: Hits ranked before the cut-off is applied: matches lower than this in the raw order are
#: not looked for (a query's matches are near its top).
POOL = 200
#: Library photos in the null set of a photo query.
REFERENCE_PHOTOS = 512
#: Cosine at which two vectors are the same photo (left out of each other's null set).
SAME_PHOTO = 0.9999


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A photo and its cosine to the query; ``match`` False below the calibrated cut-off."""

    photo: PhotoRecord
    score: float
    match: bool = True

    def as_json(self) -> dict[str, object]:
        return {
            "path": display_path(self.photo.path),
            "score": round(self.score, 6),
            "match": self.match,
        }


def null_text_file(encoder_id: str, words: Sequence[str]) -> Path:
    """Where an encoder's embedded text null set is kept (keyed by the encoder and the words)."""
    from visuallens_app import settings

    key = hashlib.sha256(json.dumps([encoder_id, list(words)]).encode()).hexdigest()[:24]
    return settings.cache_dir() / "encoders" / "search-null" / f"{key}.npy"


def _read_null(file: Path, n: int, dim: int) -> NDArray[np.float32] | None:
    """The cached null set, or None when it is missing, damaged or of another shape."""
    try:
        vectors = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if vectors.shape != (n, dim) or vectors.dtype != np.float32:
        return None
    out: NDArray[np.float32] = vectors
    return out


def _write_null(file: Path, vectors: NDArray[np.float32]) -> None:
    """Keep the null set for the next library (best effort: a cache)."""
    from visuallens_app.index.cache_files import write_atomic

    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(file, buffer.getvalue())
    except OSError:
        pass


def standout(
    scores: NDArray[np.float32], photos: NDArray[np.float32], null: NDArray[np.float32]
) -> NDArray[np.float32]:
    """How far each score stands out from its photo's cosines to ``null``, in their std devs.

    ``scores`` (k,) are the query's cosines to ``photos`` (k, d); ``null`` (n, d) are unit
    vectors of things the query is not about.
    """
    if len(null) < 2 or len(photos) == 0:
        return np.full(len(scores), np.inf, dtype=np.float32)
    sims = (photos @ null.T).astype(np.float64)
    # A photo (or an exact copy) in its own null set says nothing about what it resembles.
    sims[sims >= SAME_PHOTO] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row left empty: all-nan
        mean, std = np.nanmean(sims, axis=1), np.nanstd(sims, axis=1)
    out = (scores - np.nan_to_num(mean, nan=0.0)) / np.maximum(np.nan_to_num(std, nan=0.0), 1e-6)
    result: NDArray[np.float32] = out.astype(np.float32)
    return result


def matches_first(hits: list[SearchHit]) -> list[SearchHit]:
    """The matches best first, then the weaker matches best first (the list a user reads)."""
    return [h for h in hits if h.match] + [h for h in hits if not h.match]


def index_name(encoder_id: str) -> str:
    """One FAISS file per encoder, so switching encoder never mixes spaces."""
    return "photos-" + encoder_key(encoder_id)


class PhotoSearch:
    """Searches one store with one encoder; the index is rebuilt only when the store changed."""

    def __init__(
        self, store: PhotoStore, encoder: Encoder, *, vector_store: str | None = None
    ) -> None:
        """``vector_store``: ``faiss``, a Qdrant URL or ``local:DIR``; None: the settings'."""
        self.store = store
        self.encoder = encoder
        self._vector_store = vector_store
        self._index: VectorStore | None = None
        self._text_null: NDArray[np.float32] | None = None
        self._photo_null: tuple[str, NDArray[np.float32]] | None = None

    def index(self) -> VectorStore:
        from visuallens_app.index.stores import StoreTarget, open_vector_store
        from visuallens_app.settings import Settings

        if self.store.encoder_dim(self.encoder.id) is None:
            raise NotEnoughHistoryError(
                "No photos are indexed with this encoder yet: run `visuallens index FOLDER` first."
            )
        fingerprint = self.store.fingerprint(self.encoder.id)
        if self._index is not None and self._index.fingerprint == fingerprint:
            return self._index
        spec = self._vector_store or Settings.load().vector_store
        target = StoreTarget(
            self.store.library_id(),
            self.encoder.id,
            self.store.index_dir,
            index_name(self.encoder.id),
        )
        self._index = open_vector_store(
            spec, target, fingerprint=fingerprint, fetch=lambda: self.store.vectors(self.encoder.id)
        )
        return self._index

    def _hits(
        self,
        query: NDArray[np.float32],
        k: int,
        exclude: set[int] | None,
        null: NDArray[np.float32],
        threshold: float,
    ) -> list[SearchHit]:
        index = self.index()
        if len(index) == 0:
            raise NotEnoughHistoryError(
                "The library has no photos with this encoder any more: index a folder first."
            )
        ranked = index.search(query, max(k, POOL), exclude=exclude)[0]
        records = self.store.photos_by_id([pid for pid, _ in ranked])
        ranked = [(pid, score) for pid, score in ranked if pid in records]
        vectors = self._photo_vectors([pid for pid, _ in ranked])
        z = standout(np.array([s for _, s in ranked], dtype=np.float32), vectors, null)
        hits = [
            SearchHit(records[pid], score, bool(zi >= threshold))
            for (pid, score), zi in zip(ranked, z, strict=True)
        ]
        return matches_first(hits)[:k]

    def _photo_vectors(self, ids: list[int]) -> NDArray[np.float32]:
        """The stored vectors of photos ``ids``, row-aligned (one query per 500)."""
        dim = self.store.encoder_dim(self.encoder.id) or 0
        found: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                self.store.db.execute(
                    "SELECT p.id, v.vector FROM photos p JOIN vectors v "
                    "ON v.content_hash = p.content_hash "
                    f"WHERE v.encoder_id = ? AND p.id IN ({marks})",
                    [self.encoder.id, *chunk],
                ).fetchall()
            )
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for row, pid in enumerate(ids):
            if pid in found:
                out[row] = np.frombuffer(found[pid], dtype=np.float32)
        return out

    def _null_texts(self) -> NDArray[np.float32]:
        """The text null set: every 4th aspect word, embedded once per encoder.

        It is the encoder's, not the library's: kept in the cache directory
        (:func:`null_text_file`), so a new library's first search does not embed some 200
        words again (seconds with CLIP's text tower), and in the store's text cache too.
        """
        if self._text_null is None:
            from visuallens_app.lens.history import encode_texts_cached
            from visuallens_app.lens.vocabulary import AspectVocabulary

            try:
                words = AspectVocabulary.load().terms[::4]
            except (OSError, VisualLensError):  # no vocabulary: every hit counts as a match
                words = ()
            file = null_text_file(self.encoder.id, words)
            self._text_null = _read_null(file, len(words), self.encoder.dim)
            if self._text_null is None:
                self._text_null = encode_texts_cached(self.encoder, list(words), self.store.db)
                _write_null(file, self._text_null)
        return self._text_null

    def _null_photos(self, query: NDArray[np.float32]) -> NDArray[np.float32]:
        """The photo null set: up to :data:`REFERENCE_PHOTOS` library photos spread over ids,
        less the query photo itself."""
        fingerprint = self.store.fingerprint(self.encoder.id)
        if self._photo_null is None or self._photo_null[0] != fingerprint:
            low, high = self.store.db.execute("SELECT MIN(id), MAX(id) FROM photos").fetchone()
            ids: list[int] = []
            if low is not None:
                ids = sorted({int(i) for i in np.linspace(low, high, REFERENCE_PHOTOS)})
            vectors = self._photo_vectors(ids)
            self._photo_null = (fingerprint, vectors[np.abs(vectors).sum(axis=1) > 0])
        null = self._photo_null[1]
        return null[null @ query < SAME_PHOTO]

    def text(self, query: str, k: int = 20) -> list[SearchHit]:
        """Photos best matching a text query: the matches best first, then the weaker ones."""
        if not query.strip():
            raise LibraryError("The search text is empty.")
        vector = self._text_vector(query)
        return self._hits(vector, k, None, self._null_texts(), TEXT_MATCH_Z)

    def _text_vector(self, query: str) -> NDArray[np.float32]:
        """(1, dim) embedding of ``query``: from the store's cache when this encoder embedded the
        same text before, so a repeated search loads no text model (issue 13)."""
        cached = self.store.query_vector(self.encoder.id, query)
        if cached is not None and cached.shape[0] == self.store.encoder_dim(self.encoder.id):
            return cached[None, :]
        vector = self.encoder.encode_texts([query])
        self.store.remember_query_vector(self.encoder.id, query, vector[0])
        return vector

    def similar(self, image: Path, k: int = 20) -> list[SearchHit]:
        """Photos most like ``image``; an indexed photo uses its stored vector and is left out."""
        known = self.store.photo_by_path(image)
        if known is not None:
            vector = self.store.vector_for_hash(known.content_hash, self.encoder.id)
            if vector is not None:
                null = self._null_photos(vector)
                return self._hits(vector[None, :], k, {known.id}, null, IMAGE_MATCH_Z)
        try:
            decoded = decode_photo(image, target=self.encoder.input_size)
        except DecodeError as err:
            raise LibraryError(f"Cannot read {display_path(image)}: {err}.") from err
        query = self.encoder.encode_images([decoded.image])
        return self._hits(query, k, None, self._null_photos(query[0]), IMAGE_MATCH_Z)
