"""Indexing: scan folders, decode what is new or changed, embed it, and store it batch by batch.

Mark-and-sweep over one in-memory map of what the store knows, so an unchanged library costs
little more than walking it. Each batch is committed in one transaction: a run killed at any
moment resumes where it stopped, with no duplicate and no lost photo.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from visuallens_app._gc import collector_paused
from visuallens_app.errors import Cancelled, LibraryError
from visuallens_app.jobs import CancelToken, Job, Progress, ProgressMeter
from visuallens_app.library.decode import DecodedPhoto, DecodeError, decode_photo
from visuallens_app.library.paths import display_path, normalise_root, path_to_db
from visuallens_app.library.scan import ScannedFile, missing_roots, scan_folders
from visuallens_app.library.store import Failure, NewPhoto, PhotoStore
from visuallens_app.library.thumbnails import ThumbnailCache
from visuallens_app.models.base import Encoder, SignalEncoder

BATCH_SIZE = 32
#: The first batches are smaller (4, 8, 16, then BATCH_SIZE), so the first photos are in the
#: library, and on screen, within seconds of the start instead of after 32 decodes.
FIRST_BATCH_SIZE = 4
#: Photos encoded per call inside a batch: progress moves, and Ctrl-C or Cancel keeps, this
#: often, without waiting for the whole batch.
ENCODE_CHUNK = 8

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IndexReport:
    """What one indexing run did; ``failed`` lists every unreadable file under the roots."""

    encoder: str
    indexed: int = 0  # photos decoded and stored (new, changed, or re-embedded)
    unchanged: int = 0
    removed: int = 0
    reused_vectors: int = 0  # moved/renamed/duplicate photos that kept their vector
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    offline_roots: list[str] = field(default_factory=list)
    not_files: int = 0  # named like photos, but pipes, devices or sockets: never read
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, note): indexed, but...
    empty_roots: list[str] = field(default_factory=list)  # folders with no photo in them at all
    cancelled: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "reused_vectors": self.reused_vectors,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "offline_roots": self.offline_roots,
            "not_files": self.not_files,
            "notes": [{"path": p, "note": n} for p, n in self.notes],
            "empty_roots": self.empty_roots,
            "encoder": self.encoder,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True, slots=True)
class _Decoded:
    file: ScannedFile
    photo: DecodedPhoto | None
    error: str | None
    transient: bool = False
    vector: NDArray[np.float32] | None = None  # already embedded elsewhere (Ray workers)
    signals: tuple[float, float] | None = None  # and its (confidence, document) signals


#: Decodes (and may embed) the files to index, one result per file in any order: the local
#: thread pool by default, or a Ray cluster (library/ray_indexer.py).
Embedder = Callable[[Sequence[ScannedFile]], Iterator[_Decoded]]


def _decode(file: ScannedFile, target: int, thumbnails: ThumbnailCache) -> _Decoded:
    try:
        photo = decode_photo(file.path, target=target, expected_size=file.size)
    except DecodeError as err:
        return _Decoded(file, None, str(err), err.transient)
    if not thumbnails.has(photo.content_hash):
        try:
            thumbnails.save(photo.content_hash, photo.thumbnail)
        except OSError as err:  # a cache: a full or read-only disk must not stop indexing
            log.warning("Cannot write the thumbnail of %s: %s", display_path(file.path), err)
    return _Decoded(file, photo, None)


def _decoded_in_order(
    files: Sequence[ScannedFile], decode: Callable[[ScannedFile], _Decoded], workers: int
) -> Iterator[_Decoded]:
    """Decode on a small thread pool (Pillow releases the GIL) while the caller encodes.

    Keeps a bounded window of pending decodes so memory stays flat however large the library.
    """
    window = max(2 * BATCH_SIZE, 4 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: list[Future[_Decoded]] = []
        it = iter(files)
        for file in it:
            pending.append(pool.submit(decode, file))
            if len(pending) >= window:
                break
        position = 0
        try:
            while position < len(pending):
                result = pending[position].result()
                pending[position] = None  # type: ignore[call-overload]
                position += 1
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(decode, nxt))
                yield result
        finally:
            for future in pending[position:]:
                if future is not None:
                    future.cancel()


def _collector_paused_over(items: Iterator[ScannedFile]) -> Iterator[ScannedFile]:
    """``items`` with the collector paused while each is produced, not while the caller runs."""
    while True:
        with collector_paused():
            item = next(items, None)
        if item is None:
            return
        yield item


def check_roots(store: PhotoStore, roots: Sequence[Path]) -> list[Path]:
    """The roots, normalised, once each; a file, or a missing folder the library never knew
    (a typo, not an unplugged drive), is one sentence. Cheap: callers check before loading a
    model."""
    normalised = list(dict.fromkeys(normalise_root(r) for r in roots))
    known_roots = set(store.roots())
    missing = set(missing_roots(normalised))
    for root in normalised:
        if root.exists() and not root.is_dir():
            raise LibraryError(f"{display_path(root)} is a file, not a folder of photos.")
        if root in missing and root not in known_roots:
            raise LibraryError(f"{display_path(root)} does not exist: check the folder name.")
    return normalised


def index_folders(
    store: PhotoStore,
    encoder: Encoder,
    roots: Sequence[Path],
    *,
    cancel: CancelToken | None = None,
    decode_workers: int | None = None,
    embed: Embedder | None = None,
) -> Job[IndexReport]:
    """Bring the library up to date with ``roots`` and return what changed.

    Yields Progress records (stage "scan", then "index", then "sweep"); cancelling keeps every
    batch already written and returns a report with ``cancelled`` set. Nothing is ever deleted
    on the strength of an absence the scan cannot vouch for: a root that is missing, or that
    suddenly yields nothing while the library knows photos there (an empty mount point), is
    marked offline, and nothing under a folder that could not be listed is swept.
    """
    cancel = cancel or CancelToken()
    report = IndexReport(encoder=encoder.id)
    roots = check_roots(store, roots)
    missing = set(missing_roots(roots))
    store.add_roots(roots)
    online = [r for r in roots if r not in missing]
    # A folder inside another one is walked as part of it, once.
    walked = [r for r in online if not any(r != o and r.is_relative_to(o) for o in online)]
    offline = set(missing)
    scan_errors: list[tuple[str, str]] = []
    transient: list[tuple[str, str]] = []

    try:
        # 1. Scan and diff against the store.
        yield Progress(0, 0, "Scanning folders…", stage="scan")
        known: dict[str, tuple[int, int, int]] = {}
        failed_before: dict[str, tuple[int, int]] = {}
        for root in online:
            with collector_paused():
                known.update(store.known_files(root, encoder.id))
            failed_before.update(store.known_failures(root))
        unlisted: list[str] = []  # folders os.scandir refused: nothing under them is swept

        def on_error(path: Path, why: str) -> None:
            scan_errors.append((display_path(path), why))
            unlisted.append(path_to_db(path) + os.sep)

        def on_special(path: Path, why: str) -> None:
            report.not_files += 1

        todo: list[ScannedFile] = []
        present: set[str] = set()
        matched: set[str] = set()  # unchanged files, found so by the scan itself
        found_under: set[Path] = set()
        last_root: Path | None = None
        unchanged = 0
        # The loop runs once per file of the library: kept to plain local operations, it costs a
        # re-scan of 10,000 unchanged files little more than the walk itself (issue 13).
        for file in _collector_paused_over(
            scan_folders(
                walked,
                cancel=cancel,
                on_error=on_error,
                on_special=on_special,
                unchanged=known,
                matched=matched,
            )
        ):
            fspath, root, size, mtime_ns = file
            key = fspath if fspath.isascii() else path_to_db(fspath)
            present.add(key)
            if root is not last_root:
                found_under.add(root)
                last_root = root
            if len(present) % 2000 == 0:
                yield Progress(len(present), 0, f"Scanning… {len(present)} files", stage="scan")
            old = known.get(key)
            if old is not None and old[2] and old[0] == size and old[1] == mtime_ns:
                unchanged += 1
                continue
            if old is None and failed_before.get(key) == (size, mtime_ns):
                continue  # still the same broken file: reported below, not re-read
            todo.append(file)
        report.unchanged += unchanged + len(matched)
        present |= matched
        for root in walked:
            prefix = path_to_db(root) + os.sep
            if root in found_under or any(k.startswith(prefix) for k in matched):
                continue
            if any(k.startswith(prefix) for k in known):
                offline.add(root)  # an empty mount point: the drive is not there
                offline.update(r for r in online if r.is_relative_to(root))
            elif not any(u.startswith(prefix) for u in unlisted):
                report.empty_roots.append(display_path(root))
        for root in roots:
            if root in offline:
                store.set_root_state(root, "offline")
                report.offline_roots.append(display_path(root))
            else:
                store.set_root_state(root, "ok")
        keep = tuple(unlisted) + tuple(path_to_db(r) + os.sep for r in offline)
        stale = [k for k in (*known, *failed_before) if k not in present and not k.startswith(keep)]

        # 2. Decode, embed and store the new and changed files, one transaction per batch.
        have_vector = store.hashes_with_vectors(encoder.id) if todo else set()
        meter = ProgressMeter(len(todo), stage="index")
        yield meter.progress(f"{len(todo)} photos to index")
        workers = decode_workers or max(1, min(4, (os.cpu_count() or 2)))

        def decode(file: ScannedFile) -> _Decoded:
            return _decode(file, encoder.input_size, store.thumbnails)

        batch: list[_Decoded] = []
        limit = FIRST_BATCH_SIZE
        source = embed(todo) if embed is not None else _decoded_in_order(todo, decode, workers)
        for item in source:
            cancel.check()  # pause and cancel take effect within a batch, not after it
            batch.append(item)
            if len(batch) >= limit:
                transient += yield from _write(
                    store, encoder, batch, have_vector, report, meter=meter, cancel=cancel
                )
                batch = []
                limit = min(BATCH_SIZE, 2 * limit)
        if batch:
            transient += yield from _write(
                store, encoder, batch, have_vector, report, meter=meter, cancel=cancel
            )
        yield meter.progress(f"Indexed {meter.done} of {meter.total}")

        # 3. Sweep: only after every root was walked to the end.
        cancel.check()
        report.removed = store.remove_paths(stale)
        if report.removed:
            store.prune_orphans()
        for root in online:
            if root not in offline:
                store.mark_scanned(root)
        yield Progress(1, 1, "Done", stage="sweep")
    except Cancelled:
        report.cancelled = True

    report.failed = [(display_path(p), why) for p, why in store.failures(roots)]
    report.failed += scan_errors + transient
    return report


def _write(
    store: PhotoStore,
    encoder: Encoder,
    batch: Sequence[_Decoded],
    have_vector: set[str],
    report: IndexReport,
    *,
    meter: ProgressMeter,
    cancel: CancelToken,
) -> Job[list[tuple[str, str]]]:
    """Encode and store one batch, counting photos on ``meter`` as they are encoded; returns
    the failures not worth remembering (access, not content).

    Interrupted between or during its encode calls (Cancel, Ctrl-C, the job closed), it still
    stores every photo whose vector it has, then lets the interruption through: what was
    encoded is kept, and only the rest is done again next time.
    """
    photos: list[NewPhoto] = []
    failures: list[Failure] = []
    transient: list[tuple[str, str]] = []
    to_encode: dict[str, DecodedPhoto] = {}
    embedded: dict[str, NDArray[np.float32]] = {}
    ray_signals: dict[str, tuple[float, float]] = {}
    for item in batch:
        file = item.file
        if item.photo is None:
            reason = item.error or "unreadable"
            if item.transient:
                transient.append((display_path(file.path), reason))
            else:
                failures.append(Failure(file.path, file.root, file.size, file.mtime_ns, reason))
            continue
        photo = item.photo
        if photo.note is not None:  # said once: an unchanged photo is not decoded again
            report.notes.append((display_path(file.path), photo.note))
        photos.append(
            NewPhoto(
                path=file.path,
                root=file.root,
                size=file.size,
                mtime_ns=file.mtime_ns,
                content_hash=photo.content_hash,
                width=photo.width,
                height=photo.height,
                format=photo.format,
                taken_at=photo.meta.taken_at,
                gps=photo.meta.gps,
                camera=photo.meta.camera,
                orientation=photo.meta.orientation,
            )
        )
        if photo.content_hash in have_vector:
            report.reused_vectors += 1
        elif item.vector is not None:
            embedded.setdefault(photo.content_hash, item.vector)
            if item.signals is not None:
                ray_signals.setdefault(photo.content_hash, item.signals)
        else:
            to_encode.setdefault(photo.content_hash, photo)
    vectors: dict[str, NDArray[np.float32]] = dict(embedded)  # from Ray workers
    signals: dict[str, tuple[float, float]] = dict(ray_signals)
    waiting = list(to_encode)
    # Photos that need nothing encoded (unreadable, or a vector already known) count at once.
    meter.advance(len(batch) - sum(1 for p in photos if p.content_hash in to_encode))
    try:
        for start in range(0, len(waiting), ENCODE_CHUNK):
            cancel.check()
            chunk = waiting[start : start + ENCODE_CHUNK]
            images = [to_encode[h].image for h in chunk]
            if isinstance(encoder, SignalEncoder):
                # The classifier's confidence and document mass come from the same forward pass.
                matrix, found = encoder.encode_images_with_signals(images)
                signals.update(
                    (h, (float(c), float(d)))
                    for h, c, d in zip(chunk, found.confidence, found.document, strict=True)
                )
            else:
                matrix = encoder.encode_images(images)
            vectors.update(zip(chunk, matrix, strict=True))
            meter.advance(sum(1 for p in photos if p.content_hash in chunk))
            if meter.due():
                yield meter.progress(f"Indexed {meter.done} of {meter.total}")
    except BaseException:
        encoded = [p for p in photos if p.content_hash in vectors or p.content_hash in have_vector]
        # A job closed only after its store was (left to the garbage collector) keeps nothing.
        with contextlib.suppress(sqlite3.ProgrammingError):
            store.write_batch(encoded, vectors, encoder.id, failures, signals=signals)
            have_vector.update(vectors)
            report.indexed += len(encoded)
        raise
    store.write_batch(photos, vectors, encoder.id, failures, signals=signals)
    have_vector.update(vectors)
    report.indexed += len(photos)
    if not waiting and meter.due():  # vectors that came ready (Ray) still move the count
        yield meter.progress(f"Indexed {meter.done} of {meter.total}")
    return transient
