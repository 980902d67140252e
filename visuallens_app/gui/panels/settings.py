"""The Settings dialog: photo folders, library location, encoder, CLIP weights, device, w, and
the vision-language model shared by captions, re-ranking and the inspection panels."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from visuallens_app.gui import tasks
from visuallens_app.gui.session import LibrarySession
from visuallens_app.gui.widgets import photo_folder_start
from visuallens_app.gui.workers import Job
from visuallens_app.jobs import Progress
from visuallens_app.settings import platform_library_dir
from visuallens_app.vlm.loading import DEFAULT_VLM

ENCODERS = [
    ("auto", "Automatic: CLIP when its weights are here, else the embedded encoder"),
    ("embedded", "Embedded (offline, small, always available)"),
    ("clip", "CLIP ViT-B-32 (better; needs its weights)"),
]
DEVICES = ["auto", "cpu", "cuda", "mps"]


class WrappedLabel(QLabel):
    """A word-wrapped sentence that keeps room for all its lines.

    A top-level dialog sizes itself without asking wrapped labels how tall they are at their
    width, so a long sentence (the model's reason, a download's outcome) was drawn over its
    neighbours; this one sets its minimum height for the width it will have.
    """

    #: A little less than the width a sentence gets here: room for a line too many, never one
    #: too few.
    WIDTH = 560

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self._fit(self.width() if self.width() > self.WIDTH // 2 else self.WIDTH)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit(event.size().width())

    def _fit(self, width: int) -> None:
        height = self.heightForWidth(width) if self.text() else 0
        if height != self.minimumHeight():
            self.setMinimumHeight(height)
            if self.isVisible():  # a shown dialog does not grow by itself
                QTimer.singleShot(0, self.window().adjustSize)


class SettingsDialog(QDialog):
    """Edits the session's settings; OK saves them and applies what changed."""

    def __init__(self, session: LibrarySession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Settings")
        self.setObjectName("SettingsDialog")
        self.setMinimumWidth(620)
        settings = session.settings

        folders_box = QGroupBox("Photo folders")
        self.folders = QListWidget()
        self.folders.setObjectName("FolderList")
        self.folders.addItems([str(folder) for folder in session.folders])
        add = QPushButton("Add folder…")
        add.clicked.connect(self._add_folder)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_folder)
        buttons = QVBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        folders_layout = QVBoxLayout(folders_box)
        #: Says whose folders these are when the window has another library open than the
        #: settings name (visuallens-app --library, VISUALLENS_LIBRARY); hidden otherwise.
        self.library_note = WrappedLabel()
        self.library_note.setObjectName("OtherLibraryNote")
        if not session.follows_settings:
            self.library_note.setText(
                f"This window has the library {session.library_dir} open (chosen with --library "
                "or VISUALLENS_LIBRARY). These are that library's own folders: changes here go "
                "into it, not into your settings."
            )
            folders_layout.addWidget(self.library_note)
        row = QHBoxLayout()
        row.addWidget(self.folders, 1)
        row.addLayout(buttons)
        folders_layout.addLayout(row)

        self.library = QLineEdit(settings.library_dir)
        self.library.setPlaceholderText(str(platform_library_dir()))
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose_library)
        library_row = QHBoxLayout()
        library_row.addWidget(self.library, 1)
        library_row.addWidget(browse)

        self.encoder = QComboBox()
        for value, label in ENCODERS:
            self.encoder.addItem(label, value)
        index = self.encoder.findData(settings.encoder)
        if index < 0:
            self.encoder.addItem(settings.encoder, settings.encoder)
            index = self.encoder.count() - 1
        self.encoder.setCurrentIndex(index)
        self.encoder_reason = WrappedLabel(self._reason_text())
        self.encoder_reason.setObjectName("EncoderReason")
        self.download = QPushButton("Download CLIP weights")
        self.download.clicked.connect(self.download_clip)
        self.download_bar = QProgressBar()
        self.download_bar.hide()
        self.download_status = WrappedLabel()
        self.download_status.setObjectName("DownloadStatus")
        download_row = QHBoxLayout()
        download_row.addWidget(self.download)
        download_row.addWidget(self.download_bar, 1)

        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(settings.device if settings.device in DEVICES else "auto")
        self.retrieval = QSpinBox()
        self.retrieval.setRange(8, 1024)
        self.retrieval.setValue(settings.retrieval_size)
        self.retrieval.setToolTip("How many of your photos the lens keeps per category (w)")

        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        form.addRow("Encoder:", self.encoder)
        form.addRow(self.encoder_reason)
        form.addRow("", download_row)
        form.addRow(self.download_status)
        form.addRow("Device:", self.device)
        form.addRow("Photos per category (w):", self.retrieval)
        vlm_box = QGroupBox("Vision-language model")
        self.vlm = QComboBox()
        self.vlm.setObjectName("VlmChoice")
        self.vlm.setEditable(True)
        self.vlm.addItem("")  # none
        for name in tasks.local_vlms():
            self.vlm.addItem(name)
        self.vlm.setCurrentText(settings.vlm)
        line = self.vlm.lineEdit()
        if line is not None:
            line.setPlaceholderText(f"None, or a model folder, or a Hub name such as {DEFAULT_VLM}")
        vlm_browse = QPushButton("Choose folder…")
        vlm_browse.clicked.connect(self._choose_vlm)
        vlm_row = QHBoxLayout()
        vlm_row.addWidget(self.vlm, 1)
        vlm_row.addWidget(vlm_browse)
        self.vlm_download = QPushButton(f"Download {DEFAULT_VLM.split('/')[-1]}")
        self.vlm_download.setToolTip(
            f"Fetch {DEFAULT_VLM} (about 0.5 GB; runs on a laptop CPU) from the Hugging Face Hub"
        )
        self.vlm_download.clicked.connect(self.download_vlm)
        self.vlm_status = WrappedLabel(window_wording(session.vlm_host.status()))
        self.vlm_status.setObjectName("VlmStatusText")
        vlm_form = QFormLayout(vlm_box)
        vlm_form.addRow("Model:", vlm_row)
        vlm_form.addRow("", self.vlm_download)
        vlm_form.addRow(
            "",
            QLabel("Used for captions, re-ranking, hallucination checks and steering."),
        )
        vlm_form.addRow("", self.vlm_status)

        library_box = QGroupBox("Library")
        library_form = QFormLayout(library_box)
        library_form.addRow("Location:", library_row)
        library_form.addRow("", QLabel("The index and thumbnails; your photos are never moved."))

        box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        # Grow with the wrapped sentences below (a download's outcome, the model's reason)
        # instead of squeezing them into lines drawn over each other.
        layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        layout.addWidget(folders_box)
        layout.addWidget(library_box)
        layout.addWidget(model_box)
        layout.addWidget(vlm_box)
        layout.addWidget(box)
        self._download_job: Job | None = None
        self._vlm_job: Job | None = None

    def _reason_text(self) -> str:
        if self.session.encoder_reason:
            return "Active: " + window_wording(self.session.encoder_reason)
        if self.session.encoder_error:
            return "Not loaded: " + window_wording(self.session.encoder_error)
        return "The model is loading…"

    # -- folders -----------------------------------------------------------------------------
    def folder_list(self) -> list[str]:
        return [self.folders.item(i).text() for i in range(self.folders.count())]

    def add_folder_path(self, folder: str) -> None:
        if folder and folder not in self.folder_list():
            self.folders.addItem(folder)

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a photo folder", photo_folder_start())
        self.add_folder_path(folder)

    def _remove_folder(self) -> None:
        for item in self.folders.selectedItems():
            self.folders.takeItem(self.folders.row(item))

    def _choose_library(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where to keep the library")
        if folder:
            self.library.setText(folder)

    # -- CLIP weights --------------------------------------------------------------------------
    def download_clip(self) -> None:
        self.download.setEnabled(False)
        self.download_bar.show()
        self.download_bar.setRange(0, 0)
        self.download_status.setText("Downloading…")
        job = self.session.runner.start("download-clip", tasks.download_clip)
        job.progress_changed.connect(self._download_progress)
        job.succeeded.connect(self._download_done)
        job.failed.connect(self._download_failed)
        job.cancelled.connect(lambda: self._download_failed("Download cancelled."))
        self._download_job = job

    def _download_progress(self, progress: Progress) -> None:
        if progress.total > 0:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * progress.fraction))
            self.download_status.setText(
                f"{progress.done / 1e6:.0f} of {progress.total / 1e6:.0f} MB"
            )

    def _download_done(self, path: Path) -> None:
        self.download.setEnabled(True)
        self.download_bar.hide()
        self.download_status.setText(
            f"CLIP weights saved ({Path(path).name}). "
            "Choose “Automatic” or CLIP and press OK to use them."
        )
        from visuallens_app.models.registry import clear_encoder_cache

        clear_encoder_cache()

    def _download_failed(self, message: str) -> None:
        self.download.setEnabled(True)
        self.download_bar.hide()
        self.download_status.setText(message)

    # -- vision-language model -----------------------------------------------------------------
    def _choose_vlm(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A vision-language model folder")
        if folder:
            self.vlm.setCurrentText(folder)

    def download_vlm(self) -> None:
        self.vlm_download.setEnabled(False)
        self.vlm_status.setText(f"Downloading {DEFAULT_VLM}…")
        job = self.session.runner.start(
            "download-vlm", lambda ctx: tasks.download_vlm(ctx, DEFAULT_VLM)
        )
        job.progress_changed.connect(self._vlm_progress)
        job.succeeded.connect(self._vlm_downloaded)
        job.failed.connect(self._vlm_failed)
        job.cancelled.connect(lambda: self._vlm_failed("Download cancelled."))
        self._vlm_job = job

    def _vlm_progress(self, progress: Progress) -> None:
        if progress.total > 0:
            self.vlm_status.setText(
                f"Downloading {DEFAULT_VLM}: {progress.done / 1e6:.0f} of "
                f"{progress.total / 1e6:.0f} MB"
            )

    def _vlm_downloaded(self, _path: Path) -> None:
        self.vlm_download.setEnabled(True)
        if self.vlm.findText(DEFAULT_VLM) < 0:
            self.vlm.addItem(DEFAULT_VLM)
        self.vlm.setCurrentText(DEFAULT_VLM)
        self.vlm_status.setText(f"{DEFAULT_VLM} is on this machine; press OK to use it.")

    def _vlm_failed(self, message: str) -> None:
        self.vlm_download.setEnabled(True)
        self.vlm_status.setText(message)

    def reject(self) -> None:
        for job in (self._download_job, self._vlm_job):
            if job is not None:
                job.cancel()
        super().reject()

    # -- apply ---------------------------------------------------------------------------------
    def accept(self) -> None:
        """Save, then apply: new folders are indexed, removed ones forgotten, a new model loaded."""
        session = self.session
        settings = session.settings
        old_folders = [str(folder) for folder in session.folders]
        new_folders = self.folder_list()
        new_library = self.library.text().strip()
        if (
            not session.follows_settings
            and new_library != settings.library_dir
            and set(new_folders) != set(old_folders)
        ):
            # The folders are the open library's, the location the settings': moving away
            # would cancel the indexing that records the folders just added here.
            self.library_note.setText(
                f"Change the folders of {session.library_dir} or the library location, not "
                "both at once: press OK for one, then open Settings again for the other."
            )
            return
        model_changed = (
            self.encoder.currentData() != settings.encoder
            or self.device.currentText() != settings.device
        )
        settings.encoder = self.encoder.currentData()
        settings.device = self.device.currentText()
        settings.retrieval_size = self.retrieval.value()
        settings.vlm = self.vlm.currentText().strip()
        session.save_settings()
        # The list shows the open library's folders; when that library is not the settings'
        # own, they are changed in it before a new location takes the settings' folders.
        follows_settings = session.follows_settings
        if follows_settings:
            session.move_library(new_library)
        for folder in old_folders:
            if folder not in new_folders:
                session.remove_folder(Path(folder))
        for folder in new_folders:
            if folder not in old_folders:
                session.add_folder(Path(folder))
        if not follows_settings:
            session.move_library(new_library)
        if model_changed:
            session.load_encoder()
        for job in (self._download_job, self._vlm_job):
            if job is not None:
                job.cancel()
        super().accept()


def window_wording(text: str) -> str:
    """A core sentence worded for this dialog: its button instead of the CLI command that
    fetches CLIP, and no Markdown backticks around what remains."""
    text = re.sub(
        r"`visuallens models download-clip`( or --encoder clip)?( to fetch them| fetches them)?",
        "“Download CLIP weights” below fetches them",
        text,
    )
    text = re.sub(
        r"download one with `visuallens models download-vlm`",
        "download one with the button above",
        text,
    )
    text = text.replace("choose one in File → Settings", "choose one above")  # this is Settings
    return re.sub(r"`([^`]+)`", r"“\1”", text)


def open_settings(session: LibrarySession, parent: QWidget | None = None) -> SettingsDialog:
    dialog = SettingsDialog(session, parent)
    dialog.setWindowModality(Qt.WindowModality.WindowModal)
    return dialog
