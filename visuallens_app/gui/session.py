"""The app's state shared by every panel: settings, the loaded encoder, indexing, the watcher.

Panels talk to the core only through this object and :mod:`visuallens_app.gui.tasks`; its
signals are the one place they learn that the library changed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from visuallens_app.errors import SettingsError
from visuallens_app.gui import tasks
from visuallens_app.gui.thumbnails import ThumbnailLoader
from visuallens_app.gui.vlm_host import VlmHost
from visuallens_app.gui.workers import Job, JobRunner
from visuallens_app.jobs import Progress
from visuallens_app.settings import Settings

if TYPE_CHECKING:
    from visuallens_app.gui.watching import QtFolderWatcher

log = logging.getLogger(__name__)

#: How often, at most, the grid re-reads the library while photos are being indexed.
REFRESH_INTERVAL_MS = 700
#: The runner lane (one dedicated thread) of searches, recommendations and aspect words.
QUERY_LANE = "query"
#: GIL switch interval while the app runs (see LibrarySession.__init__).
SWITCH_INTERVAL_S = 0.0005


class LibrarySession(QObject):
    """Owns the job runner, the thumbnail loader and the one indexing job at a time."""

    encoder_loading = Signal()
    encoder_ready = Signal(str)  # the reason, e.g. "Using the embedded encoder ..."
    encoder_failed = Signal(str)
    folders_changed = Signal(list)  # list[Path] of configured photo folders
    library_changed = Signal()  # photos were added, changed or removed
    library_moved = Signal()  # the library location changed: everything re-reads
    indexing_started = Signal()
    indexing_progress = Signal(object)  # Progress
    indexing_paused = Signal(bool)
    indexing_finished = Signal(object)  # IndexReport, or None when it failed or was cancelled
    summary_changed = Signal(object)  # tasks.LibrarySummary
    error_raised = Signal(str)  # one sentence for the banner
    notice_raised = Signal(str)  # a passing status message

    def __init__(
        self,
        settings: Settings | None = None,
        parent: QObject | None = None,
        *,
        watch: bool = True,
    ) -> None:
        super().__init__(parent)
        # Workers run Python (decode, indexing) next to the UI thread; every Python call the UI
        # makes (item data, delegate paint) waits for the GIL up to this interval. The default
        # 5 ms, paid per call while painting a grid, adds up to visible stalls.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.settings = settings if settings is not None else Settings.load()
        self.runner = JobRunner(max_threads=4, parent=self)
        # The FAISS index and the lens's history stay loaded between questions, on the one
        # thread that may use the store they read.
        self.queries = tasks.QueryCache()
        self.runner.add_lane(QUERY_LANE, on_shutdown=self.queries.close)
        self.thumbnails = ThumbnailLoader(self)
        # The one vision-language model, shared by captions, re-ranking and the inspectors.
        self.vlm_host = VlmHost(self.runner, self.settings, self)
        self.encoder: tasks.SerialEncoder | None = None
        self.encoder_reason = ""
        self.encoder_error = ""
        self.summary: tasks.LibrarySummary | None = None
        self._index_job: Job | None = None
        self._index_queue: list[Path] = []
        self._last_done = -1
        self._last_report = None
        self._watch_enabled = watch
        self._watcher: QtFolderWatcher | None = None
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_INTERVAL_MS)
        self._refresh_timer.timeout.connect(self.library_changed)
        self._refresh_timer.timeout.connect(self.refresh_summary)  # the photo count moves too
        self._closed = False
        # The library this window has open: VISUALLENS_LIBRARY (visuallens-app --library) when
        # set, else the settings'. Folders belong to it: the settings' photo_folders only for the
        # settings' own library; another library's are its roots, learnt with the first summary
        # (folders added before it are kept) and never written into the settings.
        self._library = self.settings.library_path
        self._library_folders: list[Path] = []
        self._roots_learnt = False

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def library_dir(self) -> Path:
        return self._library

    @property
    def follows_settings(self) -> bool:
        """Whether the open library is the settings' own, so that its folders are the settings'."""
        return self.settings.is_apps_library(self._library)

    @property
    def folders(self) -> list[Path]:
        """The open library's photo folders."""
        if self.follows_settings:
            return [Path(f) for f in self.settings.photo_folders]
        return list(self._library_folders)

    def start(self) -> None:
        """After the window is shown: load the model, read the library, start watching."""
        self.load_encoder()
        self.refresh_summary()
        if self._watch_enabled:
            self._start_watcher()

    def shutdown(self, timeout_ms: int = 15_000) -> bool:
        """Cancel every job, stop watching, and wait for the workers (quit, or test teardown)."""
        if self._closed:
            return True
        self._closed = True
        self._refresh_timer.stop()
        self._index_queue.clear()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        ok = self.runner.shutdown(timeout_ms)
        return self.thumbnails.shutdown(timeout_ms) and ok

    def move_library(self, directory: str) -> None:
        """Use another library folder (empty: the default) and index every folder into it."""
        if directory == self.settings.library_dir:
            return
        self.cancel_indexing()
        was_another = not self.follows_settings
        self.settings.library_dir = directory
        self.save_settings()
        # Chosen in Settings, so it is the settings' library now, whatever the environment said.
        self._library = self.settings.apps_library
        self._library_folders, self._roots_learnt = [], False
        if was_another:  # the settings' folders replace the other library's
            self.folders_changed.emit(self.folders)
            self._sync_watcher()
        self.library_moved.emit()
        self.refresh_summary()
        self.index(self.folders)

    def save_settings(self) -> None:
        try:
            self.settings.save()
        except SettingsError as err:
            self.error_raised.emit(str(err))
        self.vlm_host.settings_changed()

    # -- encoder ------------------------------------------------------------------------------
    def load_encoder(self) -> None:
        """Load the configured encoder on a worker; the UI stays usable meanwhile."""
        self.encoder = None
        self.encoder_reason = ""
        self.encoder_error = ""
        self.encoder_loading.emit()
        name, device = self.settings.encoder, self.settings.device
        job = self.runner.start("encoder", lambda _ctx: tasks.load_encoder(name, device))
        job.succeeded.connect(self._on_encoder)
        job.failed.connect(self._on_encoder_failed)

    def _on_encoder(self, loaded: tuple[tasks.SerialEncoder, str]) -> None:
        self.encoder, self.encoder_reason = loaded
        self.encoder_ready.emit(self.encoder_reason)
        if self._index_queue or self.folders:
            self.index(self._index_queue or self.folders)

    def _on_encoder_failed(self, message: str) -> None:
        self.encoder_error = message
        self.encoder_failed.emit(message)
        self.error_raised.emit(message)

    # -- folders ------------------------------------------------------------------------------
    def add_folder(self, folder: Path) -> bool:
        """Add a photo folder and index it at once; False (with a message) if it is not usable."""
        folder = Path(os.path.abspath(os.path.expanduser(folder)))
        if not folder.exists():
            self.error_raised.emit(
                f"The folder {folder} does not exist; check the path or connect its drive."
            )
            return False
        if not folder.is_dir():
            self.error_raised.emit(f"{folder} is a file; choose the folder that holds your photos.")
            return False
        if not os.access(folder, os.R_OK | os.X_OK):
            self.error_raised.emit(f"Cannot read {folder}; check its permissions.")
            return False
        if folder not in self.folders:
            if self.follows_settings:
                self.settings.photo_folders.append(str(folder))
                self.save_settings()
            else:  # another library's folder: indexing records it in that library
                self._library_folders = [*self._library_folders, folder]
            self.folders_changed.emit(self.folders)
            self._sync_watcher()
        self.index([folder])
        return True

    def remove_folder(self, folder: Path) -> None:
        """Stop following a folder and forget its photos (the files on disk are untouched)."""
        key = str(folder)
        if self.follows_settings and key in self.settings.photo_folders:
            self.settings.photo_folders.remove(key)
            self.save_settings()
            self.folders_changed.emit(self.folders)
            self._sync_watcher()
        elif not self.follows_settings and folder in self.folders:
            self._library_folders = [f for f in self.folders if f != folder]
            self.folders_changed.emit(self.folders)
            self._sync_watcher()
        directory = self.library_dir
        job = self.runner.start(
            f"forget-{key}", lambda _ctx: tasks.forget_folder(directory, folder), supersede=False
        )
        job.succeeded.connect(lambda _n: self._changed_now())
        job.failed.connect(self.error_raised)

    # -- indexing -----------------------------------------------------------------------------
    @property
    def indexing(self) -> bool:
        return self._index_job is not None

    @property
    def index_pending(self) -> bool:
        """Folders wait to be indexed: a run is queued, or the model is loading (every folder
        is indexed once it is ready)."""
        if self._closed:
            return False
        loading_model = self.encoder is None and not self.encoder_error and bool(self.folders)
        return bool(self._index_queue) or loading_model

    @property
    def index_job(self) -> Job | None:
        return self._index_job

    def index(self, roots: list[Path] | None = None) -> None:
        """Index ``roots`` (default: every folder); queued behind a running run or the model."""
        if self._closed:
            return
        wanted = [Path(r) for r in (roots if roots is not None else self.folders)]
        for root in wanted:
            if root not in self._index_queue:
                self._index_queue.append(root)
        if self.encoder is None or self._index_job is not None or not self._index_queue:
            return
        run_roots, self._index_queue = self._index_queue, []
        directory, encoder = self.library_dir, self.encoder
        job = self.runner.start(
            "index", lambda ctx: tasks.index(directory, encoder, run_roots, ctx.cancel)
        )
        self._index_job = job
        self._last_done = -1
        job.progress_changed.connect(self._on_index_progress)
        job.succeeded.connect(self._on_index_report)
        job.failed.connect(self._on_index_failed)
        job.cancelled.connect(
            lambda: self.notice_raised.emit("Indexing cancelled; photos indexed so far are kept.")
        )
        job.finished.connect(self._on_index_finished)
        self.indexing_started.emit()

    def pause_indexing(self) -> None:
        if self._index_job is not None:
            self._index_job.pause()
            self.indexing_paused.emit(True)

    def resume_indexing(self) -> None:
        if self._index_job is not None:
            self._index_job.resume()
            self.indexing_paused.emit(False)

    def cancel_indexing(self) -> None:
        self._index_queue.clear()
        if self._index_job is not None:
            self._index_job.cancel()

    def _on_index_progress(self, progress: Progress) -> None:
        self.indexing_progress.emit(progress)
        if progress.stage == "index" and progress.done != self._last_done:
            self._last_done = progress.done
            if progress.done > 0 and not self._refresh_timer.isActive():
                self._refresh_timer.start()

    def _on_index_report(self, report: Any) -> None:
        self._last_report = report

    def _on_index_failed(self, message: str) -> None:
        self.error_raised.emit(message)

    def _on_index_finished(self) -> None:
        report, self._last_report = self._last_report, None
        self._index_job = None
        self._changed_now()
        if self._index_queue and not self._closed:
            self.index([])
        # After the queue was looked at, so that listeners see whether another run started.
        self.indexing_finished.emit(report)

    def _changed_now(self) -> None:
        self._refresh_timer.stop()
        self.library_changed.emit()
        self.refresh_summary()

    def refresh_summary(self) -> None:
        directory = self.library_dir
        job = self.runner.start("summary", lambda _ctx: tasks.summary(directory))
        job.succeeded.connect(self._on_summary)
        job.failed.connect(self.error_raised)

    def _on_summary(self, summary: tasks.LibrarySummary) -> None:
        self.summary = summary
        if not self.follows_settings and not self._roots_learnt:
            self._learn_library_folders(summary.roots)
        self.summary_changed.emit(summary)

    def _learn_library_folders(self, roots: list[Path]) -> None:
        """Another library's folders, from its first summary: listed, watched, and re-scanned
        as the settings' folders are at start. Folders added before it came stay, after them."""
        self._roots_learnt = True
        added = [f for f in self._library_folders if f not in roots]
        self._library_folders = [*roots, *added]
        if not roots:
            return
        self.folders_changed.emit(self.folders)
        self._sync_watcher()
        if self.encoder is not None:  # the model was quicker: it found no folders to index
            self.index(self.folders)

    # -- watching -----------------------------------------------------------------------------
    def _start_watcher(self) -> None:
        from visuallens_app.gui.watching import QtFolderWatcher

        watcher = QtFolderWatcher(ignore=[self.library_dir], parent=self)
        watcher.folder_changed.connect(self._on_folder_changed)
        watcher.start()
        self._watcher = watcher
        self._sync_watcher()

    def _sync_watcher(self) -> None:
        if self._watcher is not None:
            missing = self._watcher.set_roots(self.folders)
            for root in missing:
                self.error_raised.emit(
                    f"The photo folder {root} is not reachable; its photos are kept but marked "
                    "offline. Connect the drive or remove the folder in Settings."
                )

    def _on_folder_changed(self, root: Path) -> None:
        if not self._closed and root in self.folders:
            self.notice_raised.emit(f"Changes found in {root.name}; updating the library…")
            self.index([root])
