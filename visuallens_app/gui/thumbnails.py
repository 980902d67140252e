"""Thumbnails for the grids: decoded off the UI thread, kept in an LRU of QPixmaps.

Only what is painted asks for a thumbnail, so a 100,000-photo library costs what fits on screen.
When the user scrolls fast, queued requests for rows that already left the screen are dropped
(:meth:`ThumbnailLoader.drop_queued`) so the next screenful is not stuck behind them.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage, QImageReader, QPixmap

from visuallens_app.gui.workers import (
    drop_released,
    lower_thread_priority,
    register_pool,
    release_on_ui_thread,
)
from visuallens_app.library.thumbnails import ensure_thumbnail

#: Decoded thumbnails kept in memory, in bytes (~400 thumbnails of 256 px).
CACHE_BYTES = 96 * 1024 * 1024
#: Thumbnails are what the user waits for: nicer than the UI, less nice than indexing.
THUMBNAIL_NICENESS = 5


def square_tile(image: QImage, side: int) -> QImage:
    """Centre-crop to a square and scale to ``side`` pixels (done on the worker, so painting
    a grid is a plain blit however many tiles are on screen)."""
    if image.isNull() or side <= 0:
        return image
    short = min(image.width(), image.height())
    x, y = (image.width() - short) // 2, (image.height() - short) // 2
    return image.copy(x, y, short, short).scaled(
        side, side, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class _Relay(QObject):
    """Carries a decoded image from a worker to the loader. It has no Qt parent and each worker
    holds a reference, so a worker still running when the window (and the loader) is destroyed
    emits into a live object whose connection Qt has dropped, instead of into freed memory; the
    worker gives its reference back to the UI thread, so the relay is never destroyed on a
    worker (see :func:`~visuallens_app.gui.workers.release_on_ui_thread`)."""

    decoded = Signal(str, QImage)


class _Load(QRunnable):
    def __init__(self, relay: _Relay, key: str, path: Path, side: int, source: Path | None) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._box = [relay]  # given back to the UI thread when done (see release_on_ui_thread)
        self._key = key
        self._path = path
        self._side = side
        self._source = source

    def run(self) -> None:
        lower_thread_priority(THUMBNAIL_NICENESS)
        try:
            if self._source is not None and not self._path.is_file():
                ensure_thumbnail(self._path, self._source)  # deleted: made again from the photo
            reader = QImageReader(str(self._path))
            reader.setAutoTransform(True)
            image = reader.read()
            if self._side:
                image = square_tile(image, self._side)
            self._box[0].decoded.emit(self._key, image)
        finally:
            release_on_ui_thread(self._box)


class ThumbnailLoader(QObject):
    """Asynchronous thumbnail cache; ``thumbnail_ready(key)`` says when a pixmap arrived."""

    thumbnail_ready = Signal(str)

    def __init__(
        self, parent: QObject | None = None, *, cache_bytes: int = CACHE_BYTES, threads: int = 2
    ) -> None:
        super().__init__(parent)
        self.pool = register_pool(QThreadPool(self))
        self.pool.setMaxThreadCount(threads)
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._bytes = 0
        self._limit = cache_bytes
        self._queued: set[str] = set()
        self._missing: set[str] = set()
        self._relay = _Relay()
        self._relay.decoded.connect(self._on_decoded)
        #: Square side the grid shows (0: keep the stored thumbnail as it is).
        self.side = 0

    def set_side(self, side: int) -> None:
        """Tiles are prepared at this size; a new size drops what was prepared at the old one."""
        if side != self.side:
            self.side = side
            self.clear()

    def get(self, key: str, path: Path | None, source: Path | None = None) -> QPixmap | None:
        """The pixmap for ``key`` if in memory; otherwise start loading it and return None.

        ``source`` is the photo the thumbnail file at ``path`` was made from: a thumbnail
        deleted from the cache is made again from it, once asked for.
        """
        pixmap = self._cache.get(key)
        if pixmap is not None:
            self._cache.move_to_end(key)
            return pixmap
        if path is not None and key not in self._queued and key not in self._missing:
            self._queued.add(key)
            self.pool.start(_Load(self._relay, key, path, self.side, source))
        return None

    def is_missing(self, key: str) -> bool:
        return key in self._missing

    def drop_queued(self) -> None:
        """Forget requests not started yet (their rows scrolled away; they ask again if shown)."""
        self.pool.clear()
        self._queued.clear()

    def clear(self) -> None:
        self.drop_queued()
        self._cache.clear()
        self._missing.clear()
        self._bytes = 0

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        self.pool.clear()
        done = bool(self.pool.waitForDone(timeout_ms))
        drop_released()
        return done

    @Slot(str, QImage)  # a declared slot: PySide6 queues cross-thread calls to it safely
    def _on_decoded(self, key: str, image: QImage) -> None:
        drop_released()
        self._queued.discard(key)
        if image.isNull():
            self._missing.add(key)
            self.thumbnail_ready.emit(key)
            return
        pixmap = QPixmap.fromImage(image)
        size = pixmap.width() * pixmap.height() * 4
        self._cache[key] = pixmap
        self._bytes += size
        while self._bytes > self._limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.width() * old.height() * 4
        self.thumbnail_ready.emit(key)
