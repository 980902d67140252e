"""Text -> photos and photo -> similar photos, over the vector store derived from the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import LibraryError, NotEnoughHistoryError
from visuallens_app.library.decode import DecodeError, decode_photo
from visuallens_app.library.paths import display_path
from visuallens_app.library.store import PhotoRecord, PhotoStore, encoder_key
from visuallens_app.models.base import Encoder

if TYPE_CHECKING:
    from visuallens_app.index.stores import VectorStore


@dataclass(frozen=True, slots=True)
class SearchHit:
    photo: PhotoRecord
    score: float

    def as_json(self) -> dict[str, object]:
        return {"path": display_path(self.photo.path), "score": round(self.score, 6)}


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
        self, query: NDArray[np.float32], k: int, exclude: set[int] | None
    ) -> list[SearchHit]:
        index = self.index()
        if len(index) == 0:
            raise NotEnoughHistoryError(
                "The library has no photos with this encoder any more: index a folder first."
            )
        ranked = index.search(query, k, exclude=exclude)[0]
        records = self.store.photos_by_id([pid for pid, _ in ranked])
        return [SearchHit(records[pid], score) for pid, score in ranked if pid in records]

    def text(self, query: str, k: int = 20) -> list[SearchHit]:
        """Photos best matching a text query, best first."""
        if not query.strip():
            raise LibraryError("The search text is empty.")
        return self._hits(self.encoder.encode_texts([query]), k, None)

    def similar(self, image: Path, k: int = 20) -> list[SearchHit]:
        """Photos most like ``image``; an indexed photo uses its stored vector and is left out."""
        known = self.store.photo_by_path(image)
        if known is not None:
            vector = self.store.vector_for_hash(known.content_hash, self.encoder.id)
            if vector is not None:
                return self._hits(vector[None, :], k, {known.id})
        try:
            decoded = decode_photo(image, target=self.encoder.input_size)
        except DecodeError as err:
            raise LibraryError(f"Cannot read {display_path(image)}: {err}.") from err
        return self._hits(self.encoder.encode_images([decoded.image]), k, None)
