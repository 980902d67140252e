"""Aspect words per photo, zero-shot from the active encoder, and optional captions.

The paper gets aspect words ("dome, balcony, neon, spicy") from a VLM. Here each photo's vector
is compared with the embedded aspect vocabulary (resources/aspects.txt). Raw cosines are a poor
ranking: ConSE and CLIP similarities carry strong per-term biases, so generic words ("object",
"indoor") top every photo. Each term's cosine is therefore standardised across the library
(z-score, with the spread floored and shrunk towards a prior for small libraries), so a word is
a photo's aspect when it fits *this* photo unusually well.

Captions (<= 30 words, as in the paper) come from the configured vision-language model
(:class:`visuallens_app.vlm.captions.VlmCaptioner`) when the user has one. They are cached in
the store by content hash + captioner id and computed lazily, for the photos a question
retrieved (:func:`history_captions`), or for the whole library by the long job
:func:`caption_photos`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.errors import LibraryError
from visuallens_app.jobs import CancelToken, Job, ProgressMeter
from visuallens_app.lens.history import (
    PHOTO_ASPECTS,
    PHOTO_CAPTIONS,
    History,
    encode_texts_cached,
    ensure_lens_tables,
)
from visuallens_app.library.paths import normalise_root
from visuallens_app.models.base import Encoder
from visuallens_app.vlm.captions import MAX_CAPTION_WORDS

if TYPE_CHECKING:
    from visuallens_app.library.store import PhotoStore

#: Aspects kept per photo in the store (the refinement counts occurrences among these).
PHOTO_ASPECTS_K = 8
#: Pseudo-count of the prior in the per-term statistics: a library of this many photos weighs as
#: much as the prior, so a five-photo library still gets sensible (not degenerate) z-scores.
PRIOR_PHOTOS = 8.0


@runtime_checkable
class Vocabulary(Protocol):
    """Anything with an ordered list of aspect terms (the shipped ``AspectVocabulary`` has one)."""

    @property
    def terms(self) -> Sequence[str]: ...


def vocabulary_terms(vocabulary: Vocabulary | Sequence[str]) -> tuple[str, ...]:
    if isinstance(vocabulary, str):
        raise TypeError("a vocabulary is a sequence of terms, not one string")
    terms = vocabulary.terms if isinstance(vocabulary, Vocabulary) else vocabulary
    return tuple(str(t) for t in terms)


def vocabulary_hash(terms: Sequence[str]) -> str:
    """Changes whenever the vocabulary's terms or their order change (cache key)."""
    return hashlib.blake2b("\n".join(terms).encode("utf-8"), digest_size=8).hexdigest()


#: Bump when the way per-photo aspect scores are computed changes: cached rows keyed by an older
#: version are then recomputed instead of silently reused after an upgrade.
ASPECT_SCORING_VERSION = 2


@dataclass(frozen=True, eq=False)
class AspectSpace:
    """The vocabulary embedded by one encoder, with per-term statistics over one library.

    ``normalised(x) = (x @ vectors.T - mean) / scale``. Because that is affine in ``x``, a
    weighted sum of normalised term scores is one cosine against a single query vector minus
    a constant (:meth:`linear_query`), which is what keeps refinement over 10,000 photos fast.
    """

    terms: tuple[str, ...]
    vectors: NDArray[np.float32]  # (V, d) unit rows
    mean: NDArray[np.float32]  # (V,)
    scale: NDArray[np.float32]  # (V,)
    encoder_id: str
    vocab_hash: str
    stats_key: str

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def build(
        cls,
        vocabulary: Vocabulary | Sequence[str],
        encoder: Encoder,
        library: NDArray[np.float32] | History,
        *,
        db: Any | None = None,
    ) -> AspectSpace:
        """Embed the vocabulary (cached per encoder) and measure each term over ``library``."""
        terms = vocabulary_terms(vocabulary)
        if not terms:
            raise ValueError("the aspect vocabulary is empty")
        vectors = encode_texts_cached(encoder, terms, db)
        photos = library.vectors if isinstance(library, History) else library
        mean, scale = term_statistics(vectors, photos)
        key = hashlib.blake2b(
            f"v{ASPECT_SCORING_VERSION}".encode() + mean.tobytes() + scale.tobytes(),
            digest_size=8,
        ).hexdigest()
        return cls(terms, vectors, mean, scale, encoder.id, vocabulary_hash(terms), key)

    def normalised(self, photo_vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, V) per-term standardised scores of ``photo_vectors`` (n, d)."""
        raw = np.atleast_2d(photo_vectors) @ self.vectors.T
        return ((raw - self.mean) / self.scale).astype(np.float32, copy=False)

    def top(
        self, photo_vectors: NDArray[np.float32], k: int = PHOTO_ASPECTS_K, block: int = 4096
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The ``k`` best terms per photo, best first: (indices (n, k), scores (n, k))."""
        x = np.atleast_2d(photo_vectors)
        k = min(k, len(self.terms))
        idx = np.zeros((len(x), k), dtype=np.int32)
        val = np.zeros((len(x), k), dtype=np.float32)
        for start in range(0, len(x), block):
            z = self.normalised(x[start : start + block])
            part = np.argpartition(-z, k - 1, axis=1)[:, :k]
            part_val = np.take_along_axis(z, part, axis=1)
            order = np.argsort(-part_val, axis=1, kind="stable")
            idx[start : start + block] = np.take_along_axis(part, order, axis=1)
            val[start : start + block] = np.take_along_axis(part_val, order, axis=1)
        return idx, val

    def linear_query(self, weights: NDArray[np.float32]) -> tuple[NDArray[np.float32], float]:
        """(q, c) with ``normalised(x) @ weights == x @ q - c`` for any photo vectors x."""
        ws = (weights / self.scale).astype(np.float32)
        return (ws @ self.vectors).astype(np.float32), float(ws @ self.mean)


def term_statistics(
    term_vectors: NDArray[np.float32], photos: NDArray[np.float32], block: int = 4096
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-term mean and spread of cosine over ``photos``, shrunk towards a prior.

    The prior mean of a term is its cosine with the centroid of the vocabulary (how generic the
    word is), its prior spread the spread of term-to-term cosines; ``PRIOR_PHOTOS`` pseudo-photos
    of it are mixed in. The spread is then floored at the median term's, so a term that barely
    varies cannot turn noise into a huge z-score.
    """
    centroid = term_vectors.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    prior_mean = term_vectors @ centroid
    prior_var = float(np.var(term_vectors @ term_vectors.T))
    n = len(photos)
    total = np.zeros(len(term_vectors), dtype=np.float64)
    total_sq = np.zeros(len(term_vectors), dtype=np.float64)
    for start in range(0, n, block):
        sims = (photos[start : start + block] @ term_vectors.T).astype(np.float64)
        total += sims.sum(axis=0)
        total_sq += (sims * sims).sum(axis=0)
    lib_mean = total / max(n, 1)
    lib_var = np.maximum(total_sq / max(n, 1) - lib_mean**2, 0.0)
    mean = (n * lib_mean + PRIOR_PHOTOS * prior_mean) / (n + PRIOR_PHOTOS)
    var = (n * lib_var + PRIOR_PHOTOS * prior_var) / (n + PRIOR_PHOTOS)
    spread = np.sqrt(var)
    spread = np.maximum(spread, np.median(spread))
    # Rounded so that a library that grew by a few photos keeps the same cache key.
    return (
        np.round(mean, 3).astype(np.float32),
        np.maximum(np.round(spread, 3), 1e-3).astype(np.float32),
    )


@dataclass(frozen=True, eq=False)
class LibraryAspects:
    """Every history photo's top aspects, row-aligned with the :class:`History`."""

    space: AspectSpace
    top_terms: NDArray[np.int32]  # (n, k) vocabulary indices, best first
    top_scores: NDArray[np.float32]  # (n, k)

    def __len__(self) -> int:
        return len(self.top_terms)

    def counts(
        self,
        rows: NDArray[np.integer[Any]] | None = None,
        weights: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float64]:
        """(V,) how many photos (all, or those at ``rows``) have each term among their top k.

        With ``weights`` (one per row), each photo counts its weight instead of 1.
        """
        terms = self.top_terms if rows is None else self.top_terms[np.asarray(rows)]
        per_entry = None
        if weights is not None:
            per_entry = np.repeat(np.asarray(weights, dtype=np.float64), terms.shape[1])
        counts: NDArray[np.float64] = np.bincount(
            terms.ravel(), weights=per_entry, minlength=len(self.space)
        ).astype(np.float64)
        return counts

    def for_photo(self, row: int) -> list[tuple[str, float]]:
        return [
            (self.space.terms[int(t)], float(s))
            for t, s in zip(self.top_terms[row], self.top_scores[row], strict=True)
        ]


def library_aspects(
    history: History,
    space: AspectSpace,
    *,
    k: int = PHOTO_ASPECTS_K,
    db: Any | None = None,
) -> LibraryAspects:
    """Top ``k`` aspects of every photo, read from the store where already computed.

    Rows are keyed by content hash + encoder id + vocabulary hash and record which library
    statistics normalised them; rows from other statistics (the library changed a lot) are
    recomputed and replaced.
    """
    n = len(history)
    k = min(k, len(space))
    idx = np.zeros((n, k), dtype=np.int32)
    val = np.zeros((n, k), dtype=np.float32)
    todo = np.ones(n, dtype=bool)
    if db is not None and n:
        ensure_lens_tables(db)
        rows = db.execute(
            f"SELECT content_hash, terms, scores FROM {PHOTO_ASPECTS} "
            "WHERE encoder_id = ? AND vocab_hash = ? AND stats_key = ?",
            [space.encoder_id, space.vocab_hash, space.stats_key],
        ).fetchall()
        stored = {h: (t, s) for h, t, s in rows}
        for i, content_hash in enumerate(history.content_hashes):
            hit = stored.get(content_hash)
            if hit is None:
                continue
            terms = np.frombuffer(hit[0], dtype=np.int32)
            if len(terms) < k:
                continue
            idx[i] = terms[:k]
            val[i] = np.frombuffer(hit[1], dtype=np.float32)[:k]
            todo[i] = False
    missing = np.flatnonzero(todo)
    if len(missing):
        new_idx, new_val = space.top(history.vectors[missing], k)
        idx[missing], val[missing] = new_idx, new_val
        if db is not None:
            with db.atomic():
                db.conn.executemany(
                    f"INSERT OR REPLACE INTO {PHOTO_ASPECTS} "
                    "(content_hash, encoder_id, vocab_hash, stats_key, terms, scores) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            history.content_hashes[i],
                            space.encoder_id,
                            space.vocab_hash,
                            space.stats_key,
                            new_idx[j].tobytes(),
                            new_val[j].tobytes(),
                        )
                        for j, i in enumerate(missing)
                    ],
                )
    return LibraryAspects(space, idx, val)


def aspects_for_photo(
    photo: Path | NDArray[np.float32],
    encoder: Encoder,
    vocabulary: Vocabulary | Sequence[str],
    *,
    store: PhotoStore | None = None,
    k: int = 10,
) -> list[tuple[str, float]]:
    """The ``k`` aspect words that describe one photo best, with their normalised scores.

    ``photo`` is an image file (its stored vector is used when the store has indexed it) or a
    vector from ``encoder``. With a store, terms are standardised over that library, otherwise
    over the prior alone (see :func:`term_statistics`).
    """
    db = store.db if store is not None else None
    if isinstance(photo, np.ndarray):
        vector = np.asarray(photo, dtype=np.float32).reshape(1, -1)
    else:
        vector = _photo_vector(Path(photo), encoder, store)
    library = (
        History.from_store(store, encoder.id).vectors
        if store is not None
        else np.zeros((0, encoder.dim), np.float32)
    )
    space = AspectSpace.build(vocabulary, encoder, library, db=db)
    idx, val = space.top(vector, k)
    return [(space.terms[int(t)], float(s)) for t, s in zip(idx[0], val[0], strict=True)]


def _photo_vector(path: Path, encoder: Encoder, store: PhotoStore | None) -> NDArray[np.float32]:
    from visuallens_app.library.decode import DecodeError, decode_photo
    from visuallens_app.library.paths import display_path

    if store is not None:
        known = store.photo_by_path(normalise_root(path))
        if known is not None:
            stored = store.vector_for_hash(known.content_hash, encoder.id)
            if stored is not None:
                return stored.reshape(1, -1)
    try:
        decoded = decode_photo(path, target=encoder.input_size)
    except DecodeError as err:
        raise LibraryError(f"Cannot read {display_path(path)}: {err}.") from err
    return np.asarray(encoder.encode_images([decoded.image]), dtype=np.float32)


# -- captions ---------------------------------------------------------------------------------

#: Photos are decoded to about this side for captioning; captioners resize to 224-384 px.
CAPTION_DECODE_SIDE = 384


@runtime_checkable
class Captioner(Protocol):
    """Writes a short caption per image (the paper's <= 30-word captions).

    ``id`` is stable across runs and changes whenever the captions would (another model, or new
    weights in the same folder): stored captions are keyed by it.
    """

    @property
    def id(self) -> str: ...

    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...


def cap_words(text: str, limit: int = MAX_CAPTION_WORDS) -> str:
    """``text`` on one line, cut to its first ``limit`` words."""
    return " ".join(str(text).split()[:limit])


def stored_captions(db: Any, captioner_id: str, content_hashes: Sequence[str]) -> dict[str, str]:
    """Captions already in the store for ``content_hashes`` (hash -> caption)."""
    ensure_lens_tables(db)
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(content_hashes))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT content_hash, caption FROM {PHOTO_CAPTIONS} "
            f"WHERE captioner_id = ? AND content_hash IN ({marks})",
            [captioner_id, *chunk],
        ).fetchall()
        found.update({str(h): str(c) for h, c in rows})
    return found


def _store_captions(db: Any, captioner_id: str, captions: Mapping[str, str]) -> None:
    if not captions:
        return
    ensure_lens_tables(db)
    with db.atomic():
        db.conn.executemany(
            f"INSERT OR REPLACE INTO {PHOTO_CAPTIONS} (content_hash, captioner_id, caption) "
            "VALUES (?, ?, ?)",
            [(h, captioner_id, c) for h, c in captions.items()],
        )


def _caption_files(captioner: Captioner, paths: Sequence[Path]) -> tuple[list[int], list[str]]:
    """Captions of the readable files among ``paths``: (their positions, their captions)."""
    from visuallens_app.library.decode import DecodeError, decode_photo

    images: list[Image.Image] = []
    positions: list[int] = []
    for position, path in enumerate(paths):
        try:
            images.append(decode_photo(path, target=CAPTION_DECODE_SIDE).image)
        except DecodeError:
            continue  # an unreadable photo has no caption; the lens carries on without it
        positions.append(position)
    captions = [cap_words(c) for c in captioner.caption(images)] if images else []
    return positions, captions


def history_captions(
    history: History,
    rows: Sequence[int] | NDArray[np.integer[Any]],
    captioner: Captioner,
    *,
    db: Any | None = None,
    batch_size: int = 8,
    cancel: CancelToken | None = None,
) -> dict[int, str]:
    """Captions of the history photos at ``rows`` (history index -> caption), lazily.

    Captions already in the store are read; only the others are captioned (in batches, each
    written back in one transaction), so asking again for the same photos runs no model.
    Photos whose file cannot be read get no entry.
    """
    indices = [int(i) for i in rows]
    by_hash: dict[str, str] = {}
    if db is not None and indices:
        by_hash = stored_captions(db, captioner.id, [history.content_hashes[i] for i in indices])
    todo = list(dict.fromkeys(history.content_hashes[i] for i in indices) - by_hash.keys())
    if todo:
        first_path: dict[str, Path] = {}
        for i in indices:
            first_path.setdefault(history.content_hashes[i], history.paths[i])
        for start in range(0, len(todo), max(1, batch_size)):
            if cancel is not None:
                cancel.check()
            chunk = todo[start : start + max(1, batch_size)]
            positions, captions = _caption_files(captioner, [first_path[h] for h in chunk])
            fresh = {chunk[p]: c for p, c in zip(positions, captions, strict=True)}
            if db is not None:
                _store_captions(db, captioner.id, fresh)
            by_hash.update(fresh)
    return {i: by_hash[h] for i in indices if (h := history.content_hashes[i]) in by_hash}


def caption_photos(
    store: PhotoStore,
    captioner: Captioner,
    *,
    cancel: CancelToken | None = None,
    batch_size: int = 8,
) -> Job[int]:
    """Caption every photo of the library that has no caption from ``captioner`` yet.

    A long job for the GUI and the CLI (a generator of Progress records, stage "caption");
    each batch is written in one transaction, so a cancelled run keeps what it finished and a
    rerun continues from there. Returns how many photos were captioned.
    """
    cancel = cancel or CancelToken()
    first_path: dict[str, Path] = {}
    for record in store.list_photos(newest_first=False):
        if not record.offline:
            first_path.setdefault(record.content_hash, record.path)
    done = stored_captions(store.db, captioner.id, list(first_path))
    todo = [h for h in first_path if h not in done]
    meter = ProgressMeter(len(todo), "caption", unit="captions")
    yield meter.progress(f"Captioning {len(todo)} photo(s)")
    captioned = 0
    step = max(1, batch_size)
    for start in range(0, len(todo), step):
        cancel.check()
        chunk = todo[start : start + step]
        positions, captions = _caption_files(captioner, [first_path[h] for h in chunk])
        _store_captions(
            store.db, captioner.id, {chunk[p]: c for p, c in zip(positions, captions, strict=True)}
        )
        captioned += len(positions)
        meter.advance(len(chunk))
        if meter.due():
            yield meter.progress(f"Captioned {captioned} photo(s)")
    yield meter.progress(f"Captioned {captioned} photo(s)")
    return captioned
