"""Small widgets shared by the window and panels: banner, job bars, thumbnail delegate."""

from __future__ import annotations

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    QStandardPaths,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPalette, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolButton,
    QWidget,
)

from visuallens_app.gui.models import DividerRole, MatchRole, ScoreRole, ThumbnailRole
from visuallens_app.jobs import Progress


def photo_folder_start() -> str:
    """Where a "choose a photo folder" dialog opens: the user's Pictures folder when there is
    one, else the home folder (never the directory the app happened to be started from)."""
    from pathlib import Path

    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    if pictures and Path(pictures).is_dir():
        return pictures
    return str(Path.home())


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))  # noqa: RUF046
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe_progress(progress: Progress) -> str:
    """'1,234 of 5,000 photos · 42.0/s · about 2 min left' (or the job's own message), in the
    job's own unit ('descriptions' for a catalog)."""
    if progress.stage == "scan" or progress.total <= 0:
        return progress.message or "Scanning folders…"
    if progress.stage == "sweep":
        return "Finishing…"
    parts = [f"{progress.done:,} of {progress.total:,} {progress.unit}"]
    if progress.rate > 0:
        parts.append(f"{progress.rate:.1f}/s")
    eta = progress.eta_seconds
    if eta is not None and progress.done < progress.total:
        parts.append(f"about {format_duration(eta)} left")
    return " · ".join(parts)


class Banner(QFrame):
    """An inline message above the panels: what went wrong and what to do; closable."""

    action_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Banner")
        self.setFrameShape(QFrame.Shape.NoFrame)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 8, 8)
        self.icon = QLabel()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action = QPushButton()
        self.action.clicked.connect(self.action_clicked)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(self.hide)
        layout.addWidget(self.icon)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action)
        layout.addWidget(self.close_button)
        self.hide()

    def show_message(self, text: str, *, level: str = "error", action: str = "") -> None:
        self.label.setText(text)
        icon = QStyle.StandardPixmap.SP_MessageBoxWarning
        if level == "info":
            icon = QStyle.StandardPixmap.SP_MessageBoxInformation
        self.icon.setPixmap(self.style().standardIcon(icon).pixmap(20, 20))
        self.setProperty("level", level)
        self.style().unpolish(self)
        self.style().polish(self)
        self.action.setVisible(bool(action))
        self.action.setText(action)
        self.show()

    @property
    def text(self) -> str:
        return self.label.text()


class JobBar(QFrame):
    """Count, rate and ETA of a long job's counted stage, with cancel (and pause/resume).

    ``stage`` is the Progress stage whose count fills the bar (other stages show it busy);
    ``pausable`` False hides the pause button (a job on a shared lane must not hold it).
    """

    pause_clicked = Signal()
    resume_clicked = Signal()
    cancel_clicked = Signal()

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        title: str,
        stage: str,
        pausable: bool = True,
        name: str = "JobBar",
    ) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self._title = title
        self._stage = stage
        self._pausable = pausable
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 8, 6)
        self.title = QLabel(title)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.label = QLabel("Starting…")
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(8)
        self.bar.setMinimumWidth(160)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self._toggle)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_clicked)
        layout.addWidget(self.title)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.label, 2)
        layout.addWidget(self.pause_button)
        layout.addWidget(self.cancel_button)
        self._paused = False
        self.hide()

    def start(self, text: str = "Starting…") -> None:
        self.set_paused(False)
        self.pause_button.setVisible(self._pausable)
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)
        self.bar.setRange(0, 0)
        self.label.setText(text)
        self.show()

    def set_progress(self, progress: Progress) -> None:
        if progress.total > 0 and progress.stage == self._stage:
            self.bar.setRange(0, progress.total)
            self.bar.setValue(progress.done)
        elif progress.stage != self._stage:
            self.bar.setRange(0, 0)
        self.label.setText(("Paused · " if self._paused else "") + describe_progress(progress))

    def set_paused(self, paused: bool) -> None:
        self._paused = paused
        self.pause_button.setText("Resume" if paused else "Pause")
        self.title.setText("Paused" if paused else self._title)

    def set_stopping(self, text: str = "Stopping…") -> None:
        """Cancel was pressed: the job stops at its next check (after the batch in hand)."""
        self.cancel_button.setEnabled(False)
        self.pause_button.hide()
        self.label.setText(text)

    def _toggle(self) -> None:
        if self._paused:
            self.resume_clicked.emit()
        else:
            self.pause_clicked.emit()


class IndexingBar(JobBar):
    """Count, rate and ETA of the running index, with pause/resume and cancel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, title="Indexing", stage="index", name="IndexingBar")

    def start(self, text: str = "Scanning folders…") -> None:
        super().start(text)

    def show_model_loading(self) -> None:
        """The step before indexing: the model loads (seconds, no count to show)."""
        self.title.setText(self._title)
        self.pause_button.hide()  # nothing runs yet that could be paused or cancelled
        self.cancel_button.hide()
        self.bar.setRange(0, 0)
        self.label.setText("Loading the model… indexing starts when it is ready")
        self.show()


def item_data(index: QModelIndex | QPersistentModelIndex, role: int) -> object:
    """``index.data(role)``, asked of the Python model directly.

    ``QModelIndex.data`` turns an empty QVariant into ``None`` without taking a reference to it
    (PySide6 6.12 on Python 3.11, where None is not immortal): each empty role a delegate reads
    that way drops None's reference count by one, and scrolling a large grid (thumbnails not
    loaded yet, no score while browsing) brings it to zero and aborts the app with "deallocating
    None". Calling the model's Python ``data`` never crosses that conversion.
    """
    model = index.model()
    return model.data(index, role) if model is not None else None


#: Opacity of search results below the cut-off, and the label where they start.
WEAKER_OPACITY = 0.45
WEAKER_LABEL = "weaker matches"


class ThumbnailDelegate(QStyledItemDelegate):
    """Square, centre-cropped thumbnails with rounded corners, a name line and a score badge."""

    def __init__(self, parent: QObject | None = None, *, side: int = 160) -> None:
        super().__init__(parent)
        self.side = side
        self.show_names = True

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        text = option.fontMetrics.height() + 6 if self.show_names else 0
        return QSize(self.side + 8, self.side + 8 + text)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        palette = option.palette
        rect = option.rect
        tile = QRect(rect.x() + 4, rect.y() + 4, self.side, self.side)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        if selected or hovered:
            highlight = QColor(palette.color(QPalette.ColorRole.Highlight))
            highlight.setAlpha(255 if selected else 70)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(highlight)
            painter.drawRoundedRect(rect.adjusted(1, 1, -1, -1), 8, 8)
        clip = QPainterPath()
        clip.addRoundedRect(tile, 6, 6)
        if item_data(index, MatchRole) is False:
            painter.setOpacity(WEAKER_OPACITY)  # below the search's cut-off: dimmed
        pixmap = item_data(index, ThumbnailRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            painter.setClipPath(clip)
            if pixmap.width() == pixmap.height():
                painter.drawPixmap(tile, pixmap)  # prepared at this size on a worker: a blit
            else:
                scaled = pixmap.size().scaled(
                    tile.size(), Qt.AspectRatioMode.KeepAspectRatioByExpanding
                )
                target = QRect(0, 0, scaled.width(), scaled.height())
                target.moveCenter(tile.center())
                painter.drawPixmap(target, pixmap)
            painter.setClipping(False)
        else:
            base = QColor(palette.color(QPalette.ColorRole.Mid))
            base.setAlpha(60)
            painter.fillPath(clip, base)
        score = item_data(index, ScoreRole)
        if score is not None:
            badge = f"{score:.2f}"
            font = QFont(option.font)
            font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
            painter.setFont(font)
            width = painter.fontMetrics().horizontalAdvance(badge) + 10
            box = QRect(
                tile.right() - width - 4, tile.top() + 4, width, painter.fontMetrics().height() + 2
            )
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 150))
            painter.drawRoundedRect(box, 4, 4)
            painter.setPen(QColor("white"))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, badge)
            painter.setFont(option.font)
        if self.show_names:
            text_rect = QRect(
                rect.x() + 4, tile.bottom() + 3, self.side, option.fontMetrics.height()
            )
            role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
            painter.setPen(palette.color(role))
            name = option.fontMetrics.elidedText(
                str(item_data(index, Qt.ItemDataRole.DisplayRole) or ""),
                Qt.TextElideMode.ElideMiddle,
                self.side,
            )
            painter.drawText(
                text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, name
            )
        if item_data(index, DividerRole):
            self._paint_divider(painter, option, rect)
        painter.restore()

    def _paint_divider(self, painter: QPainter, option: QStyleOptionViewItem, rect: QRect) -> None:
        """The line where a search's matches end: a bar on the tile's left and a label."""
        painter.setOpacity(1.0)
        accent = QColor(option.palette.color(QPalette.ColorRole.Highlight))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(accent)
        painter.drawRect(QRect(rect.x(), rect.y() + 2, 3, rect.height() - 4))
        font = QFont(option.font)
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        label = WEAKER_LABEL
        width = painter.fontMetrics().horizontalAdvance(label) + 10
        box = QRect(rect.x() + 8, rect.y() + 8, width, painter.fontMetrics().height() + 2)
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(option.palette.color(QPalette.ColorRole.HighlightedText))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, label)
