"""Inner-product search over L2-normalised photo vectors, backed by FAISS.

The SQLite store is the source of truth; a :class:`VectorIndex` is a cache derived from it. It is
saved next to a manifest that names the store state it was built from (an opaque fingerprint the
store computes), so a stale, half-written or corrupted index is detected on load and rebuilt from
the store instead of serving wrong results. A crash may cost a rebuild, never data.

Below ``exact_threshold`` vectors the index is exact (brute force over a flat matrix, which is
already fast enough and needs no training). Above it the index is IVF-Flat: k-means partitions
the vectors into ``nlist`` cells and a query scans only the ``nprobe`` nearest cells. ``nprobe`` is
not a fixed guess: the build measures recall@10 against brute force on a sample of the indexed
vectors and picks the smallest ``nprobe`` that reaches ``target_recall``.

faiss is imported inside functions only, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from visuallens_app.index import cache_files
from visuallens_app.index.recall import SearchResults, calibrate_nprobe, check_cancel
from visuallens_app.jobs import CancelToken, Job, Progress, ProgressMeter, run_to_end

logger = logging.getLogger(__name__)

IndexKind = Literal["exact", "ivf"]

#: Default size below which the index is exact: brute force over 50k x 512 scans 100 MB, tens of
#: ms on a 2-core CPU, and an exact index needs no training and never misses.
DEFAULT_EXACT_THRESHOLD = 50_000
#: Recall@10 the nprobe calibration aims for. It is above the 0.95 the approximate index promises
#: because it is measured on indexed vectors (leave-one-out), which are not the real queries.
DEFAULT_TARGET_RECALL = 0.97

#: IVF below this many vectors would have too few points per cell to train well; exact is fast.
_MIN_IVF_SIZE = 1_000
#: faiss's k-means wants at least ~39 training points per centroid and gains little past ~256.
_MIN_POINTS_PER_CELL = 39
_TRAIN_POINTS_PER_CELL = 64
_KMEANS_ITERATIONS = 12
#: Vectors are added in chunks so a long build reports progress and can be cancelled.
_ADD_CHUNK = 65_536
#: GPU faiss refuses k above this (CUDA selection kernels); over-fetching for ``exclude`` is capped.
_GPU_MAX_K = 2048
#: Files of a save untouched for this long belong to no save still running (writing even a
#: million-vector index takes seconds); younger ones may be another process's save in progress.
STALE_SAVE_SECONDS = 600


class VectorIndex:
    """Nearest photos by cosine similarity, keyed by int64 photo ids.

    Build with :meth:`build` (or :meth:`build_job` to get progress and cancellation), restore
    with :meth:`load`, or do whichever is needed with :meth:`load_or_build`. Searches may run from
    several threads; mutations (:meth:`add`, :meth:`remove`) are serialised with them by a lock.
    """

    def __init__(
        self,
        cpu_index: Any,
        *,
        dim: int,
        kind: IndexKind,
        fingerprint: str,
        nprobe: int | None = None,
        calibrated_recall: float | None = None,
        gpu: bool | None = None,
    ) -> None:
        """Wrap an already built faiss index; use :meth:`build` or :meth:`load` instead."""
        # The CPU index is the master copy: it is what is saved and mutated. A GPU replica, when
        # there is one, only serves searches (GPU indexes can't remove ids, and saving needs CPU).
        self._cpu = cpu_index
        self._dim = dim
        self._kind: IndexKind = kind
        self._fingerprint = fingerprint
        self._nprobe = nprobe
        self._calibrated_recall = calibrated_recall
        self._lock = threading.RLock()
        self._want_gpu = gpu
        self._mapped = False  # a view of the file's pages (see load): copied before a mutation
        if nprobe is not None:
            self._cpu.nprobe = nprobe
        self._gpu = _to_gpu(cpu_index, nprobe) if _gpu_wanted(gpu) else None

    # ----------------------------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        ids: NDArray[np.int64],
        vectors: NDArray[np.float32],
        *,
        fingerprint: str,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        gpu: bool | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
        calibration_queries: NDArray[np.float32] | None = None,
        nlist: int | None = None,
        seed: int = 0,
    ) -> VectorIndex:
        """Build an index over ``vectors`` (one row per id); see :meth:`build_job`."""
        return run_to_end(
            cls.build_job(
                ids,
                vectors,
                fingerprint=fingerprint,
                exact_threshold=exact_threshold,
                gpu=gpu,
                target_recall=target_recall,
                calibration_queries=calibration_queries,
                nlist=nlist,
                seed=seed,
            )
        )

    @classmethod
    def build_job(
        cls,
        ids: NDArray[np.int64],
        vectors: NDArray[np.float32],
        *,
        fingerprint: str,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        gpu: bool | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
        calibration_queries: NDArray[np.float32] | None = None,
        nlist: int | None = None,
        seed: int = 0,
        cancel: CancelToken | None = None,
    ) -> Job[VectorIndex]:
        """Build an index as a long job: yields Progress, returns the :class:`VectorIndex`.

        Parameters
        ----------
        ids, vectors
            Unique non-negative photo ids and their L2-normalised embeddings, shape (n, d).
            Rows whose norm is slightly off (e.g. vectors stored as float16) are renormalised.
        fingerprint
            The store state these vectors come from; saved with the index and compared on load.
        exact_threshold
            At or above this many vectors the index is approximate (IVF-Flat).
        gpu
            None uses a GPU when faiss has one, False never does, True asks for one (and still
            falls back to the CPU, with a warning, when there is none).
        target_recall
            Recall@10 that the IVF ``nprobe`` calibration must reach.
        calibration_queries
            Optional real queries (e.g. text embeddings, which sit apart from image embeddings)
            to calibrate ``nprobe`` on; by default indexed vectors are used, leave-one-out.
        nlist
            IVF cells; default ``sqrt(n)``.
        """
        ids, vectors = _check_pair(ids, vectors)
        n, dim = vectors.shape
        faiss = _faiss()
        if n < max(exact_threshold, _MIN_IVF_SIZE):
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            yield from _add_in_chunks(index, ids, vectors, cancel, "indexing")
            return cls(index, dim=dim, kind="exact", fingerprint=fingerprint, gpu=gpu)

        rng = np.random.default_rng(seed)
        # sqrt(n) cells, not faiss's usual 4-16*sqrt(n): k-means costs ~nlist^2 and dominated the
        # build on a 2-core laptop-class CPU (1789 cells at 200k vectors: minutes), while the
        # bigger cells (~1000 vectors at 1M) still scan in a few ms per query. Capped so each
        # cell gets enough training points.
        nlist = nlist or round(math.sqrt(n))
        nlist = max(1, min(nlist, n // _MIN_POINTS_PER_CELL))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # Spherical k-means keeps centroids on the unit sphere, where inner product ranks cells the
        # way it ranks the vectors inside them. 12 iterations instead of faiss's 25 halve the
        # training time; slightly less settled cells only cost a little more nprobe, which the
        # calibration below measures and pays.
        index.cp.spherical = True
        index.cp.niter = _KMEANS_ITERATIONS
        index.cp.seed = seed
        index.cp.max_points_per_centroid = _TRAIN_POINTS_PER_CELL
        sample_size = min(n, nlist * _TRAIN_POINTS_PER_CELL)
        sample = np.sort(rng.choice(n, size=sample_size, replace=False))
        yield Progress(0, n, f"training {nlist} cells on {sample_size} vectors", stage="training")
        check_cancel(cancel)
        index.train(vectors[sample])
        check_cancel(cancel)
        yield from _add_in_chunks(index, ids, vectors, cancel, "indexing")

        yield Progress(0, 0, "calibrating nprobe", stage="calibrating")
        nprobe, recall = calibrate_nprobe(
            index,
            ids,
            vectors,
            target_recall=target_recall,
            calibration_queries=calibration_queries,
            rng=rng,
            cancel=cancel,
        )
        logger.info(
            "IVF index: %d vectors, nlist=%d, nprobe=%d, recall@10~%.3f", n, nlist, nprobe, recall
        )
        return cls(
            index,
            dim=dim,
            kind="ivf",
            fingerprint=fingerprint,
            nprobe=nprobe,
            calibrated_recall=recall,
            gpu=gpu,
        )

    # ---------------------------------------------------------------------------------- search

    def search(
        self, queries: NDArray[np.float32], k: int, *, exclude: set[int] | None = None
    ) -> SearchResults:
        """The ``k`` best (photo id, cosine) pairs per query, best first.

        ``queries`` is one vector (d,) or a batch (m, d); each is normalised, so the scores are
        cosines. ``exclude`` drops those ids (the query photo itself, photos already shown); it
        is meant for small sets, since it works by fetching ``k + len(exclude)`` candidates.
        Fewer than ``k`` pairs come back only when the index holds fewer usable photos.
        """
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise ValueError(f"queries must have shape (m, {self._dim}) or ({self._dim},)")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.ascontiguousarray(q / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)
        excluded = exclude or set()
        with self._lock:
            total = int(self._cpu.ntotal)
            if k <= 0 or total == 0:
                return [[] for _ in range(q.shape[0])]
            fetch = min(total, k + len(excluded))
            searcher = self._cpu
            if self._gpu is not None:
                searcher = self._gpu
                fetch = min(fetch, _GPU_MAX_K)
            scores, labels = searcher.search(q, fetch)
        results: SearchResults = []
        for row_ids, row_scores in zip(labels.tolist(), scores.tolist(), strict=True):
            hits: list[tuple[int, float]] = []
            for photo_id, score in zip(row_ids, row_scores, strict=True):
                # -1 pads rows when an IVF probe found fewer than ``fetch`` candidates.
                if photo_id < 0 or photo_id in excluded:
                    continue
                hits.append((photo_id, score))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self._dim

    @property
    def kind(self) -> IndexKind:
        """``"exact"`` (brute force) or ``"ivf"`` (approximate, IVF-Flat)."""
        return self._kind

    @property
    def fingerprint(self) -> str:
        """The store state this index reflects."""
        return self._fingerprint

    @property
    def nlist(self) -> int | None:
        """Cells of an IVF index (None for exact)."""
        return int(self._cpu.nlist) if self._kind == "ivf" else None

    @property
    def nprobe(self) -> int | None:
        """Cells an IVF search scans (None for exact)."""
        return self._nprobe

    @property
    def calibrated_recall(self) -> float | None:
        """Recall@10 measured at build time with the chosen ``nprobe`` (None for exact)."""
        return self._calibrated_recall

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU replica."""
        return self._gpu is not None

    # ------------------------------------------------------------------------------ mutation

    def add(
        self, ids: NDArray[np.int64], vectors: NDArray[np.float32], *, fingerprint: str
    ) -> None:
        """Insert or replace ``ids`` without a rebuild; ``fingerprint`` is the store's new state.

        For an IVF index new vectors go to the existing cells: fine for small additions, but the
        cells drift from the data over time, so the store should rebuild after large changes.
        """
        ids, vectors = _check_pair(ids, vectors)
        if vectors.shape[1] != self._dim:
            raise ValueError(f"vectors must have dimension {self._dim}")
        with self._lock:
            if len(ids):
                self._own()
                self._cpu.remove_ids(ids)
                self._cpu.add_with_ids(vectors, ids)
                self._refresh_gpu()
            self._fingerprint = fingerprint

    def remove(self, ids: NDArray[np.int64] | Sequence[int], *, fingerprint: str) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed."""
        id_array = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        with self._lock:
            if len(id_array):
                self._own()
            removed = int(self._cpu.remove_ids(id_array)) if len(id_array) else 0
            if removed:
                self._refresh_gpu()
            self._fingerprint = fingerprint
        return removed

    def _own(self) -> None:
        """Turn a memory-mapped index into one that owns its vectors, so that it can change.

        faiss aborts the process (an assertion, not an exception) on resizing a viewed vector.
        """
        if self._mapped:
            faiss = _faiss()
            self._cpu = faiss.deserialize_index(faiss.serialize_index(self._cpu))
            if self._nprobe is not None:
                self._cpu.nprobe = self._nprobe
            self._mapped = False

    def _refresh_gpu(self) -> None:
        if self._gpu is not None:
            self._gpu = _to_gpu(self._cpu, self._nprobe)

    # -------------------------------------------------------------------------- persistence

    def save(self, directory: Path, name: str) -> None:
        """Write ``<name>.json`` and its index file under ``directory``, atomically.

        The index goes to a new uniquely named file (temp name, fsync, rename); the manifest that
        names it is replaced last. A crash before that leaves the previous pair intact; a crash
        after leaves the new pair. Files of earlier saves are removed afterwards. Any failure to
        write (disk full, read-only folder), faiss's own included, is an OSError.
        """
        cache_files.check_name(name)
        faiss = _faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        index_file = cache_files.new_index_file_name(name)
        tmp = directory / f"{index_file}.tmp"
        try:
            with self._lock:
                try:
                    faiss.write_index(self._cpu, str(tmp))
                except RuntimeError as err:  # faiss reports a failed open or write this way
                    raise OSError(_faiss_io_reason(err)) from err
                manifest = {
                    "format_version": cache_files.FORMAT_VERSION,
                    "fingerprint": self._fingerprint,
                    "count": len(self),
                    "dim": self._dim,
                    "kind": self._kind,
                    "index_file": index_file,
                    "bytes": tmp.stat().st_size,
                    "crc32": cache_files.crc32_and_fsync(tmp),
                    "faiss_version": str(getattr(faiss, "__version__", "unknown")),
                    "nprobe": self._nprobe,
                    "calibrated_recall": self._calibrated_recall,
                }
            os.replace(tmp, directory / index_file)
            cache_files.write_atomic(
                directory / f"{name}.json", json.dumps(manifest, indent=2).encode()
            )
        except BaseException:
            # The manifest still names the previous file, so neither of these is referenced.
            tmp.unlink(missing_ok=True)
            (directory / index_file).unlink(missing_ok=True)
            raise
        cache_files.fsync_dir(directory)
        cache_files.remove_stale_files(directory, name, keep=index_file)

    @staticmethod
    def manifest(directory: Path, name: str) -> dict[str, object] | None:
        """What the saved index ``name`` claims to be (kind, count, dim...), or None if absent."""
        cache_files.check_name(name)
        try:
            raw = json.loads((Path(directory) / f"{name}.json").read_bytes())
        except (OSError, ValueError):
            return None
        manifest = cache_files.Manifest.parse(raw)
        return None if manifest is None else dataclasses.asdict(manifest)

    @classmethod
    def load(
        cls, directory: Path, name: str, *, expected_fingerprint: str, gpu: bool | None = None
    ) -> VectorIndex | None:
        """The saved index, or None when it is missing, damaged, or from another store state.

        Never raises for a bad file: the caller rebuilds from the store.
        """
        cache_files.check_name(name)
        directory = Path(directory)
        manifest_path = directory / f"{name}.json"
        try:
            raw = json.loads(manifest_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            logger.warning(
                "Index manifest %s unreadable (%s); it will be rebuilt", manifest_path, err
            )
            return None
        manifest = cache_files.Manifest.parse(raw)
        if manifest is None or not cache_files.is_index_file_name(name, manifest.index_file):
            logger.warning("Index manifest %s is malformed; it will be rebuilt", manifest_path)
            return None
        if manifest.fingerprint != expected_fingerprint:
            logger.info("Index %s is stale (store changed); it will be rebuilt", name)
            return None
        path = directory / manifest.index_file
        try:
            intact = (
                path.stat().st_size == manifest.bytes and cache_files.crc32(path) == manifest.crc32
            )
        except OSError:
            intact = False
        if not intact:
            # Checked before faiss parses the file: a corrupted header can make faiss attempt huge
            # allocations or read past the data, which no exception handler can take back.
            logger.warning("Index file %s missing or damaged; it will be rebuilt", path)
            return None
        faiss = _faiss()
        # Memory-mapped rather than read: the vectors are the file's pages in the page cache,
        # shared by every process and not copied (8x faster to open at 200k x 512 d, and no
        # second copy in memory); a mutation copies them first (_own). POSIX only: elsewhere a
        # mapped file could not be replaced by the next save.
        mapped = os.name == "posix" and hasattr(faiss, "IO_FLAG_MMAP_IFC")
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        except Exception as err:  # faiss raises RuntimeError, but any failure means "rebuild"
            logger.warning("Index file %s unreadable (%s); it will be rebuilt", path, err)
            return None
        expected_type = faiss.IndexIDMap2 if manifest.kind == "exact" else faiss.IndexIVFFlat
        if (
            not isinstance(index, expected_type)
            or int(index.ntotal) != manifest.count
            or int(index.d) != manifest.dim
        ):
            logger.warning("Index file %s does not match its manifest; it will be rebuilt", path)
            return None
        # A save killed midway left files no manifest names, and the index loads from now on:
        # without this, nothing would ever remove them.
        cache_files.remove_stale_files(
            directory, name, keep=manifest.index_file, older_than=STALE_SAVE_SECONDS
        )
        loaded = cls(
            index,
            dim=manifest.dim,
            kind=manifest.kind,
            fingerprint=manifest.fingerprint,
            nprobe=manifest.nprobe,
            calibrated_recall=manifest.calibrated_recall,
            gpu=gpu,
        )
        loaded._mapped = mapped
        return loaded

    @classmethod
    def load_or_build(
        cls,
        directory: Path,
        name: str,
        *,
        fingerprint: str,
        fetch: Callable[[], tuple[NDArray[np.int64], NDArray[np.float32]]],
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        gpu: bool | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
    ) -> VectorIndex:
        """The saved index when it matches ``fingerprint``; otherwise build from ``fetch()``."""
        return run_to_end(
            cls.load_or_build_job(
                directory,
                name,
                fingerprint=fingerprint,
                fetch=fetch,
                exact_threshold=exact_threshold,
                gpu=gpu,
                target_recall=target_recall,
            )
        )

    @classmethod
    def load_or_build_job(
        cls,
        directory: Path,
        name: str,
        *,
        fingerprint: str,
        fetch: Callable[[], tuple[NDArray[np.int64], NDArray[np.float32]]],
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        gpu: bool | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
        cancel: CancelToken | None = None,
    ) -> Job[VectorIndex]:
        """:meth:`load_or_build` as a long job (progress, cancellation) for the GUI and CLI.

        A failed save (disk full, read-only folder) is logged, not raised: the index in memory
        is good, and the next start simply rebuilds it.
        """
        loaded = cls.load(directory, name, expected_fingerprint=fingerprint, gpu=gpu)
        if loaded is not None:
            return loaded
        yield Progress(0, 0, "reading vectors from the library", stage="loading")
        ids, vectors = fetch()
        index = yield from cls.build_job(
            ids,
            vectors,
            fingerprint=fingerprint,
            exact_threshold=exact_threshold,
            gpu=gpu,
            target_recall=target_recall,
            cancel=cancel,
        )
        yield Progress(0, 0, "saving the index", stage="saving")
        try:
            index.save(directory, name)
        except OSError as err:
            _say_not_saved(Path(directory), err)
        return index


# ------------------------------------------------------------------------------------ helpers


#: Folders already told about, so that a read-only or full disk is said once per process, not at
#: every rebuild (the GUI rebuilds after each indexing batch).
_unsaved_dirs: set[Path] = set()


def _say_not_saved(directory: Path, err: OSError) -> None:
    """Tell the user, once per folder, that the cache is not on disk and what that costs."""
    level = logging.DEBUG if directory in _unsaved_dirs else logging.WARNING
    _unsaved_dirs.add(directory)
    reason = err.strerror or str(err) or type(err).__name__
    logger.log(
        level,
        "The search index could not be saved in %s (%s); searches work without it, and it is "
        "rebuilt next time.",
        directory,
        reason,
    )


def _faiss_io_reason(err: RuntimeError) -> str:
    """The system's reason inside a faiss I/O error, e.g. "Permission denied".

    faiss words them "Error in <function> at <file>: Error: 'f' failed: could not open <path>
    for writing: Permission denied" or "... write error in <path>: 10 != 20 (No space left on
    device)"; the path is already known to the caller.
    """
    message = " ".join(str(err).split())
    if message.endswith(")") and "(" in message:
        return message[message.rindex("(") + 1 : -1]
    _, found, reason = message.rpartition(": ")
    return reason if found and reason else message


def _faiss() -> Any:
    """faiss, imported on first use: it costs start-up time the window should not pay."""
    import faiss

    return faiss


def _check_pair(
    ids: NDArray[np.int64], vectors: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Validated, C-contiguous copies-if-needed of ``ids`` and unit-norm ``vectors``."""
    id_array = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int64)
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != id_array.shape[0]:
        raise ValueError("vectors must have shape (len(ids), d)")
    if matrix.shape[1] == 0:
        raise ValueError("vectors must have at least one dimension")
    if len(id_array) == 0:
        return id_array, matrix
    # faiss uses -1 to pad missing results, so negative ids could not be told apart from it.
    if int(id_array.min()) < 0:
        raise ValueError("photo ids must be non-negative")
    if len(np.unique(id_array)) != len(id_array):
        raise ValueError("photo ids must be unique")
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
    if not np.all(np.isfinite(norms)) or float(norms.min()) == 0.0:
        raise ValueError("vectors must be finite and non-zero")
    if float(np.abs(norms - 1.0).max()) > 1e-4:
        matrix = (matrix / norms[:, None]).astype(np.float32)
    return id_array, matrix


def _add_in_chunks(
    index: Any,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    cancel: CancelToken | None,
    stage: str,
) -> Job[None]:
    meter = ProgressMeter(len(ids), stage=stage)
    for start in range(0, len(ids), _ADD_CHUNK):
        check_cancel(cancel)
        stop = start + _ADD_CHUNK
        index.add_with_ids(vectors[start:stop], ids[start:stop])
        meter.advance(len(ids[start:stop]))
        if meter.due():
            yield meter.progress(f"{meter.done} of {meter.total} vectors")


def _gpu_wanted(gpu: bool | None) -> bool:
    if gpu is False:
        return False
    faiss = _faiss()
    has_gpu = hasattr(faiss, "get_num_gpus") and int(faiss.get_num_gpus()) > 0
    if gpu and not has_gpu:
        logger.warning("No GPU available to faiss; searching on the CPU")
    return has_gpu


def _to_gpu(cpu_index: Any, nprobe: int | None) -> Any | None:
    """A GPU replica of ``cpu_index``, or None (logged) when faiss cannot make one."""
    faiss = _faiss()
    try:
        resources = faiss.StandardGpuResources()
        replica = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
        # The replica does not own the resources object; keep it alive as long as the replica.
        replica.referenced_objects = [resources]
        if nprobe is not None:
            replica.nprobe = nprobe
    except Exception as err:  # any GPU failure (driver, memory, unsupported type) -> CPU search
        logger.warning("GPU faiss unavailable (%s); searching on the CPU", err)
        return None
    return replica
