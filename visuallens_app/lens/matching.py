"""Stage 3 of VisualLens without an MLLM: score each candidate against the user's profile.

Three components, each standardised across the candidates of one question before mixing, so a
weight means "how much this kind of evidence counts" whatever the encoder's cosine scale:

(a) profile: the mean vector of the retrieved photos vs the candidate's image and text vectors;
(b) aspects: the weighted aspect profile vs the candidate's description (embedding similarity,
    plus literal word overlap with its description and tags);
(c) evidence: the candidate vs its nearest retrieved photos (top-3 mean cosine), which lets one
    strongly matching photo count even when the average profile is diluted.

Candidate embeddings are computed once per encoder and cached in the store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from visuallens_app.jobs import CATALOG_STAGE, CancelToken, Job, ProgressMeter, run_to_end
from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.history import (
    ITEM_VECTORS,
    encode_texts_cached,
    ensure_lens_tables,
    standardise,
)
from visuallens_app.models.base import Encoder

#: Nearest retrieved photos averaged for the evidence component.
EVIDENCE_K = 3
#: Share of literal word overlap within the aspect component (the rest is embedding similarity).
LEXICAL_SHARE = 0.5
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@dataclass(frozen=True, slots=True)
class MatchWeights:
    """How much each matching component counts (components are standardised, so these compare).

    Defaults: the profile is the paper's signal and the most stable; evidence nearly as strong,
    because a few very close photos are often the clearest preference signal; aspects lower,
    since zero-shot aspect words are noisy. :func:`fit_match_weights` replaces them on a
    labelled split.
    """

    profile: float = 1.0
    aspects: float = 0.5
    evidence: float = 0.75

    def as_json(self) -> dict[str, float]:
        return {"profile": self.profile, "aspects": self.aspects, "evidence": self.evidence}


def match_weights_path() -> Path:
    """The shipped fitted weights (``resources/lens/match_weights.json``)."""
    from visuallens_app.settings import resources_dir

    return resources_dir() / "lens" / "match_weights.json"


def read_match_weights(path: Path) -> MatchWeights:
    """The weights in a file written by :func:`write_match_weights` (ValueError if malformed)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        weights = MatchWeights(
            float(data["profile"]), float(data["aspects"]), float(data["evidence"])
        )
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} holds no match weights: {err}") from err
    if min(weights.profile, weights.aspects, weights.evidence) < 0 or not any(
        (weights.profile, weights.aspects, weights.evidence)
    ):
        raise ValueError(f"{path}: weights must be >= 0 and not all zero")
    return weights


def write_match_weights(path: Path, weights: MatchWeights, **provenance: object) -> Path:
    """Write ``weights`` with where they came from (benchmark, command, train MRR) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**weights.as_json(), **provenance}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shipped_match_weights.cache_clear()
    return path


@functools.cache
def shipped_match_weights() -> MatchWeights:
    """The weights ``recommend`` mixes with: fitted on the synthetic probability benchmark
    (``visuallens eval --synthetic N --fit-weights --write``), or the hand-set defaults where
    the file is missing or damaged."""
    try:
        return read_match_weights(match_weights_path())
    except ValueError:
        return MatchWeights()


@dataclass(frozen=True, eq=False)
class ItemVectors:
    """Catalog items embedded by one encoder, row-aligned with ``ids``.

    ``image`` rows are the mean of the item's image vectors (zero rows where it has none).
    """

    ids: tuple[str, ...]
    text: NDArray[np.float32]
    image: NDArray[np.float32]
    has_image: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ids)

    def view(self) -> NDArray[np.float32]:
        """One vector per item for photo comparisons: its images where it has any, else text."""
        if not self.has_image.any():  # the common case: no copy of a (100,000, d) matrix
            return self.text
        return np.where(self.has_image[:, None], self.image, self.text).astype(np.float32)


def item_text(item: CatalogItem) -> str:
    """The text an item is embedded from: the catalog's own text (name: description) and tags."""
    text = item.text().strip()
    return f"{text}. {', '.join(item.tags)}" if item.tags else text


def item_hash(item: CatalogItem) -> str:
    """Changes when the item's text or images change (path, size, modification time)."""
    h = hashlib.blake2b(item_text(item).encode("utf-8"), digest_size=12)
    for path in item.images:
        try:
            stat = Path(path).stat()
            h.update(f"\n{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            h.update(f"\n{path}:missing".encode())
    return h.hexdigest()


def embed_items(
    items: Sequence[CatalogItem],
    encoder: Encoder,
    *,
    db: Any | None = None,
    hashes: Sequence[str] | None = None,
) -> ItemVectors:
    """Embed items' text and images with ``encoder``, reusing what the store has cached.

    An image that cannot be read is skipped (the item falls back to text if none can be read);
    it is not an error, since catalogs come from anywhere. ``hashes`` are the items'
    :func:`item_hash` when the caller has them already. :func:`embed_items_job` is the same
    with progress and a cancel.
    """
    return run_to_end(embed_items_job(items, encoder, db=db, hashes=hashes))


#: Item descriptions embedded per batch: a progress step (and a cancel check) every second or
#: two on a laptop CPU, and what a cancel keeps is saved batch by batch.
ITEM_BATCH = 64


def embed_items_job(
    items: Sequence[CatalogItem],
    encoder: Encoder,
    *,
    db: Any | None = None,
    hashes: Sequence[str] | None = None,
    cancel: CancelToken | None = None,
) -> Job[ItemVectors]:
    """:func:`embed_items` as a long job: yields Progress (stage :data:`CATALOG_STAGE`, unit
    "descriptions") while items the store has no vectors for are embedded, which for a large
    catalog's first question is minutes; cached items cost no step.

    Descriptions are embedded shortest first in batches of :data:`ITEM_BATCH`, each saved to
    the store as it is done, so a cancel (raising :class:`~visuallens_app.errors.Cancelled`
    between batches) keeps every finished batch and the next run starts after them.
    """
    d = encoder.dim
    m = len(items)
    out = ItemVectors(
        tuple(it.id for it in items),
        np.zeros((m, d), dtype=np.float32),
        np.zeros((m, d), dtype=np.float32),
        np.zeros(m, dtype=bool),
    )
    hashes = list(hashes) if hashes is not None else [item_hash(it) for it in items]
    todo = list(range(m))
    if db is not None and m:
        ensure_lens_tables(db)
        todo = _read_cached(db, items, hashes, encoder.id, out)
    if not todo:
        return out
    texts = {i: item_text(items[i]) for i in todo}
    todo.sort(key=lambda i: len(texts[i]))  # a batch is padded to its longest text
    with_images = [i for i in todo if items[i].images]
    meter = ProgressMeter(len(todo), stage=CATALOG_STAGE, unit="descriptions")
    yield meter.progress(f"{len(todo):,} new to this library")
    for start in range(0, len(todo), ITEM_BATCH):
        if cancel is not None:
            cancel.check()
        batch = todo[start : start + ITEM_BATCH]
        out.text[batch] = encode_texts_cached(encoder, [texts[i] for i in batch])
        # An item with images is saved once its images are embedded too (below).
        done = [i for i in batch if not items[i].images]
        _save_items(db, items, hashes, encoder.id, out, rows=done)
        meter.advance(len(batch))
        yield meter.progress()
    if with_images:
        counts: dict[int, int] = {}
        meter = ProgressMeter(len(with_images), stage=CATALOG_STAGE, unit="items with images")
        for n, i in enumerate(with_images, start=1):
            if cancel is not None:
                cancel.check()
            vec, counts[i] = _image_mean(items[i].images, encoder)
            if vec is not None:
                out.image[i], out.has_image[i] = vec, True
            _save_items(db, items, hashes, encoder.id, out, rows=[i], counts=counts)
            meter.advance()
            if meter.due() or n == len(with_images):
                yield meter.progress()
    return out


def _read_cached(
    db: Any, items: Sequence[CatalogItem], hashes: Sequence[str], encoder_id: str, out: ItemVectors
) -> list[int]:
    """Fill ``out``'s rows the store has vectors for (same id and content); the rest's indices."""
    d = out.text.shape[1]
    m = len(items)
    select = f"SELECT item_id, item_hash, text_vector, image_vector FROM {ITEM_VECTORS} "
    found: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    stored = int(db.execute(f"SELECT count(*) FROM {ITEM_VECTORS}").fetchone()[0])
    if stored <= 2 * m:
        # Most of the cache is these items: one scan reads it at half the cost of lookups.
        rows = db.execute(select + "WHERE encoder_id = ?", [encoder_id])
        found = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    else:
        for start in range(0, m, 400):
            chunk = items[start : start + 400]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                select + f"WHERE encoder_id = ? AND item_id IN ({marks})",
                [encoder_id, *(it.id for it in chunk)],
            ):
                found[(row[0], row[1])] = (row[2], row[3])
    todo = []
    rows_found: list[int] = []
    text_blobs: list[bytes] = []
    image_rows: list[int] = []
    image_blobs: list[bytes] = []
    for i, item in enumerate(items):
        hit = found.get((item.id, hashes[i]))
        if hit is None or len(hit[0]) != 4 * d:
            todo.append(i)
            continue
        rows_found.append(i)
        text_blobs.append(hit[0])
        if hit[1] and len(hit[1]) == 4 * d:
            image_rows.append(i)
            image_blobs.append(hit[1])
    # One conversion per matrix, not one per item: 100,000 cached items in milliseconds.
    if rows_found:
        out.text[rows_found] = np.frombuffer(b"".join(text_blobs), dtype=np.float32).reshape(-1, d)
    if image_rows:
        out.image[image_rows] = np.frombuffer(b"".join(image_blobs), dtype=np.float32).reshape(
            -1, d
        )
        out.has_image[image_rows] = True
    return todo


def _save_items(
    db: Any | None,
    items: Sequence[CatalogItem],
    hashes: Sequence[str],
    encoder_id: str,
    vectors: ItemVectors,
    *,
    rows: Sequence[int],
    counts: dict[int, int] | None = None,
) -> None:
    """Write ``rows`` of ``vectors`` to the store's item cache (``counts``: images per row)."""
    counts = counts or {}
    if db is None or not rows:
        return
    with db.atomic():
        db.conn.executemany(
            f"INSERT OR REPLACE INTO {ITEM_VECTORS} "
            "(item_id, item_hash, encoder_id, text_vector, image_vector, n_images) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    items[i].id,
                    hashes[i],
                    encoder_id,
                    vectors.text[i].tobytes(),
                    vectors.image[i].tobytes() if vectors.has_image[i] else b"",
                    counts.get(i, 0),
                )
                for i in rows
            ],
        )


def _image_mean(paths: Sequence[Path], encoder: Encoder) -> tuple[NDArray[np.float32] | None, int]:
    from visuallens_app.library.decode import DecodeError, decode_photo

    images = []
    for path in paths:
        try:
            images.append(decode_photo(Path(path), target=encoder.input_size).image)
        except (DecodeError, OSError):
            continue
    if not images:
        return None, 0
    vectors = encoder.encode_images(images)
    mean = vectors.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32), len(images)


def item_words(item: CatalogItem) -> frozenset[str]:
    """Lower-case words of an item's name, description and tags (for literal aspect matches)."""
    return frozenset(_WORD.findall(item_text(item).casefold()))


#: Bytes of a word (see ``_WORD``) kept, every other byte (any of a non-ASCII letter's) a space.
_WORD_BYTES = bytes(
    c if chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789-'\n" else 32 for c in range(256)
)
#: A "-" or "'" joins two word parts only between letters or digits; elsewhere it separates.
_LOOSE_MARKS = (b"--", b"-'", b"'-", b"''")
_EDGE_MARKS = tuple(
    (edge, edge.replace(b"-", b" ").replace(b"'", b" "))
    for edge in (b" -", b"- ", b"\n-", b"-\n", b" '", b"' ", b"\n'", b"'\n")
)


@dataclass(frozen=True, eq=False)
class ItemWords:
    """The words of many items, as :func:`item_words` reads them, tokenised in one pass.

    ``lines[i]`` holds item i's words separated by spaces. 100,000 items take a few bytes
    operations over their joined texts instead of 100,000 regex scans.
    """

    lines: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[list[str]]:
        return (line.split() for line in self.lines)


def items_words(items: Sequence[CatalogItem]) -> ItemWords:
    """:func:`item_words` of every item (its words in order, repeats kept), in bulk."""
    joined = "\n".join(item_text(it).replace("\n", " ") for it in items).casefold()
    data = b" " + joined.encode("utf-8").translate(_WORD_BYTES) + b" "
    if b"-" in data or b"'" in data:
        while any(mark in data for mark in _LOOSE_MARKS):
            for mark in _LOOSE_MARKS:
                data = data.replace(mark, b"  ")
        for edge, spaced in _EDGE_MARKS:
            data = data.replace(edge, spaced)
    lines = data.decode("ascii").split("\n")
    return ItemWords(tuple(lines) if items else ())


def _spellings(term: str) -> list[tuple[str, ...]]:
    """Per word of ``term``, the forms that count as a match (singular and plural)."""
    return [
        (p, p + "s", p[:-1]) if p.endswith("s") else (p, p + "s")
        for p in _WORD.findall(term.casefold())
    ]


def term_in(term: str, words: frozenset[str]) -> bool:
    """True when every word of ``term`` occurs in ``words`` (plural-tolerant)."""
    spellings = _spellings(term)
    return bool(spellings) and all(any(f in words for f in forms) for forms in spellings)


def lexical_matches(
    terms: Sequence[str], word_sets: Sequence[frozenset[str]] | ItemWords
) -> NDArray[np.float32]:
    """(m, len(terms)) 1.0 where candidate i's words contain term j (see :func:`term_in`)."""
    rows, cols = lexical_hits(terms, word_sets)
    out = np.zeros((len(word_sets), len(terms)), dtype=np.float32)
    out[rows, cols] = 1.0
    return out


def lexical_hits(
    terms: Sequence[str], word_sets: Sequence[Collection[str]] | ItemWords
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(rows, cols): candidate ``rows[n]``'s words contain term ``cols[n]`` (see :func:`term_in`).

    Linear in the candidates: each candidate's words meet the terms' spellings in one set
    intersection, and only the terms one of its words spells are checked further.
    """
    spelled = [_spellings(t) for t in terms]
    # spelling -> (term, word position) pairs it satisfies
    index: dict[str, list[tuple[int, int]]] = {}
    for j, forms_list in enumerate(spelled):
        for position, forms in enumerate(forms_list):
            for form in forms:
                index.setdefault(form, []).append((j, position))
    spellings = frozenset(index)
    rows: list[int] = []
    cols: list[int] = []
    for i, words in enumerate(word_sets):
        hits = spellings.intersection(words)
        if not hits:
            continue
        found: dict[int, set[int]] = {}
        for form in hits:
            for j, position in index[form]:
                found.setdefault(j, set()).add(position)
        for j, positions in found.items():
            if len(positions) == len(spelled[j]):
                rows.append(i)
                cols.append(j)
    return np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)


def candidate_term_affinity(
    term_vectors: NDArray[np.float32], items: ItemVectors
) -> NDArray[np.float32]:
    """(m, V) cosine of each candidate's text to each aspect term, centred across candidates.

    Centring removes what every candidate shares (the category itself), leaving what sets
    this candidate apart.
    """
    sims = items.text @ term_vectors.T
    out: NDArray[np.float32] = (sims - sims.mean(axis=0, keepdims=True)).astype(np.float32)
    return out


def _by_modality(
    text_scores: NDArray[np.float32],
    image_scores: NDArray[np.float32] | None,
    has_image: NDArray[np.bool_],
) -> NDArray[np.float32]:
    """Standardise per modality, then average the modalities each candidate has.

    Image-image and image-text cosines live on different scales (the modality gap), so they are
    never compared raw; a catalog where only some items have images stays fair.
    """
    out = standardise(text_scores)
    if image_scores is None or not has_image.any():
        return out
    img = np.zeros_like(out)
    img[has_image] = standardise(image_scores[has_image])
    return np.where(has_image, (out + img) / 2.0, out).astype(np.float32)


@dataclass(frozen=True, eq=False)
class TermContributions:
    """Each aspect term's share of a candidate's aspect score, computed for the rows asked for.

    The aspect score of all m candidates needs only their row sums (a matrix-vector product),
    so the (m, V) matrix of shares is never built: 100,000 candidates x 791 terms would be
    316 MB per question. :meth:`rows` gives the listed candidates' shares.
    """

    vocabulary_size: int
    active: NDArray[np.intp]  # terms with a weight in the profile
    weights: NDArray[np.float32]  # (a,) their weights
    text: NDArray[np.float32]  # (m, d) candidates' text vectors
    term_vectors: NDArray[np.float32]  # (a, d) the active terms' vectors
    mean_affinity: NDArray[np.float32]  # (a,) mean cosine of the candidates to each term
    semantic_scale: float  # 1 / std of the semantic row sums (times its share)
    hit_rows: NDArray[np.intp]  # literal matches: candidate hit_rows[n] holds term hit_cols[n]
    hit_cols: NDArray[np.intp]
    lexical_mean: NDArray[np.float32]  # (a,) mean weighted literal match per term
    lexical_scale: float  # 1 / std of the literal row sums times its share; 0: no literal part

    def rows(self, rows: Sequence[int] | NDArray[np.integer[Any]]) -> NDArray[np.float32]:
        """(len(rows), V) the terms' shares of these candidates' aspect scores."""
        rows = np.asarray(rows, dtype=np.intp)
        # One product per candidate: a (k, d) x (d, a) product rounds differently for 2 rows
        # than for 10 (BLAS picks its kernel by shape), and an item's explanation must not
        # change with how many items are listed. k products of one row cost microseconds.
        affinity = np.empty((len(rows), len(self.active)), dtype=np.float32)
        for n, row in enumerate(rows):
            affinity[n] = self.text[row] @ self.term_vectors.T
        affinity -= self.mean_affinity[None, :]
        part = (affinity * self.weights[None, :]).astype(np.float32) * self.semantic_scale
        if self.lexical_scale:
            position = np.full(len(self.text), -1, dtype=np.intp)
            position[rows] = np.arange(len(rows))
            at = position[self.hit_rows]
            mine = at >= 0
            lexical = np.zeros_like(part)
            lexical[at[mine], self.hit_cols[mine]] = self.weights[self.hit_cols[mine]]
            part += (lexical - self.lexical_mean[None, :]) * self.lexical_scale
        out = np.zeros((len(rows), self.vocabulary_size), dtype=np.float32)
        out[:, self.active] = part
        return out


@dataclass(frozen=True, eq=False)
class MatchComponents:
    """The three standardised components (each (m,)) plus what the explanations reuse."""

    profile: NDArray[np.float32]
    aspects: NDArray[np.float32]
    evidence: NDArray[np.float32]
    term_contributions: TermContributions | None  # aspect terms' shares of ``aspects``

    def total(self, weights: MatchWeights) -> NDArray[np.float32]:
        out: NDArray[np.float32] = (
            weights.profile * self.profile
            + weights.aspects * self.aspects
            + weights.evidence * self.evidence
        ).astype(np.float32)
        return out

    def stacked(self) -> NDArray[np.float32]:
        """(3, m): profile, aspects, evidence (for :func:`fit_match_weights`)."""
        return np.stack([self.profile, self.aspects, self.evidence]).astype(np.float32)


def match_components(
    photo_vectors: NDArray[np.float32],
    items: ItemVectors,
    *,
    aspect_weights: NDArray[np.float32] | None = None,
    term_vectors: NDArray[np.float32] | None = None,
    terms: Sequence[str] = (),
    item_word_sets: Sequence[frozenset[str]] | ItemWords = (),
    photo_weights: NDArray[np.float32] | None = None,
    use_evidence: bool = True,
    evidence_k: int = EVIDENCE_K,
    photo_reliability: NDArray[np.float32] | None = None,
) -> MatchComponents:
    """Score every candidate against the retrieved photos (r, d) and the aspect profile.

    Parameters
    ----------
    photo_vectors
        The retrieved photos' vectors, best first.
    aspect_weights, term_vectors, terms
        The aspect profile (V,), the vocabulary's vectors (V, d) and words; without them the
        aspect component is zero.
    item_word_sets
        :func:`item_words` per candidate (or :func:`items_words` of all), for literal aspect
        matches (empty: embedding only).
    photo_weights
        Relevance of each retrieved photo (mean 1) in the profile vector; None: uniform.
    photo_reliability
        Per retrieved photo, 0..1 (:func:`~visuallens_app.lens.retrieval.photo_reliability`):
        in the evidence component an unreliable photo's cosine is shrunk towards the mean
        of all retrieved photos, so a hub cannot be a candidate's nearest photo.
    """
    m = len(items)
    zeros = np.zeros(m, dtype=np.float32)
    if m == 0 or len(photo_vectors) == 0:
        return MatchComponents(zeros, zeros, zeros, None)
    profile_vec = (
        photo_vectors.mean(axis=0)
        if photo_weights is None
        else (photo_weights[:, None] * photo_vectors).mean(axis=0)
    )
    profile_vec /= max(float(np.linalg.norm(profile_vec)), 1e-12)
    with_image = items.has_image.any()
    profile = _by_modality(
        items.text @ profile_vec, items.image @ profile_vec if with_image else None, items.has_image
    )

    evidence = zeros
    if use_evidence:
        k = min(evidence_k, len(photo_vectors))
        text_near = _nearest_mean(photo_vectors, items.text, photo_reliability, k)
        image_near = (
            _nearest_mean(photo_vectors, items.image, photo_reliability, k) if with_image else None
        )
        evidence = _by_modality(text_near, image_near, items.has_image)

    aspects = zeros
    contributions = None
    if aspect_weights is not None and term_vectors is not None and aspect_weights.any():
        aspects, contributions = _aspect_scores(
            items, aspect_weights, term_vectors, terms, item_word_sets
        )
    return MatchComponents(profile, aspects, evidence, contributions)


def _aspect_scores(
    items: ItemVectors,
    aspect_weights: NDArray[np.float32],
    term_vectors: NDArray[np.float32],
    terms: Sequence[str],
    item_word_sets: Sequence[frozenset[str]] | ItemWords,
) -> tuple[NDArray[np.float32], TermContributions]:
    """The aspect component: the profile's terms vs each candidate's text, semantic and literal.

    Per candidate, the sum over active terms t of w_t x (its cosine to t minus the candidates'
    mean cosine to t), which is one matrix-vector product; plus, with word sets, the sum of
    w_t over the terms its words spell, centred. Each part is scaled by its std across the
    candidates, the two are mixed by :data:`LEXICAL_SHARE`, and the sum is standardised.
    """
    m = len(items)
    active = np.flatnonzero(aspect_weights)
    weights = aspect_weights[active].astype(np.float32)
    vectors = term_vectors[active]
    semantic = items.text @ (vectors.T @ weights)
    semantic = (semantic - semantic.mean()).astype(np.float32)
    semantic_scale = 1.0 / (float(semantic.std()) or 1.0)
    total = semantic * semantic_scale
    rows = cols = np.zeros(0, dtype=np.intp)
    lexical_mean = np.zeros(len(active), dtype=np.float32)
    lexical_scale = 0.0
    if len(item_word_sets) and len(terms):
        rows, cols = lexical_hits([terms[int(t)] for t in active], item_word_sets)
        lexical = np.bincount(rows, weights=weights[cols], minlength=m).astype(np.float32)
        lexical_std = float(lexical.std())
        if lexical_std > 1e-8:
            lexical_mean = (np.bincount(cols, minlength=len(active)) * weights / m).astype(
                np.float32
            )
            semantic_scale *= 1 - LEXICAL_SHARE
            lexical_scale = LEXICAL_SHARE / lexical_std
            total = (1 - LEXICAL_SHARE) * total + (lexical - lexical.mean()) * lexical_scale
    contributions = TermContributions(
        vocabulary_size=len(aspect_weights),
        active=active,
        weights=weights,
        text=items.text,
        term_vectors=vectors,
        mean_affinity=(items.text.mean(axis=0) @ vectors.T).astype(np.float32),
        semantic_scale=semantic_scale,
        hit_rows=rows,
        hit_cols=cols,
        lexical_mean=lexical_mean,
        lexical_scale=lexical_scale,
    )
    return standardise(total), contributions


#: Candidates per block when comparing them with every retrieved photo: a (256, 100,000)
#: matrix of cosines, shrunk and partitioned, would be several 100 MB copies.
_BLOCK = 8192


def _nearest_mean(
    photo_vectors: NDArray[np.float32],
    candidates: NDArray[np.float32],
    reliability: NDArray[np.float32] | None,
    k: int,
) -> NDArray[np.float32]:
    """(m,) mean of each candidate's ``k`` largest (shrunk) cosines to the retrieved photos."""
    out = np.empty(len(candidates), dtype=np.float32)
    for start in range(0, len(candidates), _BLOCK):
        block = photo_vectors @ candidates[start : start + _BLOCK].T
        out[start : start + _BLOCK] = _top_mean(_shrunk(block, reliability), k)
    return out


def _shrunk(
    sims: NDArray[np.float32], reliability: NDArray[np.float32] | None
) -> NDArray[np.float32]:
    """(r, m) cosines, each photo's pulled towards the column mean by (1 - its reliability)."""
    if reliability is None:
        return sims
    r = np.asarray(reliability, dtype=np.float32)[:, None]
    out: NDArray[np.float32] = (r * sims + (1 - r) * sims.mean(axis=0, keepdims=True)).astype(
        np.float32
    )
    return out


def _top_mean(sims: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Mean of the ``k`` largest values per column of (r, m) ``sims``."""
    if k >= sims.shape[0]:
        mean: NDArray[np.float32] = sims.mean(axis=0).astype(np.float32)
        return mean
    top = np.partition(sims, sims.shape[0] - k, axis=0)[sims.shape[0] - k :]
    out: NDArray[np.float32] = top.mean(axis=0).astype(np.float32)
    return out


# -- fitting the weights on a labelled split ---------------------------------------------------


@dataclass(frozen=True, eq=False)
class MatchExample:
    """One labelled question: its components (3, m) and which candidates are ground truth."""

    components: NDArray[np.float32]
    positives: NDArray[np.bool_]


def reciprocal_rank(scores: NDArray[np.float32], positives: NDArray[np.bool_]) -> float:
    """1 / rank of the best-ranked ground truth (ties broken against it, to be conservative)."""
    if not positives.any():
        return 0.0
    best = float(scores[positives].max())
    rank = int((scores > best).sum() + (scores[~positives] == best).sum()) + 1
    return 1.0 / rank


DEFAULT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def fit_match_weights(
    train: Sequence[MatchExample], grid: Sequence[float] = DEFAULT_GRID
) -> tuple[MatchWeights, float]:
    """Grid-search the component weights for the best mean MRR on ``train``.

    Three weights on a small grid is 124 combinations, each a handful of dot products per
    question, so this is exhaustive rather than clever. Ties keep the earlier (simpler)
    combination. Returns the weights and their train MRR.
    """
    usable = [e for e in train if e.positives.any()]
    if not usable:
        return MatchWeights(), 0.0
    best = (MatchWeights(), -1.0)
    for wp in grid:
        for wa in grid:
            for we in grid:
                if wp == wa == we == 0.0:
                    continue
                mix = np.array([wp, wa, we], dtype=np.float32)
                mrr = float(
                    np.mean([reciprocal_rank(mix @ e.components, e.positives) for e in usable])
                )
                if mrr > best[1] + 1e-12:
                    best = (MatchWeights(wp, wa, we), mrr)
    return best
