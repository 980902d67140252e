"""The evaluation harness: Hit@1/3/10 and MRR of the lens and its baselines on a benchmark.

A benchmark is a JSONL file shaped like the paper's GR-V and Yelp-V (one question per line: the
user's history photos, 30-100 candidates, the ground-truth candidates); the format is documented
in ``docs/benchmark-format.md``. Loading is forgiving like the catalog loader: a bad line is
skipped and reported, the good lines load.

:func:`evaluate` is a long job (a generator of Progress records returning an
:class:`EvalReport`). Every history photo is decoded and encoded once, keyed by content hash,
whichever example and method uses it; each method then ranks every example, and the report gives
each metric's mean with a 95% bootstrap confidence interval over examples. The methods are the
paper's baselines and ablations mapped onto :class:`~visuallens_app.lens.pipeline.LensConfig`:

``naive``
    The mean of every history photo against the candidates' vectors, nothing else: no
    filter, no retrieval, no aspects, no evidence (:meth:`LensConfig.naive`).
``random``
    The expected metrics of a uniformly random ranking, computed exactly per example (no
    shuffling, so no sampling noise): P(Hit@k) = 1 - C(n-g, k) / C(n, k) and
    E[RR] = sum_r C(n-r, g-1) / C(n, g) / r, for n candidates of which g are ground truth.
``no_retrieval``
    The whole history is the profile (the paper's "no retrieval" ablation).
``retrieval_only``
    Category retrieval (top w) and profile matching; no aspects, refinement or evidence.
``full``
    Every stage. When the benchmark has a ``train`` split, the matching weights and aspect
    term weights are fitted on it first, and every method is reported on the test split only.
``rerank``
    ``full``, then the MLLM re-ranker (:mod:`visuallens_app.lens.rerank`) over its ranking,
    fed the grid of the retrieved photos; needs a re-ranker and photo files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.errors import VisualLensError
from visuallens_app.jobs import CancelToken, Job, ProgressMeter
from visuallens_app.lens.aspects import Vocabulary, vocabulary_terms
from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.grid import build_grid
from visuallens_app.lens.history import History
from visuallens_app.lens.matching import MatchExample, MatchWeights
from visuallens_app.lens.pipeline import (
    MIN_HISTORY,
    LensConfig,
    default_vocabulary,
    recommend,
    training_examples,
)
from visuallens_app.lens.refine import AspectExample
from visuallens_app.lens.untrusted import (
    BadLine,
    check_path_text,
    check_text,
    expand_home,
    parse_json_line,
    shown,
)
from visuallens_app.models.base import Encoder

#: Every method :func:`evaluate` knows, in report order.
METHODS = ("naive", "random", "no_retrieval", "retrieval_only", "full", "rerank")
#: What runs without an MLLM.
DEFAULT_METHODS = ("naive", "random", "no_retrieval", "retrieval_only", "full")
#: Metric names, in report order.
METRICS = ("hit@1", "hit@3", "hit@10", "mrr")

#: The paper drops questions whose user has fewer history photos than this.
PAPER_MIN_HISTORY = 10
#: The paper's candidate lists have 30-100 items; the re-ranker's tags stop at 100.
MAX_CANDIDATES = 100
MIN_CANDIDATES = 2
SPLITS = ("train", "test")

_ENCODE_BATCH = 32
_PROBLEMS_IN_ERROR = 3


class BenchmarkError(VisualLensError):
    """A benchmark file that cannot be used at all (missing, unreadable, no valid example)."""


# -- the data --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BenchmarkExample:
    """One question of a benchmark: a user's history, the candidates and the ground truth.

    ``history`` holds absolute photo paths. Embedding-space examples (synthetic benchmarks)
    carry ``history_vectors`` instead, made with the encoder ``history_encoder``; they are used
    as they are and never decoded (with the classifier signals ``history_confidence`` and
    ``history_document`` where the generator made them).
    """

    id: str
    question: str
    category: str
    history: tuple[Path, ...]
    candidates: tuple[CatalogItem, ...]
    ground_truth: frozenset[str]
    split: str = "test"
    history_vectors: NDArray[np.float32] | None = None
    history_encoder: str | None = None
    history_confidence: NDArray[np.float32] | None = None
    history_document: NDArray[np.float32] | None = None

    def positives(self, candidates: Sequence[CatalogItem] | None = None) -> NDArray[np.bool_]:
        """Which of ``candidates`` (default: this example's) are ground truth."""
        items = self.candidates if candidates is None else candidates
        return np.array([c.id in self.ground_truth for c in items], dtype=bool)


@dataclass(frozen=True, slots=True)
class BenchmarkProblem:
    """Why one line of a benchmark file was skipped or partly used (``line`` 0: the file)."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclass(frozen=True, slots=True)
class BenchmarkLoad:
    """The examples that validated, and the problems found on the way."""

    path: Path
    examples: tuple[BenchmarkExample, ...]
    problems: tuple[BenchmarkProblem, ...] = ()


class _Skip(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_benchmark(path: Path, *, min_history: int = PAPER_MIN_HISTORY) -> BenchmarkLoad:
    """Read a JSONL benchmark, keeping every valid line and reporting the others.

    Photo paths are relative to the benchmark file's folder (absolute ones are taken as they
    are). A missing history photo is reported and left out; a line is skipped when fewer than
    ``min_history`` photos remain (the paper drops users with fewer than 10), when it has fewer
    than 2 or more than 100 candidates, or when none of its ground-truth ids is a candidate.

    Raises
    ------
    BenchmarkError
        When the file is missing or unreadable, or no line gives a usable example.
    """
    try:
        path = expand_home(Path(path))
    except BadLine as err:
        raise BenchmarkError(f"The benchmark file {path} {err}.") from err
    if "\x00" in os.fspath(path) or not path.is_file():
        raise BenchmarkError(f"The benchmark file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise BenchmarkError(f"The benchmark file {path} cannot be read ({reason}).") from err
    root = path.resolve().parent
    problems: list[BenchmarkProblem] = []
    examples: list[BenchmarkExample] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        notes: list[str] = []
        try:
            example = _example(stripped, root, min_history, notes)
            if example.id in seen:
                raise _Skip(f"id '{example.id}' repeats line {seen[example.id]}")
        except _Skip as skip:
            problems.append(BenchmarkProblem(number, skip.reason))
            continue
        seen[example.id] = number
        problems.extend(BenchmarkProblem(number, note) for note in notes)
        examples.append(example)
    if not examples:
        shown = "; ".join(str(p) for p in problems[:_PROBLEMS_IN_ERROR])
        more = len(problems) - _PROBLEMS_IN_ERROR
        tail = f"; and {more} more" if more > 0 else ""
        detail = f" ({shown}{tail})" if problems else ""
        raise BenchmarkError(f"The benchmark file {path} has no usable examples{detail}.")
    return BenchmarkLoad(path, tuple(examples), tuple(problems))


def _example(line: str, root: Path, min_history: int, notes: list[str]) -> BenchmarkExample:
    try:
        record = parse_json_line(line)
    except BadLine as err:
        raise _Skip(str(err)) from err
    if not isinstance(record, dict):
        raise _Skip("not a JSON object ({...})")
    ident = _string(record, "id")
    category = _string(record, "category")
    question = _string(record, "question", required=False) or f"recommend a {category}"
    split = _string(record, "split", required=False) or "test"
    if split not in SPLITS:
        raise _Skip(f"'split' must be 'train' or 'test', not {split!r}")

    history_raw = record.get("history")
    if not isinstance(history_raw, list) or not all(isinstance(p, str) for p in history_raw):
        raise _Skip("'history' must be a list of photo paths")
    history: list[Path] = []
    missing = 0
    for raw in history_raw:
        resolved = _resolve(raw, root, what="history photo")
        if resolved is not None and resolved.is_file():
            history.append(resolved)
        else:
            missing += 1
    if missing:
        notes.append(f"{missing} history photo(s) not found, left out")
    if len(history) < min_history:
        raise _Skip(f"only {len(history)} usable history photo(s), fewer than {min_history}")

    candidates_raw = record.get("candidates")
    if not isinstance(candidates_raw, list):
        raise _Skip("'candidates' must be a list of objects")
    if not MIN_CANDIDATES <= len(candidates_raw) <= MAX_CANDIDATES:
        raise _Skip(
            f"{len(candidates_raw)} candidates; a question needs {MIN_CANDIDATES} to "
            f"{MAX_CANDIDATES}"
        )
    candidates: list[CatalogItem] = []
    ids: set[str] = set()
    for position, raw_item in enumerate(candidates_raw, start=1):
        item = _candidate(raw_item, position, category, root, notes)
        if item.id in ids:
            raise _Skip(f"candidate id '{item.id}' appears twice")
        ids.add(item.id)
        candidates.append(item)

    truth_raw = record.get("ground_truth")
    if isinstance(truth_raw, str):
        truth_raw = [truth_raw]
    if not isinstance(truth_raw, list) or not truth_raw:
        raise _Skip("'ground_truth' must be a non-empty list of candidate ids")
    try:
        truth = {check_text(str(t)) for t in truth_raw}
    except BadLine as err:
        raise _Skip(f"'ground_truth': {err}") from err
    unknown = sorted(truth - ids)
    if unknown:
        notes.append(f"ground truth {', '.join(unknown[:3])} not among the candidates, ignored")
    truth &= ids
    if not truth:
        raise _Skip("none of the ground-truth ids is a candidate")
    return BenchmarkExample(
        id=ident,
        question=question,
        category=category,
        history=tuple(history),
        candidates=tuple(candidates),
        ground_truth=frozenset(truth),
        split=split,
    )


def _candidate(
    raw: object, position: int, category: str, root: Path, notes: list[str]
) -> CatalogItem:
    if not isinstance(raw, dict):
        raise _Skip(f"candidate {position} is not a JSON object")
    try:
        ident = _string(raw, "id")
        name = _string(raw, "name")
    except _Skip as skip:
        raise _Skip(f"candidate {position}: {skip.reason}") from None
    description = _string(raw, "description", required=False) or name
    tags_raw = raw.get("tags") or []
    try:
        tags = (
            tuple(check_text(str(t)).strip() for t in tags_raw if str(t).strip())
            if isinstance(tags_raw, list)
            else ()
        )
    except BadLine as err:
        raise _Skip(f"candidate '{shown(ident)}', tags: {err}") from err
    images: list[Path] = []
    images_raw = raw.get("images") or []
    if not isinstance(images_raw, list):
        images_raw = [images_raw]
    for image in images_raw:
        resolved = _resolve(str(image), root, what=f"candidate '{shown(ident)}': image")
        if resolved is not None and resolved.is_file():
            images.append(resolved)
        else:
            notes.append(f"candidate '{shown(ident)}': image '{shown(image)}' not found, ignored")
    return CatalogItem(
        id=ident,
        name=name,
        category=_string(raw, "category", required=False) or category,
        description=description,
        images=tuple(images),
        tags=tags,
    )


def _string(record: Mapping[str, object], key: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Skip(f"'{key}' is missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Skip(f"'{key}' must be text")
    try:  # a lone surrogate would fail later, in matching.item_hash or when printed
        return check_text(str(value)).strip()
    except BadLine as err:
        raise _Skip(f"'{key}': {err}") from err


def _resolve(raw: str, root: Path, *, what: str) -> Path | None:
    """The absolute path of a photo named on a line; None when it cannot be followed.

    A name no file can have (NUL, a lone surrogate, ``~nosuchuser``) skips the whole line: the
    line is garbled, which a photo moved away is not.
    """
    try:
        given = Path(check_path_text(raw).replace("\\", "/"))
    except BadLine as err:
        raise _Skip(f"{what} {err}") from err
    try:
        given = expand_home(given)
    except BadLine as err:
        raise _Skip(f"{what} '{shown(raw)}' {err}") from err
    if given.is_absolute():
        return given
    try:
        return (root / given).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return None


# -- metrics ---------------------------------------------------------------------------------


def first_hit_rank(ranking: Sequence[str], ground_truth: Iterable[str]) -> int:
    """1-based rank of the best-ranked ground-truth id in ``ranking`` (len + 1 when absent)."""
    truth = set(ground_truth)
    for rank, ident in enumerate(ranking, start=1):
        if ident in truth:
            return rank
    return len(ranking) + 1


def metrics_from_rank(rank: int) -> dict[str, float]:
    """Hit@1/3/10 and reciprocal rank of one question whose first hit is at ``rank``."""
    return {
        "hit@1": float(rank <= 1),
        "hit@3": float(rank <= 3),
        "hit@10": float(rank <= 10),
        "mrr": 1.0 / rank,
    }


def random_expected(n: int, g: int) -> dict[str, float]:
    """Exact expected Hit@1/3/10 and reciprocal rank of a uniformly random ranking.

    ``n`` candidates of which ``g`` are ground truth: the first hit is at rank r with
    probability C(n-r, g-1) / C(n, g), which gives both metrics in closed form.
    """
    if not 0 < g <= n:
        raise ValueError(f"need 0 < ground truths <= candidates, got {g} of {n}")
    total = math.comb(n, g)
    hits = {k: 1.0 - math.comb(n - g, min(k, n)) / math.comb(n, min(k, n)) for k in (1, 3, 10)}
    mrr = sum(math.comb(n - r, g - 1) / r for r in range(1, n - g + 2)) / total
    return {"hit@1": hits[1], "hit@3": hits[3], "hit@10": hits[10], "mrr": mrr}


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean over examples with its 95% bootstrap confidence interval."""

    mean: float
    low: float
    high: float

    def as_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{100 * self.mean:5.1f} [{100 * self.low:4.1f}, {100 * self.high:4.1f}]"


@dataclass(frozen=True, eq=False)
class MethodReport:
    """One method's per-example metrics (rows: examples, columns: METRICS) and estimates."""

    method: str
    values: NDArray[np.float64]
    estimates: dict[str, Estimate]
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "n": int(self.values.shape[0]),
            "seconds": round(self.seconds, 3),
            **{name: est.as_json() for name, est in self.estimates.items()},
        }


@dataclass(eq=False)
class EvalReport:
    """Every method's metrics on the evaluated examples, and how they were obtained."""

    example_ids: tuple[str, ...]
    methods: dict[str, MethodReport]
    seed: int
    bootstrap: int
    n_train: int = 0
    fitted: dict[str, object] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _resamples: NDArray[np.int64] | None = field(default=None, repr=False)

    def metric(self, method: str, name: str = "mrr") -> Estimate:
        return self.methods[method].estimates[name]

    def difference(self, method: str, baseline: str, name: str = "mrr") -> Estimate:
        """``method`` minus ``baseline`` with a paired bootstrap 95% interval.

        Paired (the same resampled examples for both), so the interval reflects how
        consistently one beats the other, not the spread of question difficulty.
        """
        column = METRICS.index(name)
        delta = self.methods[method].values[:, column] - self.methods[baseline].values[:, column]
        return _estimate(delta, self._resamples)

    def as_json(self) -> dict[str, object]:
        return {
            "examples": len(self.example_ids),
            "train_examples": self.n_train,
            "seed": self.seed,
            "bootstrap": self.bootstrap,
            "random": "exact expectation per example",
            "methods": {name: report.as_json() for name, report in self.methods.items()},
            "fitted": self.fitted,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "notes": self.notes,
        }

    def table(self) -> str:
        """The report as a text table: method x Hit@1/3/10/MRR in percent, 95% CIs."""
        # "100.0 [100.0, 100.0]" is 20 characters: columns of 22 keep two spaces between.
        header = f"{'method':<15}" + "".join(f"{m.upper():>22}" for m in METRICS)
        lines = [header, "-" * len(header)]
        for name, report in self.methods.items():
            cells = "".join(f"{report.estimates[m]!s:>22}" for m in METRICS)
            lines.append(f"{name:<15}{cells}")
        lines.append(
            f"{len(self.example_ids)} test example(s)"
            + (f", weights fitted on {self.n_train} train example(s)" if self.n_train else "")
            + f"; mean [95% bootstrap CI, {self.bootstrap} resamples], in percent."
        )
        lines.extend(self.notes)
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} history photo(s) could not be read, left out.")
        return "\n".join(lines)


def _estimate(values: NDArray[np.float64], resamples: NDArray[np.int64] | None) -> Estimate:
    mean = float(values.mean()) if values.size else 0.0
    if resamples is None or values.size < 2:
        return Estimate(mean, mean, mean)
    means = values[resamples].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(mean, float(low), float(high))


# -- history vectors -------------------------------------------------------------------------


class PhotoVectorCache:
    """History photo vectors keyed by (encoder id, content hash), shared across examples.

    A benchmark's users share photos rarely, but its files are often copies (the same picture
    under several names), and one evaluation runs several methods; each distinct photo is
    decoded and encoded once. Paths are memoised by (size, mtime) so a second run over the
    same files does not even read them.
    """

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], NDArray[np.float32]] = {}
        self._hashes: dict[Path, tuple[int, int, str]] = {}
        self.unreadable: dict[Path, str] = {}

    def __len__(self) -> int:
        return len(self._vectors)

    def known_hash(self, path: Path) -> str | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        cached = self._hashes.get(path)
        if cached is not None and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        return None

    def vector(self, encoder_id: str, path: Path) -> NDArray[np.float32] | None:
        content_hash = self.known_hash(path)
        if content_hash is None:
            return None
        return self._vectors.get((encoder_id, content_hash))

    def encode(
        self, paths: Sequence[Path], encoder: Encoder, cancel: CancelToken | None = None
    ) -> Iterator[int]:
        """Make sure every readable photo in ``paths`` has a vector; yields photos done."""
        from visuallens_app.library.decode import DecodeError, decode_photo

        pending: list[tuple[str, Image.Image]] = []
        pending_hashes: set[str] = set()

        def flush() -> None:
            if not pending:
                return
            vectors = encoder.encode_images([image for _, image in pending])
            for (content_hash, _), vector in zip(pending, vectors, strict=True):
                self._vectors[(encoder.id, content_hash)] = vector
            pending.clear()
            pending_hashes.clear()

        for path in paths:
            if cancel is not None:
                cancel.check()
            if self.vector(encoder.id, path) is None and path not in self.unreadable:
                try:
                    photo = decode_photo(path, target=encoder.input_size)
                except DecodeError as err:
                    self.unreadable[path] = str(err)
                else:
                    stat = path.stat()
                    self._hashes[path] = (stat.st_size, stat.st_mtime_ns, photo.content_hash)
                    key = (encoder.id, photo.content_hash)
                    if key not in self._vectors and photo.content_hash not in pending_hashes:
                        pending.append((photo.content_hash, photo.image))
                        pending_hashes.add(photo.content_hash)
                    if len(pending) >= _ENCODE_BATCH:
                        flush()
            yield 1
        flush()

    def history(self, example: BenchmarkExample, encoder: Encoder) -> History:
        """The example's history as vectors (its own, or the cached photo vectors)."""
        if example.history_vectors is not None:
            if example.history_encoder not in (None, encoder.id):
                raise ValueError(
                    f"example {example.id} has vectors from {example.history_encoder}, "
                    f"not from the evaluation encoder {encoder.id}"
                )
            return History.from_arrays(
                example.history_vectors,
                confidence=example.history_confidence,
                document=example.history_document,
            )
        rows: list[NDArray[np.float32]] = []
        paths: list[Path] = []
        hashes: list[str] = []
        for path in example.history:
            vector = self.vector(encoder.id, path)
            content_hash = self.known_hash(path)
            if vector is not None and content_hash is not None:
                rows.append(vector)
                paths.append(path)
                hashes.append(content_hash)
        matrix = np.stack(rows) if rows else np.zeros((0, encoder.dim), dtype=np.float32)
        return History.from_arrays(matrix, paths=paths, content_hashes=hashes)


# -- the job ---------------------------------------------------------------------------------


class Reranker(Protocol):
    """What the ``rerank`` method needs (:class:`~visuallens_app.lens.rerank.MLLMReranker`)."""

    def rerank(
        self,
        grid: Image.Image,
        question: str,
        candidates: Sequence[CatalogItem],
        *,
        profile_aspects: Sequence[str] = (),
        tiles: int = 0,
    ) -> Any: ...


def method_config(method: str, fitted: LensConfig | None = None) -> LensConfig:
    """The LensConfig a method runs with (``fitted``: full's weights learned on train)."""
    if method == "naive":
        return LensConfig.naive()
    if method == "no_retrieval":
        return LensConfig.no_retrieval()
    if method == "retrieval_only":
        return LensConfig.retrieval_only()
    if method in ("full", "rerank"):
        return fitted or LensConfig()
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def evaluate(
    examples: Sequence[BenchmarkExample],
    encoder: Encoder,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    seed: int = 0,
    cancel: CancelToken | None = None,
    vocabulary: Vocabulary | None = None,
    reranker: Reranker | None = None,
    bootstrap: int = 1000,
    cache: PhotoVectorCache | None = None,
    fitted_weights: MatchWeights | None = None,
) -> Job[EvalReport]:
    """Score ``methods`` on ``examples`` and return every metric with its 95% bootstrap CI.

    Parameters
    ----------
    examples
        Benchmark questions; those with ``split == "train"`` are used only to fit the full
        method's weights (when ``full`` or ``rerank`` is asked for), the others are scored.
    encoder
        Encodes the history photos (once each) and the candidates.
    methods
        Any of :data:`METHODS`; ``rerank`` needs ``reranker``.
    seed
        Fixes the candidate order shown to each method (the same for all methods, so ties
        cannot favour the ground truth by file order) and the bootstrap resamples.
    vocabulary
        Aspect vocabulary for the lens; None uses the shipped one.
    cache
        Photo vectors to reuse across calls (one is made when None).
    fitted_weights
        Matching weights for ``full`` (and ``rerank``) instead of the shipped ones, where the
        benchmark has no train split to fit its own.

    Yields Progress records (stages "encode", "fit", then one per method).
    """
    cancel = cancel or CancelToken()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if "rerank" in methods:
        if reranker is None:
            raise ValueError("the 'rerank' method needs a re-ranker (a vision-language model)")
        if any(e.history_vectors is not None for e in examples):
            raise ValueError("the 'rerank' method needs photo files, not embedding-space examples")
    cache = cache if cache is not None else PhotoVectorCache()
    vocab = vocabulary if vocabulary is not None else default_vocabulary()
    train = [e for e in examples if e.split == "train"]
    test = [e for e in examples if e.split != "train"]
    if not test:
        raise BenchmarkError("The benchmark has no test examples to evaluate.")

    paths = list(dict.fromkeys(p for e in examples if e.history_vectors is None for p in e.history))
    if paths:
        meter = ProgressMeter(len(paths), "encode")
        for step in cache.encode(paths, encoder, cancel):
            meter.advance(step)
            if meter.due():
                yield meter.progress(f"{len(cache)} photo vector(s)")

    histories: dict[str, History] = {}
    notes: list[str] = []
    usable_test: list[BenchmarkExample] = []
    for example in examples:
        history = cache.history(example, encoder)
        if len(history) < MIN_HISTORY:
            notes.append(
                f"Example {example.id} left out: fewer than {MIN_HISTORY} readable photos."
            )
            continue
        histories[example.id] = history
        if example.split != "train":
            usable_test.append(example)
    train = [e for e in train if e.id in histories]
    if not usable_test:
        raise BenchmarkError("No test example has enough readable history photos.")

    rng = np.random.default_rng(seed)
    orders = {e.id: rng.permutation(len(e.candidates)) for e in examples}

    fitted_config: LensConfig | None = (
        LensConfig(weights=fitted_weights) if fitted_weights is not None else None
    )
    fitted: dict[str, object] = {}
    if train and any(m in ("full", "rerank") for m in methods):
        fitted_config, fitted = yield from _fit(
            train, histories, orders=orders, encoder=encoder, vocabulary=vocab, cancel=cancel
        )

    resamples = (
        rng.integers(0, len(usable_test), size=(bootstrap, len(usable_test)))
        if bootstrap > 0
        else None
    )
    reports: dict[str, MethodReport] = {}
    for method in METHODS:
        if method not in methods:
            continue
        started = time.perf_counter()
        meter = ProgressMeter(len(usable_test), method, unit="questions")
        rows = []
        for example in usable_test:
            cancel.check()
            candidates = [example.candidates[i] for i in orders[example.id]]
            if method == "random":
                values = random_expected(len(candidates), len(example.ground_truth))
            else:
                ranking = _rank(
                    method,
                    example,
                    candidates,
                    history=histories[example.id],
                    encoder=encoder,
                    config=method_config(method, fitted_config),
                    vocabulary=vocab,
                    reranker=reranker,
                )
                values = metrics_from_rank(first_hit_rank(ranking, example.ground_truth))
            rows.append([values[m] for m in METRICS])
            meter.advance()
            if meter.due():
                yield meter.progress(example.id)
        matrix = np.asarray(rows, dtype=np.float64)
        estimates = {m: _estimate(matrix[:, i], resamples) for i, m in enumerate(METRICS)}
        reports[method] = MethodReport(method, matrix, estimates, time.perf_counter() - started)

    return EvalReport(
        example_ids=tuple(e.id for e in usable_test),
        methods=reports,
        seed=seed,
        bootstrap=bootstrap,
        n_train=len(train),
        fitted=fitted,
        unreadable=[(str(p), r) for p, r in cache.unreadable.items()],
        notes=notes,
        _resamples=resamples,
    )


def _fit(
    train: Sequence[BenchmarkExample],
    histories: Mapping[str, History],
    *,
    orders: Mapping[str, NDArray[np.int64]],
    encoder: Encoder,
    vocabulary: Vocabulary | None,
    cancel: CancelToken,
) -> Job[tuple[LensConfig, dict[str, object]]]:
    """Fit the full method's matching weights, then its aspect term weights, on ``train``."""
    from visuallens_app.lens.matching import fit_match_weights
    from visuallens_app.lens.refine import fit_aspect_weights

    meter = ProgressMeter(2 * len(train), "fit", unit="questions")

    def examples(
        config: LensConfig, message: str
    ) -> Job[list[tuple[MatchExample, AspectExample | None]]]:
        """Each train question's training examples under ``config``, with progress."""
        out = []
        for example in train:
            cancel.check()
            candidates = [example.candidates[i] for i in orders[example.id]]
            out.append(
                training_examples(
                    histories[example.id],
                    candidates,
                    example.category,
                    encoder,
                    sorted(example.ground_truth),
                    config=config,
                    vocabulary=vocabulary,
                )
            )
            meter.advance()
            if meter.due():
                yield meter.progress(message)
        return out

    first = yield from examples(LensConfig(), "matching weights")
    weights, train_mrr = fit_match_weights([match for match, _ in first])
    config = LensConfig(weights=weights)
    second = yield from examples(config, "aspect weights")
    aspect_examples = [aspect for _, aspect in second if aspect is not None]
    fitted: dict[str, object] = {
        "match_weights": {
            "profile": weights.profile,
            "aspects": weights.aspects,
            "evidence": weights.evidence,
        },
        "train_mrr": train_mrr,
    }
    if aspect_examples and vocabulary is not None:
        terms = vocabulary_terms(vocabulary)
        if all(a.profile.shape[0] == len(terms) for a in aspect_examples):
            term_weights = fit_aspect_weights(aspect_examples, terms)
            config = LensConfig(weights=weights, term_weights=term_weights)
            changed = sorted(term_weights.items(), key=lambda kv: -abs(math.log(kv[1])))[:10]
            fitted["term_weights_top"] = {t: round(w, 4) for t, w in changed}
    return config, fitted


def fit_shipped_weights(
    train: Sequence[BenchmarkExample],
    encoder: Encoder,
    *,
    seed: int = 0,
    vocabulary: Vocabulary | None = None,
    cancel: CancelToken | None = None,
) -> Job[tuple[MatchWeights, float]]:
    """Fit the matching weights ``recommend`` ships with on ``train`` (the full pipeline's
    components per question, then :func:`~visuallens_app.lens.matching.fit_match_weights`).

    Only the three mixing weights are fitted: per-term aspect weights would tie the shipped
    file to one vocabulary. Returns the weights and their train MRR.
    """
    from visuallens_app.lens.matching import fit_match_weights

    cancel = cancel or CancelToken()
    vocab = vocabulary if vocabulary is not None else default_vocabulary()
    cache = PhotoVectorCache()
    rng = np.random.default_rng(seed)
    meter = ProgressMeter(len(train), "fit", unit="questions")
    matches: list[MatchExample] = []
    for example in train:
        cancel.check()
        history = cache.history(example, encoder)
        if len(history) >= MIN_HISTORY:
            order = rng.permutation(len(example.candidates))
            match, _ = training_examples(
                history,
                [example.candidates[i] for i in order],
                example.category,
                encoder,
                sorted(example.ground_truth),
                config=LensConfig(),
                vocabulary=vocab,
            )
            matches.append(match)
        meter.advance()
        if meter.due():
            yield meter.progress("matching weights")
    return fit_match_weights(matches)


def _rank(
    method: str,
    example: BenchmarkExample,
    candidates: Sequence[CatalogItem],
    *,
    history: History,
    encoder: Encoder,
    config: LensConfig,
    vocabulary: Vocabulary | None,
    reranker: Reranker | None,
) -> list[str]:
    result = recommend(
        history,
        candidates,
        example.category,
        encoder,
        config=config,
        vocabulary=vocabulary,
        k=len(candidates),
    )
    ranked = [r.item for r in result.recommendations]
    if method != "rerank" or reranker is None:
        return [item.id for item in ranked]
    grid, tiles = _profile_grid(history, result.retrieved)
    answer = reranker.rerank(
        grid,
        example.question,
        ranked,
        profile_aspects=[term for term, _ in result.profile_aspects],
        tiles=tiles,
    )
    return [ranked[i].id for i in answer.order]


def _profile_grid(history: History, retrieved: Sequence[int]) -> tuple[Image.Image, int]:
    """The paper's 8x8 grid of the top 64 retrieved photos (unreadable ones left out)."""
    from visuallens_app.library.decode import DecodeError, decode_photo

    images: list[Image.Image] = []
    for index in retrieved[:64]:
        try:
            images.append(decode_photo(history.paths[index], target=112).thumbnail)
        except DecodeError:
            continue
    return build_grid(images), len(images)


__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "METRICS",
    "BenchmarkError",
    "BenchmarkExample",
    "BenchmarkLoad",
    "BenchmarkProblem",
    "Estimate",
    "EvalReport",
    "MethodReport",
    "PhotoVectorCache",
    "evaluate",
    "first_hit_rank",
    "fit_shipped_weights",
    "load_benchmark",
    "method_config",
    "metrics_from_rank",
    "random_expected",
]
