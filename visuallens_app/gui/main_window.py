"""The main window: a welcome view on first run, then the panels, banner and indexing bar."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QStyle,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from visuallens_app.gui import tasks
from visuallens_app.gui.context import AppContext
from visuallens_app.gui.inspect_widgets import dropped_path
from visuallens_app.gui.panels import PANELS, Panel
from visuallens_app.gui.panels.library import LibraryPanel
from visuallens_app.gui.session import LibrarySession
from visuallens_app.gui.tasks import LibrarySummary
from visuallens_app.gui.widgets import Banner, IndexingBar, photo_folder_start
from visuallens_app.settings import config_dir

log = logging.getLogger(__name__)

GEOMETRY_KEY = "window/geometry"


def window_state() -> QSettings:
    """Where the GUI keeps its own state (window geometry): QSettings "VisualLens"/"VisualLens".

    With ``VISUALLENS_CONFIG_DIR`` set (scripts, tests) it is an INI file in that folder instead,
    so that a test never touches the developer's real window state.
    """
    if os.environ.get("VISUALLENS_CONFIG_DIR"):
        return QSettings(str(config_dir() / "VisualLens.ini"), QSettings.Format.IniFormat)
    return QSettings("VisualLens", "VisualLens")


def dropped_folder(event: QDragEnterEvent | QDropEvent) -> Path | None:
    """The first local folder in a drag, if any."""
    return dropped_path(event, folder=True)


def _unique_keys(*keys: str | QKeySequence.StandardKey) -> list[QKeySequence]:
    """Key sequences without repeats (a repeat makes Qt treat the shortcut as ambiguous)."""
    out: list[QKeySequence] = []
    for key in keys:
        sequences = (
            QKeySequence.keyBindings(key)
            if isinstance(key, QKeySequence.StandardKey)
            else [QKeySequence(key)]
        )
        for sequence in sequences:
            if sequence not in out:
                out.append(sequence)
    return out


class WelcomeView(QWidget):
    """First run: one question, where are your photos? Button or drag and drop."""

    folder_chosen = Signal(object)  # Path

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("WelcomeView")
        self.setAcceptDrops(True)
        card = QFrame()
        card.setObjectName("WelcomeCard")
        card.setMaximumWidth(560)
        title = QLabel("Welcome to VisualLens Studio")
        title.setObjectName("WelcomeTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text = QLabel(
            "Point VisualLens at a folder of photos. It indexes them on this computer, so you "
            "can search them by what they show and get recommendations explained by your own "
            "pictures. Nothing leaves your machine."
        )
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.choose_button = QPushButton("Choose a photo folder…")
        self.choose_button.setObjectName("ChooseFolderButton")
        self.choose_button.setDefault(True)
        self.choose_button.setMinimumHeight(40)
        self.choose_button.clicked.connect(self._choose)
        hint = QLabel("or drop a folder anywhere in this window")
        hint.setObjectName("WelcomeHint")
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        inner = QVBoxLayout(card)
        inner.setContentsMargins(36, 32, 36, 32)
        inner.setSpacing(16)
        inner.addWidget(title)
        inner.addWidget(text)
        inner.addWidget(self.choose_button, 0, Qt.AlignmentFlag.AlignHCenter)
        inner.addWidget(hint)
        # Centred by stretches, not by an alignment flag: an aligned widget gets its size hint
        # without height-for-width, which clipped the wrapped intro text.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 10)
        row.addStretch(1)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a photo folder", photo_folder_start()
        )
        if folder:
            self.folder_chosen.emit(Path(folder))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_folder(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        folder = dropped_folder(event)
        if folder is not None:
            event.acceptProposedAction()
            self.folder_chosen.emit(folder)


class FailuresDock(QDockWidget):
    """Files that could not be indexed, with the reason: a list to look at, never a dialog."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Files that could not be indexed", parent)
        self.setObjectName("FailuresDock")
        self.tree = QTreeWidget()
        self.tree.setObjectName("FailuresList")
        self.tree.setHeaderLabels(["File", "Reason"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setColumnWidth(0, 420)
        self.setWidget(self.tree)

    def set_failures(self, failures: list[tuple[str, str]]) -> None:
        self.tree.clear()
        for path, reason in failures:
            item = QTreeWidgetItem([path, reason])
            item.setToolTip(0, path)
            item.setToolTip(1, reason)
            self.tree.addTopLevelItem(item)

    def paths(self) -> list[str]:
        items = (self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount()))
        return [item.text(0) for item in items if item is not None]


class MainWindow(QMainWindow):
    """Sidebar of registered panels; the library panel is always first."""

    def __init__(self, session: LibrarySession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("VisualLens Studio")
        self.setAcceptDrops(True)
        self.resize(self._default_size())

        self.banner = Banner()
        self.banner.action_clicked.connect(self._banner_action)
        self._banner_action_slot: Callable[[], object] | None = None
        self.indexing_bar = IndexingBar()
        self.indexing_bar.pause_clicked.connect(session.pause_indexing)
        self.indexing_bar.resume_clicked.connect(session.resume_indexing)
        self.indexing_bar.cancel_clicked.connect(session.cancel_indexing)

        self.sidebar = QListWidget()
        self.sidebar.setObjectName("Sidebar")
        self.sidebar.setFixedWidth(220)
        self.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sidebar.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.panel_stack = QStackedWidget()
        self.panels: list[Panel] = []
        self.context = AppContext(session, session.vlm_host)
        for panel_class in PANELS:
            panel = panel_class(self.context)
            self.panels.append(panel)
            self.panel_stack.addWidget(panel)
            icon = self.style().standardIcon(getattr(QStyle.StandardPixmap, panel.icon))
            QListWidgetItem(icon, panel.title, self.sidebar)
        self.sidebar.currentRowChanged.connect(self._switch_panel)

        # Without photo folders the welcome view stands in for the panels that need a library;
        # the others (the inspectors, which work on any image file) stay one click away.
        self.welcome = WelcomeView()
        self.welcome.folder_chosen.connect(self.add_folder)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.panel_stack)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(0)
        body.addWidget(self.sidebar)
        body.addWidget(self.pages, 1)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(self.banner)
        central_layout.addLayout(body, 1)
        central_layout.addWidget(self.indexing_bar)
        self.setCentralWidget(central)

        self.failures_dock = FailuresDock(self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.failures_dock)
        self.failures_dock.hide()

        self.vlm_label = QLabel()
        self.vlm_label.setObjectName("VlmStatus")
        session.vlm_host.status_changed.connect(self._on_vlm_status)
        self._on_vlm_status(session.vlm_host.status())
        self.encoder_label = QLabel("Loading the model…")
        self.encoder_label.setObjectName("EncoderStatus")
        self.counts_label = QLabel()
        self.failures_button = QToolButton()
        self.failures_button.setObjectName("FailuresButton")
        self.failures_button.setAutoRaise(True)
        self.failures_button.clicked.connect(self.toggle_failures)
        self.failures_button.hide()
        self.statusBar().addPermanentWidget(self.counts_label)
        self.statusBar().addPermanentWidget(self.failures_button)
        self.statusBar().addPermanentWidget(self.vlm_label)
        self.statusBar().addPermanentWidget(self.encoder_label)

        self._build_menus()
        self._connect_session()
        self.sidebar.setCurrentRow(0)
        self._update_page()
        self._restore_geometry()

    def _default_size(self) -> QSize:
        """1280 x 820, or less: never larger than the screen's available area (a 1280 x 800
        laptop keeps the status bar on screen)."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return QSize(1280, 820)
        area = screen.availableGeometry()
        return QSize(min(1280, area.width() - 40), min(820, area.height() - 60))

    # -- construction --------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        add = QAction("&Add photo folder…", self)
        add.setShortcut(QKeySequence.StandardKey.Open)
        add.triggered.connect(self._choose_folder)
        settings = QAction("&Settings…", self)
        settings.setShortcut(QKeySequence.StandardKey.Preferences)
        settings.setMenuRole(QAction.MenuRole.PreferencesRole)
        settings.triggered.connect(self.open_settings)
        reindex = QAction("&Re-index all folders", self)
        reindex.triggered.connect(lambda: self.session.index(None))
        self.caption_action = QAction("&Caption photos with the VLM", self)
        self.caption_action.setToolTip(
            "Write a short caption of every photo with the vision-language model, once; "
            "explanations and the re-ranker use them"
        )
        self.caption_action.triggered.connect(self.caption_photos)
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addActions([add, reindex, self.caption_action, settings])
        file_menu.addSeparator()
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        find = QAction("&Find…", self)
        find.setShortcut(QKeySequence.StandardKey.Find)
        find.triggered.connect(self.focus_search)
        zoom_in = QAction("Zoom &in", self)
        zoom_in.setShortcuts(_unique_keys("Ctrl+=", QKeySequence.StandardKey.ZoomIn))
        zoom_in.triggered.connect(lambda: self.library_panel.zoom_in())  # noqa: PLW0108
        zoom_out = QAction("Zoom &out", self)
        zoom_out.setShortcuts(_unique_keys("Ctrl+-", QKeySequence.StandardKey.ZoomOut))
        zoom_out.triggered.connect(lambda: self.library_panel.zoom_out())  # noqa: PLW0108
        view_menu.addActions([find, zoom_in, zoom_out])
        view_menu.addSeparator()
        view_menu.addAction(self.failures_dock.toggleViewAction())
        # Actions live on the window so their shortcuts work in every panel.
        self.addActions([add, settings, find, zoom_in, zoom_out, quit_action])

        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About VisualLens Studio", self)
        about.triggered.connect(
            lambda: QMessageBox.about(
                self,
                "About VisualLens Studio",
                "VisualLens Studio indexes your photos on this computer and recommends places "
                "and things, explained by your own pictures. Everything runs locally.",
            )
        )
        help_menu.addAction(about)

    def _connect_session(self) -> None:
        s = self.session
        s.encoder_loading.connect(self._on_encoder_loading)
        s.encoder_ready.connect(self._on_encoder_ready)
        s.encoder_failed.connect(self._on_encoder_failed)
        s.error_raised.connect(self.show_error)
        s.notice_raised.connect(lambda msg: self.statusBar().showMessage(msg, 6000))
        s.indexing_started.connect(self.indexing_bar.start)
        s.indexing_progress.connect(self.indexing_bar.set_progress)
        s.indexing_paused.connect(self.indexing_bar.set_paused)
        s.indexing_finished.connect(self._on_indexing_finished)
        s.summary_changed.connect(self._on_summary)
        s.folders_changed.connect(lambda _folders: self._update_page())

    # -- panels --------------------------------------------------------------------------------
    @property
    def library_panel(self) -> LibraryPanel:
        return next(p for p in self.panels if isinstance(p, LibraryPanel))

    def panel(self, cls: type[Panel]) -> Panel:
        return next(p for p in self.panels if isinstance(p, cls))

    def show_panel(self, cls: type[Panel]) -> Panel:
        panel = self.panel(cls)
        self.sidebar.setCurrentRow(self.panels.index(panel))
        return panel

    def _switch_panel(self, row: int) -> None:
        if 0 <= row < len(self.panels):
            self.panel_stack.setCurrentIndex(row)
            self._update_page()
            self.panels[row].activated()

    def _update_page(self) -> None:
        """The current panel, or the welcome view when it needs a library and there is none."""
        row = self.sidebar.currentRow()
        panel = self.panels[row] if 0 <= row < len(self.panels) else None
        needs = panel is None or panel.needs_library
        self.pages.setCurrentIndex(0 if needs and not self.session.folders else 1)

    def focus_search(self) -> None:
        if not self.session.folders:
            return
        self.show_panel(LibraryPanel)
        self.library_panel.focus_search()

    # -- folders -------------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a photo folder", photo_folder_start())
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> None:
        if self.session.add_folder(folder):
            self.banner.hide()
            self.show_panel(LibraryPanel)
            self._update_page()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_folder(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        folder = dropped_folder(event)
        if folder is not None:
            event.acceptProposedAction()
            self.add_folder(folder)

    def caption_photos(self) -> None:
        """Caption the library on the model's lane; progress in the status bar, cancel by
        choosing the action again."""
        running = self.session.runner.current("caption")
        if running is not None:
            running.cancel()
            return
        if not self.session.vlm_host.configured("captions"):
            self.show_error(
                "Captions need a vision-language model: choose one in Settings.",
                "Settings…",
                self.open_settings,
            )
            return
        directory = self.session.library_dir
        job = self.session.vlm_host.run(
            "caption",
            "captions",
            lambda vlm, ctx: tasks.caption_library(vlm, directory, ctx.cancel),
        )
        self.caption_action.setText("Stop &captioning")
        job.progress_changed.connect(
            lambda p: self.statusBar().showMessage(
                f"Captioning photos: {p.done:,} of {p.total:,} {p.unit}", 4000
            )
        )
        job.succeeded.connect(
            lambda n: self.statusBar().showMessage(f"Captioned {n:,} photo(s).", 8000)
        )
        job.failed.connect(self.show_error)
        job.cancelled.connect(lambda: self.statusBar().showMessage("Captioning stopped.", 6000))
        job.finished.connect(lambda: self.caption_action.setText("&Caption photos with the VLM"))

    def open_settings(self) -> None:
        from visuallens_app.gui.panels.settings import open_settings

        dialog = open_settings(self.session, self)
        dialog.open()
        self.settings_dialog = dialog

    # -- feedback ------------------------------------------------------------------------------
    def show_error(
        self, message: str, action: str = "", slot: Callable[[], object] | None = None
    ) -> None:
        """One sentence in the banner: what went wrong and what to do."""
        self._banner_action_slot = slot
        self.banner.show_message(message, level="error", action=action)

    def _banner_action(self) -> None:
        if self._banner_action_slot is not None:
            self._banner_action_slot()

    def _on_vlm_status(self, text: str) -> None:
        self.vlm_label.setText(text if len(text) <= 60 else text[:57] + "…")
        self.vlm_label.setToolTip(text)

    def _on_encoder_loading(self) -> None:
        self.encoder_label.setText("Loading the model…")
        if self.session.index_pending and not self.session.indexing:
            self.indexing_bar.show_model_loading()

    def _on_encoder_failed(self, _message: str) -> None:
        self.encoder_label.setText("Model not loaded")
        if not self.session.indexing:
            self.indexing_bar.hide()

    def _on_encoder_ready(self, reason: str) -> None:
        name = (
            reason.split(":", maxsplit=1)[0]
            .split(" (", maxsplit=1)[0]
            .removeprefix("Using ")
            .removeprefix("the ")
        )
        self.encoder_label.setText(f"Model: {name}")
        self.encoder_label.setToolTip(reason)

    def _on_indexing_finished(self, report: Any) -> None:
        if self.session.indexing:
            return
        self.indexing_bar.hide()
        if report is not None:
            parts = [f"Indexing done: {report.indexed} new or changed"]
            if report.removed:
                parts.append(f"{report.removed} removed")
            if report.failed:
                parts.append(f"{len(report.failed)} could not be read")
            self.statusBar().showMessage(", ".join(parts) + ".", 8000)
            if report.empty_roots:  # one sentence for all of them: a banner shows one message
                empty = report.empty_roots
                where = empty[0] if len(empty) == 1 else ", ".join(empty[:-1]) + f" or {empty[-1]}"
                self._banner_action_slot = None
                self.banner.show_message(
                    f"No photos found in {where} (nor in subfolders); photos added there "
                    "later are indexed as they arrive.",
                    level="info",
                )
            for root in report.offline_roots:
                self.show_error(
                    f"The photo folder {root} is not reachable; its photos are kept but marked "
                    "offline. Connect the drive, or remove the folder in Settings.",
                    "Settings…",
                    self.open_settings,
                )

    def _on_summary(self, summary: LibrarySummary) -> None:
        ok, offline = summary.counts.get("ok", 0), summary.counts.get("offline", 0)
        text = f"{ok:,} photos"
        if offline:
            text += f" · {offline:,} offline"
        self.counts_label.setText(text)
        self.failures_dock.set_failures(summary.failures)
        if summary.failures:
            n = len(summary.failures)
            self.failures_button.setText(f"⚠ {n} file{'s' if n != 1 else ''} could not be read")
            self.failures_button.show()
        else:
            self.failures_button.hide()
            self.failures_dock.hide()

    def toggle_failures(self) -> None:
        self.failures_dock.setVisible(not self.failures_dock.isVisible())

    # -- geometry and closing --------------------------------------------------------------------
    def _restore_geometry(self) -> None:
        state = window_state()
        saved = state.value(GEOMETRY_KEY)
        legacy = self.session.settings.legacy_window_geometry
        if saved is None and legacy:
            # A version 1 settings file kept the geometry; it moves into QSettings once.
            saved = QByteArray.fromBase64(legacy.encode("ascii", "ignore"))
            state.setValue(GEOMETRY_KEY, saved)
        if isinstance(saved, QByteArray) and not saved.isEmpty():
            self.restoreGeometry(saved)

    def save_geometry(self) -> None:
        """Window state is the GUI's own (QSettings), never the core settings file."""
        window_state().setValue(GEOMETRY_KEY, self.saveGeometry())

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_geometry()
        for panel in self.panels:
            panel.shutdown()
        self.session.shutdown()
        super().closeEvent(event)
