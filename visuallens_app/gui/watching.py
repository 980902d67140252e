"""The headless :class:`~visuallens_app.library.watch.FolderWatcher` as a Qt signal."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from visuallens_app.library.watch import FolderWatcher


class QtFolderWatcher(QObject):
    """Emits ``folder_changed(root)`` on the UI thread once changes under a root settled."""

    folder_changed = Signal(object)

    def __init__(
        self,
        *,
        ignore: Iterable[Path] = (),
        debounce: float = 1.0,
        settle: float = 1.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        # The callback runs on the watcher's thread; emitting a signal of this UI-thread object
        # from there is queued to the UI thread by Qt.
        self._watcher = FolderWatcher(
            self.folder_changed.emit, debounce=debounce, settle=settle, ignore=ignore
        )

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()

    def set_roots(self, roots: Iterable[Path]) -> list[Path]:
        return self._watcher.set_roots(roots)
