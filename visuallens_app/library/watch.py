"""Notice photo folders changing on disk and say when a root is worth re-indexing.

Headless (no Qt): the GUI adapts :class:`FolderWatcher` to signals, a CLI could use it as it is.
A copy of a large photo is seen as a stream of "modified" events while it is written; indexing
it then would store a truncated file, so a changed file counts as settled only when two checks
``settle`` seconds apart give the same size and mtime, and a root is reported only once every
file changed under it settled and no new event arrived for ``debounce`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from visuallens_app.library.scan import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

Stat = Callable[[Path], tuple[int, int] | None]
Clock = Callable[[], float]


def file_signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it is gone or unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass(slots=True)
class _Pending:
    root: Path
    signature: tuple[int, int] | None
    checked_at: float


def is_photo_name(path: Path) -> bool:
    """What the scanner would index: an image suffix and no hidden name."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


class ChangeTracker:
    """Which roots are due for a re-index, given the paths that changed under them.

    Pure bookkeeping with an injectable clock and stat, so its rules are tested without waiting.
    Thread-safe: :meth:`note` is called from the watchdog thread, :meth:`due` from a timer.
    """

    def __init__(
        self,
        *,
        debounce: float = 1.0,
        settle: float = 1.0,
        stat: Stat = file_signature,
        clock: Clock = time.monotonic,
    ) -> None:
        self.debounce = debounce
        self.settle = settle
        self._stat = stat
        self._clock = clock
        self._files: dict[Path, _Pending] = {}
        self._roots: dict[Path, float] = {}  # root -> time of its last event
        self._lock = threading.Lock()

    def note(self, path: Path, root: Path, *, is_dir: bool = False) -> None:
        """A file (or folder) under ``root`` was created, modified, moved or deleted."""
        now = self._clock()
        with self._lock:
            self._roots[root] = now
            if not is_dir:
                self._files[path] = _Pending(root, self._stat(path), now)

    def pending(self) -> int:
        with self._lock:
            return len(self._files)

    def due(self) -> list[Path]:
        """Roots whose changes all settled: report each once and forget them."""
        now = self._clock()
        ready: list[Path] = []
        with self._lock:
            unsettled: set[Path] = set()
            for path, item in list(self._files.items()):
                if now - item.checked_at < self.settle:
                    unsettled.add(item.root)
                    continue
                signature = self._stat(path)
                if signature != item.signature:
                    # Still being written (or replaced): check again one interval later.
                    item.signature, item.checked_at = signature, now
                    unsettled.add(item.root)
            for root, last in list(self._roots.items()):
                if root in unsettled or now - last < self.debounce:
                    continue
                ready.append(root)
                del self._roots[root]
                for path in [p for p, it in self._files.items() if it.root == root]:
                    del self._files[path]
        return ready


class FolderWatcher:
    """Watches photo roots with watchdog and calls ``on_changed(root)`` once changes settled.

    ``on_changed`` runs on the watcher's own thread; a GUI forwards it as a signal. Paths under
    ``ignore`` (the library directory, whose thumbnails are images too) never count.
    """

    def __init__(
        self,
        on_changed: Callable[[Path], None],
        *,
        debounce: float = 1.0,
        settle: float = 1.0,
        poll: float = 0.25,
        ignore: Iterable[Path] = (),
    ) -> None:
        self.on_changed = on_changed
        self.tracker = ChangeTracker(debounce=debounce, settle=settle)
        self._poll = poll
        self._ignore = [Path(os.path.abspath(p)) for p in ignore]
        self._observer: object | None = None
        self._watches: dict[Path, object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        from watchdog.observers import Observer

        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="folder-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        observer = self._observer
        self._observer = None
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(timeout=5)  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._watches.clear()

    @property
    def running(self) -> bool:
        return self._observer is not None

    def set_roots(self, roots: Iterable[Path]) -> list[Path]:
        """Watch exactly ``roots``; returns the roots that could not be watched (missing)."""
        from watchdog.events import FileSystemEventHandler

        observer = self._observer
        if observer is None:
            raise RuntimeError("start() the watcher first")
        wanted = {Path(os.path.abspath(r)) for r in roots}
        failed: list[Path] = []
        with self._lock:
            for root in list(self._watches):
                if root not in wanted:
                    observer.unschedule(self._watches.pop(root))  # type: ignore[attr-defined]
            for root in sorted(wanted - set(self._watches)):
                watcher = self

                class _Handler(FileSystemEventHandler):
                    def on_any_event(self, event: object, root: Path = root) -> None:
                        watcher._on_event(root, event)  # noqa: B023

                try:
                    self._watches[root] = observer.schedule(  # type: ignore[attr-defined]
                        _Handler(), os.fspath(root), recursive=True
                    )
                except OSError as err:
                    log.info("Cannot watch %s: %s", root, err)
                    failed.append(root)
        return failed

    # -- internals ----------------------------------------------------------------------------
    def _on_event(self, root: Path, event: object) -> None:
        kind = getattr(event, "event_type", "")
        if kind in ("opened", "closed_no_write"):
            return
        is_dir = bool(getattr(event, "is_directory", False))
        paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
        for raw in paths:
            if not raw:
                continue
            path = Path(os.fsdecode(raw))
            if any(path.is_relative_to(ignored) for ignored in self._ignore):
                continue
            if is_dir:
                # A folder's own "modified" event only echoes a change inside it.
                if path != root and kind != "modified":
                    self.tracker.note(path, root, is_dir=True)
            elif is_photo_name(path):
                self.tracker.note(path, root)

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            for root in self.tracker.due():
                try:
                    self.on_changed(root)
                except Exception:
                    log.exception("folder watcher callback failed for %s", root)
