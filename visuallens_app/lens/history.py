"""The user's photo history as the lens sees it, and the lens's derived caches in the store.

A :class:`History` is a snapshot of every indexed photo that has a vector from one encoder: ids,
paths, content hashes, capture times and the (n, d) matrix. Every lens stage is a function over
it, so the stages run on a real library, on a benchmark user's history, or on a test's fake
vectors alike.

The lens also caches what it derives from an encoder (text embeddings of the aspect vocabulary,
prompts and catalog items; per-photo top aspects) or a captioning model (per-photo captions) in
the store's SQLite database, in tables that :func:`ensure_lens_tables` creates idempotently.
They are caches: deleting them costs time only.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app._sqlite_utils import Migrations
from visuallens_app.library.store import apply_migrations
from visuallens_app.models.base import Encoder

if TYPE_CHECKING:
    from visuallens_app.library.store import PhotoStore

#: Table names, kept in one place so ``ensure_lens_tables`` and the readers agree.
TEXT_VECTORS = "lens_text_vectors"
ITEM_VECTORS = "lens_item_vectors"
PHOTO_ASPECTS = "lens_photo_aspects"
PHOTO_CAPTIONS = "lens_photo_captions"


@dataclass(frozen=True, eq=False)
class History:
    """A user's photos with their vectors from one encoder, row-aligned.

    ``vectors`` rows are L2-normalised, so a matrix product is a table of cosines.
    ``taken_at`` holds ISO capture times where the photo had them (EXIF), for burst detection.
    ``confidence`` and ``document`` are the encoder's classifier signals per photo
    (:class:`~visuallens_app.models.base.PhotoSignals`), NaN where unknown (CLIP, or vectors
    indexed before the store kept them); None given means all unknown.
    """

    ids: NDArray[np.int64]
    paths: tuple[Path, ...]
    vectors: NDArray[np.float32]
    content_hashes: tuple[str, ...]
    taken_at: tuple[str | None, ...]
    confidence: NDArray[np.float32] = None  # type: ignore[assignment]
    document: NDArray[np.float32] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("confidence", "document"):
            value = getattr(self, name)
            array = (
                np.full(n, np.nan, np.float32)
                if value is None
                else np.asarray(value, dtype=np.float32).reshape(-1)
            )
            if len(array) != n:
                raise ValueError(f"{name} must have one value per photo ({n}), got {len(array)}")
            object.__setattr__(self, name, array)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise ValueError(f"vectors must be ({n}, d), got {self.vectors.shape}")
        if not (len(self.paths) == len(self.content_hashes) == len(self.taken_at) == n):
            raise ValueError("ids, paths, content_hashes and taken_at must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def from_store(cls, store: PhotoStore, encoder_id: str) -> History:
        """Every photo in ``store`` with a vector from ``encoder_id``, in photo-id order."""
        ids, matrix = store.vectors(encoder_id)
        signal_ids, signals = store.photo_signals(encoder_id)
        by_id = dict(zip(signal_ids.tolist(), signals, strict=True))
        unknown = np.full(2, np.nan, np.float32)
        records = store.photos_by_id([int(i) for i in ids])
        # A photo deleted between the reads is simply left out.
        keep = np.fromiter((int(i) in records for i in ids), dtype=bool, count=len(ids))
        ids, matrix = ids[keep], matrix[keep]
        rows = [records[int(i)] for i in ids]
        found = np.array([by_id.get(int(i), unknown) for i in ids], np.float32).reshape(-1, 2)
        return cls(
            ids=ids.astype(np.int64, copy=False),
            paths=tuple(r.path for r in rows),
            vectors=np.ascontiguousarray(matrix, dtype=np.float32),
            content_hashes=tuple(r.content_hash for r in rows),
            taken_at=tuple(r.taken_at for r in rows),
            confidence=found[:, 0],
            document=found[:, 1],
        )

    @classmethod
    def from_arrays(
        cls,
        vectors: NDArray[np.floating[Any]],
        *,
        ids: Sequence[int] | NDArray[np.int64] | None = None,
        paths: Sequence[Path | str] | None = None,
        content_hashes: Sequence[str] | None = None,
        taken_at: Sequence[str | None] | None = None,
        confidence: Sequence[float] | NDArray[np.floating[Any]] | None = None,
        document: Sequence[float] | NDArray[np.floating[Any]] | None = None,
    ) -> History:
        """A history from plain arrays (benchmarks, evaluation sets, tests).

        Missing ids count from 0, missing paths are ``photo-<id>``, missing hashes are derived
        from the vector bytes (so identical vectors share a cache row), missing times are None,
        missing signals NaN (unknown).
        Rows are re-normalised, because every stage relies on cosine = inner product.
        """
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValueError(f"vectors must be a 2-d (n, d) array, got shape {matrix.shape}")
        n = matrix.shape[0]
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)
        id_array = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        path_tuple = (
            tuple(Path(f"photo-{int(i)}") for i in id_array)
            if paths is None
            else tuple(Path(p) for p in paths)
        )
        hashes = (
            tuple(hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in matrix)
            if content_hashes is None
            else tuple(content_hashes)
        )
        times = (None,) * n if taken_at is None else tuple(taken_at)
        return cls(
            id_array,
            path_tuple,
            matrix,
            hashes,
            times,
            np.full(n, np.nan, np.float32)
            if confidence is None
            else np.asarray(confidence, np.float32),
            np.full(n, np.nan, np.float32)
            if document is None
            else np.asarray(document, np.float32),
        )

    def subset(self, indices: Sequence[int] | NDArray[np.integer[Any]]) -> History:
        """The photos at ``indices`` (history positions), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return History(
            ids=self.ids[idx],
            paths=tuple(self.paths[i] for i in idx),
            vectors=self.vectors[idx],
            content_hashes=tuple(self.content_hashes[i] for i in idx),
            taken_at=tuple(self.taken_at[i] for i in idx),
            confidence=self.confidence[idx],
            document=self.document[idx],
        )


# -- caches in the store ----------------------------------------------------------------------


lens_migrations = Migrations("visuallens.lens")
_migrated: set[tuple[int, str]] = set()


def ensure_lens_tables(db: Any) -> None:
    """Apply the lens cache schema (versioned migrations) once per database per process.

    ``db`` is the store's ``sqlite_utils.Database``. After the first call for a database this
    is a set lookup: no DDL runs on the read paths that call it.
    """
    key = (id(db.conn), str(db.execute("PRAGMA database_list").fetchone()[2]))
    if key not in _migrated:
        apply_migrations(db, lens_migrations)
        _migrated.add(key)


@lens_migrations()
def m001_lens_caches(db: Any) -> None:
    """Caches keyed by encoder id everywhere: vectors of two encoders are never comparable."""
    db[TEXT_VECTORS].create(
        {"encoder_id": str, "text_hash": str, "vector": bytes},
        pk=("encoder_id", "text_hash"),
        if_not_exists=True,
    )
    db[ITEM_VECTORS].create(
        {
            "item_id": str,
            "item_hash": str,
            "encoder_id": str,
            "text_vector": bytes,
            "image_vector": bytes,  # empty when the item has no readable image
            "n_images": int,
        },
        pk=("item_id", "item_hash", "encoder_id"),
        if_not_exists=True,
    )
    db[PHOTO_ASPECTS].create(
        {
            "content_hash": str,
            "encoder_id": str,
            "vocab_hash": str,
            "stats_key": str,  # which library statistics normalised these scores
            "terms": bytes,  # int32 vocabulary indices, best first
            "scores": bytes,  # float32 normalised scores, same order
        },
        pk=("content_hash", "encoder_id", "vocab_hash"),
        if_not_exists=True,  # libraries made before this migration existed
    )


@lens_migrations()
def m002_photo_captions(db: Any) -> None:
    """Captions keyed by content hash + captioner id: a moved photo keeps its caption, and a
    different (or replaced) captioning model writes its own rows instead of mixing in."""
    db[PHOTO_CAPTIONS].create(
        {"content_hash": str, "captioner_id": str, "caption": str},
        pk=("content_hash", "captioner_id"),
        if_not_exists=True,
    )


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# In-process memo of text embeddings, so an evaluation run over thousands of users embeds the
# aspect vocabulary and the prompts once, with or without a store. Bounded: the vocabulary is
# the big entry and a session uses one or two encoders.
_MEMO_LIMIT = 200_000
_memo: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
_memo_lock = threading.Lock()


def encode_texts_cached(
    encoder: Encoder, texts: Sequence[str], db: Any | None = None, batch_size: int = 256
) -> NDArray[np.float32]:
    """``encoder.encode_texts(texts)``, served from memory, then the store, then the encoder.

    Returns (len(texts), dim) float32 unit rows. Only texts seen nowhere are encoded, in
    batches, and written back to the store when one is given.
    """
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    with _memo_lock:
        for i, text in enumerate(texts):
            hit = _memo.get((encoder.id, text))
            if hit is None:
                missing.setdefault(text, []).append(i)
            else:
                out[i] = hit
    if missing and db is not None:
        ensure_lens_tables(db)
        keys = list(missing)
        by_hash = {text_hash(t): t for t in keys}
        hashes = list(by_hash)
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT text_hash, vector FROM {TEXT_VECTORS} "
                f"WHERE encoder_id = ? AND text_hash IN ({marks})",
                [encoder.id, *chunk],
            ).fetchall()
            for h, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape[0] != encoder.dim:
                    continue
                text = by_hash[h]
                for i in missing.pop(text):
                    out[i] = vector
                _remember(encoder.id, text, vector)
    if missing:
        # Similar lengths batched together: a batch is padded to its longest text, so 100,000
        # catalog descriptions of mixed lengths embed markedly faster sorted than in file order.
        todo = sorted(missing, key=len)
        fresh: list[NDArray[np.float32]] = []
        for start in range(0, len(todo), batch_size):
            fresh.append(np.asarray(encoder.encode_texts(todo[start : start + batch_size])))
        matrix = np.concatenate(fresh).astype(np.float32, copy=False)
        for text, vector in zip(todo, matrix, strict=True):
            for i in missing[text]:
                out[i] = vector
            _remember(encoder.id, text, vector)
        if db is not None:
            with db.atomic():
                db.conn.executemany(
                    f"INSERT OR REPLACE INTO {TEXT_VECTORS} (encoder_id, text_hash, vector) "
                    "VALUES (?, ?, ?)",
                    [
                        (encoder.id, text_hash(t), v.astype(np.float32).tobytes())
                        for t, v in zip(todo, matrix, strict=True)
                    ],
                )
    return out


def _remember(encoder_id: str, text: str, vector: NDArray[np.float32]) -> None:
    with _memo_lock:
        _memo[(encoder_id, text)] = np.array(vector, dtype=np.float32)
        while len(_memo) > _MEMO_LIMIT:
            _memo.popitem(last=False)


def standardise(x: NDArray[np.floating[Any]], axis: int = -1) -> NDArray[np.float32]:
    """z-scores along ``axis``; a constant row becomes zeros instead of dividing by zero.

    Used wherever two scores on different scales are mixed (prototype vs aspect scores, the
    three matching components), so a weight means the same thing for every encoder.
    """
    arr = np.asarray(x, dtype=np.float32)
    mean = arr.mean(axis=axis, keepdims=True)
    std = arr.std(axis=axis, keepdims=True)
    out: NDArray[np.float32] = ((arr - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    return out
