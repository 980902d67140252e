"""Widgets the inspection panels share: an image source, an image with an overlay, coloured tokens.

- :class:`ImageSource`: open a file, pick one of the library's photos, or drop a file; decoded on
  a worker (a 12 MP JPEG takes a while), emitted as a PIL image with its path.
- :class:`OverlayImage`: the photo scaled to fit, with an optional translucent heatmap over it.
- :class:`TokenView`: a text whose tokens are coloured by a score (red for likely hallucinated,
  green for grounded, plain for unchecked); hovering or clicking a token says which one.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QWidget,
)

from visuallens_app.gui.images import pil_to_qimage
from visuallens_app.gui.session import LibrarySession

#: Decoded for inspection at most this side: models resize far below it, the overlay needs no more.
INSPECT_SIDE = 1024

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.webp *.heic *.heif *.bmp *.tif *.tiff *.gif)"


def dropped_file(event: QDragEnterEvent | QDropEvent) -> Path | None:
    """The first local file (not folder) in a drag."""
    return dropped_path(event, folder=False)


def dropped_path(event: QDragEnterEvent | QDropEvent, *, folder: bool) -> Path | None:
    """The first local folder (``folder``) or file in a drag, if any."""
    mime = event.mimeData()
    if not mime.hasUrls():
        return None
    for url in mime.urls():
        if url.isLocalFile():
            path = Path(url.toLocalFile())
            if path.is_dir() if folder else path.is_file():
                return path
    return None


def decode_for_inspection(path: Path) -> object:
    """The photo upright, at most :data:`INSPECT_SIDE` px (worker side; one sentence if not)."""
    from visuallens_app.errors import LibraryError
    from visuallens_app.library.decode import DecodeError, decode_photo

    try:
        return decode_photo(path, target=INSPECT_SIDE).image.convert("RGB")
    except DecodeError as err:
        raise LibraryError(f"Cannot read {path.name}: {err}.") from err


class ImageSource(QWidget):
    """Buttons to open an image file or one of the library's photos; also accepts drops."""

    image_loaded = Signal(object, object)  # Path, PIL.Image.Image
    failed = Signal(str)

    def __init__(self, session: LibrarySession, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.key = key
        self.path: Path | None = None
        self.open_button = QPushButton("Open image…")
        self.open_button.clicked.connect(self.choose_file)
        self.library_button = QPushButton("From the library…")
        self.library_button.setToolTip("Pick one of the photos in your photo folders")
        self.library_button.clicked.connect(self.choose_from_library)
        self.label = QLabel("or drop an image here")
        self.label.setObjectName("ImageSourceLabel")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.open_button)
        row.addWidget(self.library_button)
        row.addWidget(self.label, 1)
        self.setAcceptDrops(True)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", "", IMAGE_FILTER)
        if path:
            self.load(Path(path))

    def choose_from_library(self) -> None:
        folders = self.session.folders
        start = str(folders[0]) if folders else ""
        path, _ = QFileDialog.getOpenFileName(self, "A photo from the library", start, IMAGE_FILTER)
        if path:
            self.load(Path(path))

    def load(self, path: Path) -> None:
        """Decode ``path`` on a worker; ``image_loaded`` follows, or ``failed`` with a sentence."""
        self.label.setText(f"Opening {path.name}…")
        job = self.session.runner.start(self.key, lambda _ctx: decode_for_inspection(path))
        job.succeeded.connect(lambda image: self._loaded(path, image))
        job.failed.connect(self._failed)

    def _loaded(self, path: Path, image: object) -> None:
        self.path = path
        self.label.setText(path.name)
        self.label.setToolTip(str(path))
        self.image_loaded.emit(path, image)

    def _failed(self, message: str) -> None:
        self.label.setText(message)
        self.failed.emit(message)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_file(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = dropped_file(event)
        if path is not None:
            event.acceptProposedAction()
            self.load(path)


class ImageInput:
    """What an inspection panel gets from being an image target: its :class:`ImageSource`,
    its :class:`OverlayImage`, file drops anywhere on the panel, and :meth:`open_image`.

    Mixed into a :class:`~visuallens_app.gui.panels.base.Panel` (a QWidget) that calls
    :meth:`build_image_input` in its constructor and defines ``_image_loaded(path, image)``.
    """

    source: ImageSource
    canvas: OverlayImage

    def build_image_input(self, session: LibrarySession, key: str) -> None:
        self.source = ImageSource(session, key)
        self.source.image_loaded.connect(self._image_loaded)
        self.canvas = OverlayImage()
        self.setAcceptDrops(True)  # type: ignore[attr-defined]

    def _image_loaded(self, path: Path, image: object) -> None:
        raise NotImplementedError

    def open_image(self, path: Path) -> None:
        """Inspect ``path`` (a library photo or any image file)."""
        self.source.load(path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        self.source.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self.source.dropEvent(event)


class OverlayImage(QWidget):
    """A photo scaled to fit (aspect kept) with an optional translucent overlay on top."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("OverlayImage")
        self.setMinimumSize(280, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._image: QPixmap | None = None
        self._overlay: QPixmap | None = None
        self.placeholder = "Open an image, pick one from the library, or drop one here."

    def set_image(self, image: object | None) -> None:
        self._image = QPixmap.fromImage(pil_to_qimage(image)) if image is not None else None  # type: ignore[arg-type]
        self._overlay = None
        self.update()

    def set_overlay(self, overlay: QImage | None) -> None:
        self._overlay = QPixmap.fromImage(overlay) if overlay is not None else None
        self.update()

    def has_overlay(self) -> bool:
        return self._overlay is not None

    def image_rect(self) -> QRect:
        """Where the photo is drawn inside the widget."""
        if self._image is None:
            return QRect()
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        top_left = QPoint((self.width() - size.width()) // 2, (self.height() - size.height()) // 2)
        return QRect(top_left, size)

    def sizeHint(self) -> QSize:
        return QSize(480, 360)

    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        if self._image is None:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            painter.end()
            return
        target = self.image_rect()
        painter.drawPixmap(target, self._image)
        if self._overlay is not None:
            painter.drawPixmap(target, self._overlay)
        painter.end()


def score_color(p_good: float) -> QColor:
    """Red (0, hallucinated) through amber to green (1, grounded), light enough to read on."""
    p = min(1.0, max(0.0, p_good))
    hue = int(120 * p)  # 0 red ... 120 green
    return QColor.fromHsv(hue, 150, 245)


class TokenView(QTextBrowser):
    """Tokens of a text, each a link coloured by its score; says which token is hovered."""

    token_hovered = Signal(int)  # token index, or -1 when the pointer left the tokens
    token_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TokenView")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.highlighted.connect(self._hovered)
        self.anchorClicked.connect(self._clicked)

    def show_tokens(
        self,
        text: str,
        spans: Sequence[tuple[int, int, float | None]],
        *,
        threshold: float = 0.5,
        selected: int = -1,
    ) -> None:
        """``text`` with each (start, end, score) span coloured; score None: not checked."""
        parts: list[str] = []
        cursor = 0
        for index, (start, end, score) in enumerate(spans):
            if start > cursor:
                parts.append(html.escape(text[cursor:start]))
            piece = html.escape(text[start:end]) or "&nbsp;"
            if score is None:
                parts.append(
                    f"<a href='t:{index}' style='color: palette(text); text-decoration: none;'>"
                    f"{piece}</a>"
                )
            else:
                color = score_color(score).name()
                weight = "bold" if score < threshold else "normal"
                border = "underline" if index == selected else "none"
                parts.append(
                    f"<a href='t:{index}' style='background-color: {color}; color: #111; "
                    f"font-weight: {weight}; text-decoration: {border};'>{piece}</a>"
                )
            cursor = max(cursor, end)
        parts.append(html.escape(text[cursor:]))
        self.setHtml(
            "<div style='font-size: 15px; line-height: 170%;'>"
            + "".join(parts).replace("\n", "<br>")
            + "</div>"
        )

    @staticmethod
    def _index(url: QUrl) -> int:
        text = url.toString()
        return int(text[2:]) if text.startswith("t:") and text[2:].isdigit() else -1

    def _hovered(self, url: QUrl) -> None:
        self.token_hovered.emit(self._index(url))

    def _clicked(self, url: QUrl) -> None:
        index = self._index(url)
        if index >= 0:
            self.token_clicked.emit(index)


__all__ = [
    "ImageSource",
    "OverlayImage",
    "TokenView",
    "decode_for_inspection",
    "dropped_file",
    "score_color",
]
