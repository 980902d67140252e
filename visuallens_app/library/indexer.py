"""Indexing: scan folders, decode what is new or changed, embed it, and store it batch by batch.

Mark-and-sweep over one in-memory map of what the store knows, so an unchanged library costs
little more than walking it. Each batch is committed in one transaction: a run killed at any
moment resumes where it stopped, with no duplicate and no lost photo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from visuallens_app.errors import Cancelled, LibraryError
from visuallens_app.jobs import CancelToken, Job, Progress, ProgressMeter
from visuallens_app.library.decode import DecodedPhoto, DecodeError, decode_photo
from visuallens_app.library.paths import display_path, path_to_db
from visuallens_app.library.scan import ScannedFile, missing_roots, scan_folders
from visuallens_app.library.store import Failure, NewPhoto, PhotoStore
from visuallens_app.models.base import Encoder

BATCH_SIZE = 32


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
    cancelled: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "reused_vectors": self.reused_vectors,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "offline_roots": self.offline_roots,
            "encoder": self.encoder,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True, slots=True)
class _Decoded:
    file: ScannedFile
    photo: DecodedPhoto | None
    error: str | None


def _decode(file: ScannedFile, target: int, store: PhotoStore) -> _Decoded:
    try:
        photo = decode_photo(file.path, target=target)
    except DecodeError as err:
        return _Decoded(file, None, str(err))
    if not store.thumbnails.has(photo.content_hash):
        store.thumbnails.save(photo.content_hash, photo.thumbnail)
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


def index_folders(
    store: PhotoStore,
    encoder: Encoder,
    roots: Sequence[Path],
    *,
    cancel: CancelToken | None = None,
    decode_workers: int | None = None,
) -> Job[IndexReport]:
    """Bring the library up to date with ``roots`` and return what changed.

    Yields Progress records (stage "scan", then "index", then "sweep"); cancelling keeps every
    batch already written and returns a report with ``cancelled`` set.
    """
    cancel = cancel or CancelToken()
    report = IndexReport(encoder=encoder.id)
    roots = [Path(os.path.abspath(r)) for r in roots]
    for root in roots:
        if root.exists() and not root.is_dir():
            raise LibraryError(f"{display_path(root)} is a file, not a folder of photos.")
    store.add_roots(roots)
    offline = set(missing_roots(roots))
    for root in roots:
        if root in offline:
            # An unmounted drive deletes nothing: its photos stay, marked offline.
            store.set_root_state(root, "offline")
            report.offline_roots.append(display_path(root))
        else:
            store.set_root_state(root, "ok")
    online = [r for r in roots if r not in offline]
    scan_errors: list[tuple[str, str]] = []

    try:
        # 1. Scan and diff against the store.
        yield Progress(0, 0, "Scanning folders…", stage="scan")
        todo: list[ScannedFile] = []
        stale: list[str] = []
        seen = 0
        for root in online:
            known = store.known_files(root)
            needs_vector = store.paths_missing_vectors(root, encoder.id)
            failed_before = store.known_failures(root)
            present: set[str] = set()
            for file in scan_folders(
                [root],
                cancel=cancel,
                on_error=lambda p, why: scan_errors.append((display_path(p), why)),
            ):
                key = path_to_db(file.fspath)
                present.add(key)
                seen += 1
                if seen % 2000 == 0:
                    yield Progress(seen, 0, f"Scanning… {seen} files", stage="scan")
                stat = (file.size, file.mtime_ns)
                if known.get(key) == stat:
                    if key not in needs_vector:
                        report.unchanged += 1
                        continue
                elif failed_before and failed_before.get(key) == stat:
                    continue  # still the same broken file: reported below, not re-read
                todo.append(file)
            stale.extend(k for k in known if k not in present)
            stale.extend(k for k in failed_before if k not in present)

        # 2. Decode, embed and store the new and changed files, one transaction per batch.
        have_vector = store.hashes_with_vectors(encoder.id) if todo else set()
        meter = ProgressMeter(len(todo), stage="index")
        yield meter.progress(f"{len(todo)} photos to index")
        workers = decode_workers or max(1, min(4, (os.cpu_count() or 2)))
        decode: Callable[[ScannedFile], _Decoded] = lambda f: _decode(f, encoder.input_size, store)  # noqa: E731
        batch: list[_Decoded] = []
        for item in _decoded_in_order(todo, decode, workers):
            batch.append(item)
            if len(batch) >= BATCH_SIZE:
                cancel.check()
                _write(store, encoder, batch, have_vector, report)
                meter.advance(len(batch))
                batch = []
                if meter.due():
                    yield meter.progress(f"Indexed {meter.done} of {meter.total}")
        if batch:
            cancel.check()
            _write(store, encoder, batch, have_vector, report)
            meter.advance(len(batch))
        yield meter.progress(f"Indexed {meter.done} of {meter.total}")

        # 3. Sweep: only after every root was walked to the end.
        cancel.check()
        report.removed = store.remove_paths(stale)
        for root in online:
            store.mark_scanned(root)
        yield Progress(1, 1, "Done", stage="sweep")
    except Cancelled:
        report.cancelled = True

    report.failed = scan_errors_and_failures(store, roots, scan_errors)
    return report


def scan_errors_and_failures(
    store: PhotoStore, roots: Sequence[Path], scan_errors: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Every current failure under ``roots``: undecodable files and unreadable folders."""
    root_set = {display_path(r) for r in roots}
    failed = [
        (display_path(p), reason)
        for p, reason in store.failures()
        if any(display_path(p).startswith(r.rstrip("/") + "/") for r in root_set)
    ]
    return failed + list(scan_errors)


def _write(
    store: PhotoStore,
    encoder: Encoder,
    batch: Sequence[_Decoded],
    have_vector: set[str],
    report: IndexReport,
) -> None:
    photos: list[NewPhoto] = []
    failures: list[Failure] = []
    to_encode: dict[str, DecodedPhoto] = {}
    for item in batch:
        file = item.file
        if item.photo is None:
            failures.append(
                Failure(file.path, file.root, file.size, file.mtime_ns, item.error or "unreadable")
            )
            continue
        photo = item.photo
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
        else:
            to_encode.setdefault(photo.content_hash, photo)
    vectors: dict[str, NDArray[np.float32]] = {}
    if to_encode:
        matrix = encoder.encode_images([p.image for p in to_encode.values()])
        vectors = dict(zip(to_encode, matrix, strict=True))
    store.write_batch(photos, vectors, encoder.id, failures)
    have_vector.update(vectors)
    report.indexed += len(photos)
