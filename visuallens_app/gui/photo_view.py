"""The detail view of one photo: the picture, its EXIF fields and aspect words, prev/next."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import (
    QDesktopServices,
    QImage,
    QImageReader,
    QKeySequence,
    QPixmap,
    QResizeEvent,
    QShortcut,
)
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from visuallens_app.gui import tasks
from visuallens_app.gui.session import QUERY_LANE, LibrarySession
from visuallens_app.gui.tasks import PhotoItem

#: Longest side the detail image is decoded at (enough for a 4K screen, far below 12 MP).
MAX_SIDE = 2400


def read_image(path: Path, max_side: int = MAX_SIDE) -> QImage:
    """Decode a photo upright and scaled down, on a worker thread (QImage is thread-safe)."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and max(size.width(), size.height()) > max_side:
        reader.setScaledSize(size.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        raise OSError(f"Cannot open {path.name}: {reader.errorString()}")
    return image


class _ImageLabel(QLabel):
    """Shows a pixmap scaled to fit, re-scaled when the view is resized."""

    def __init__(self) -> None:
        super().__init__()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._pixmap: QPixmap | None = None

    def set_image(self, pixmap: QPixmap | None) -> None:
        self._pixmap = pixmap
        self._rescale()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None or self._pixmap.isNull():
            self.setPixmap(QPixmap())
            return
        ratio = self.devicePixelRatioF()
        target = QSize(int(self.width() * ratio), int(self.height() * ratio))
        scaled = self._pixmap.scaled(
            target, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        scaled.setDevicePixelRatio(ratio)
        self.setPixmap(scaled)


def taken_text(taken_at: str | None, mtime_ns: int) -> str:
    """The capture time from EXIF, or else the file's date, saying which it is."""
    if taken_at:
        return taken_at.replace("T", " ")
    from datetime import datetime

    when = datetime.fromtimestamp(mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")
    return f"{when} (file date; the photo records no capture time)"


class PhotoDetailView(QWidget):
    """One photo large, with what the library knows about it."""

    back_requested = Signal()
    next_requested = Signal()
    previous_requested = Signal()
    similar_requested = Signal(object)  # PhotoItem

    def __init__(self, session: LibrarySession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.item: PhotoItem | None = None
        self.setObjectName("PhotoDetailView")

        bar = QHBoxLayout()
        self.back_button = QPushButton("← Back to photos")
        self.back_button.clicked.connect(self.back_requested)
        self.prev_button = QPushButton("‹ Previous")
        self.prev_button.clicked.connect(self.previous_requested)
        self.next_button = QPushButton("Next ›")
        self.next_button.clicked.connect(self.next_requested)
        self.title = QLabel()
        self.title.setObjectName("DetailTitle")
        self.similar_button = QPushButton("Find similar")
        self.similar_button.clicked.connect(
            lambda: self.item and self.similar_requested.emit(self.item)
        )
        self.open_button = QPushButton("Open in viewer")
        self.open_button.clicked.connect(self.open_externally)
        for widget in (self.back_button, self.prev_button, self.next_button):
            bar.addWidget(widget)
        bar.addSpacing(12)
        bar.addWidget(self.title, 1)
        bar.addWidget(self.similar_button)
        bar.addWidget(self.open_button)

        self.image = _ImageLabel()
        info = QFrame()
        info.setObjectName("DetailInfo")
        info.setFixedWidth(300)
        self.form = QFormLayout(info)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fields: dict[str, QLabel] = {}
        for name in (
            "File",
            "Folder",
            "Taken",
            "Camera",
            "Size",
            "Format",
            "File size",
            "Location",
        ):
            value = QLabel()
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[name] = value
            self.form.addRow(f"{name}:", value)
        self.aspects = QLabel()
        self.aspects.setWordWrap(True)
        self.aspects.setObjectName("AspectWords")
        self.form.addRow("Aspects:", self.aspects)

        body = QHBoxLayout()
        body.addWidget(self.image, 1)
        body.addWidget(info)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addLayout(body, 1)

        for keys, signal in (
            ((Qt.Key.Key_Right, Qt.Key.Key_PageDown), self.next_requested),
            ((Qt.Key.Key_Left, Qt.Key.Key_PageUp), self.previous_requested),
            ((Qt.Key.Key_Escape, Qt.Key.Key_Backspace), self.back_requested),
        ):
            for key in keys:
                shortcut = QShortcut(QKeySequence(key), self)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                shortcut.activated.connect(signal)

    def show_photo(self, item: PhotoItem, *, has_prev: bool = True, has_next: bool = True) -> None:
        self.item = item
        record = item.record
        self.prev_button.setEnabled(has_prev)
        self.next_button.setEnabled(has_next)
        self.title.setText(f"<b>{item.path.name}</b>")
        self.fields["File"].setText(item.path.name)
        self.fields["Folder"].setText(str(item.path.parent))
        self.fields["Taken"].setText(taken_text(record.taken_at, record.mtime_ns))
        self.fields["Camera"].setText(record.camera or "unknown")
        self.fields["Size"].setText(f"{record.width} × {record.height}")
        self.fields["Format"].setText(record.format)
        self.fields["File size"].setText(_bytes(record.size))
        gps = record.gps
        self.fields["Location"].setText(f"{gps[0]:.5f}, {gps[1]:.5f}" if gps else "not recorded")
        self.aspects.setText("…")
        # Show the cached thumbnail at once, then the full picture when it is decoded.
        self.image.set_image(
            self.session.thumbnails.get(record.content_hash, item.thumbnail, record.path)
        )
        path = item.path
        job = self.session.runner.start("detail-image", lambda _ctx: read_image(path))
        job.succeeded.connect(lambda image, pid=item.id: self._on_image(pid, image))
        job.failed.connect(lambda msg, pid=item.id: self._on_image_failed(pid, msg))
        self._load_aspects(item)
        self.setFocus()

    def _load_aspects(self, item: PhotoItem) -> None:
        encoder = self.session.encoder
        if encoder is None:
            self.aspects.setText("(available once the model is loaded)")
            return
        directory, queries = self.session.library_dir, self.session.queries
        job = self.session.runner.start(
            "detail-aspects",
            lambda _ctx: tasks.photo_aspects(queries, directory, encoder, item.id),
            lane=QUERY_LANE,
        )
        job.succeeded.connect(lambda words, pid=item.id: self._on_aspects(pid, words))
        job.failed.connect(lambda _msg: self.aspects.setText("—"))

    def _on_aspects(self, photo_id: int, words: list[tuple[str, float]]) -> None:
        if self.item is not None and self.item.id == photo_id:
            self.aspects.setText(", ".join(term for term, _ in words) if words else "—")

    def _on_image(self, photo_id: int, image: QImage) -> None:
        if self.item is not None and self.item.id == photo_id:
            self.image.set_image(QPixmap.fromImage(image))

    def _on_image_failed(self, photo_id: int, message: str) -> None:
        if self.item is not None and self.item.id == photo_id:
            self.image.setText(message)

    def open_externally(self) -> None:
        if self.item is not None:
            open_externally(self.item.path)


def open_externally(path: Path) -> bool:
    """Hand a photo to the desktop's default viewer; False when the desktop refused."""
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"
