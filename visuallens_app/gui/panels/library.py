"""The library: a virtualised thumbnail grid with search, filters, and a detail view."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QDate, QModelIndex, QPoint, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from visuallens_app.gui import tasks
from visuallens_app.gui.context import AppContext
from visuallens_app.gui.models import PhotoGridModel
from visuallens_app.gui.panels.base import Panel
from visuallens_app.gui.photo_view import PhotoDetailView, open_externally
from visuallens_app.gui.session import QUERY_LANE
from visuallens_app.gui.tasks import BrowseQuery, PhotoItem
from visuallens_app.gui.widgets import ThumbnailDelegate

ZOOM_STEPS = (96, 128, 160, 200, 256, 320)
_NO_DATE = QDate(1900, 1, 1)


def results_summary(title: str, items: list[PhotoItem]) -> str:
    """The chip over search results: how many match, and that the rest are weaker (dimmed)."""
    matches = sum(1 for item in items if item.match is not False)
    weaker = len(items) - matches
    if not weaker:
        return f"{title}: {matches} {'photo' if matches == 1 else 'photos'}, best first"
    if not matches:
        closest = "the closest is" if weaker == 1 else f"the {weaker} closest are"
        return f"{title}: no photo matches well; {closest} shown dimmed"
    return (
        f"{title}: {matches} {'match' if matches == 1 else 'matches'}, best first, "
        f"then {weaker} weaker {'match' if weaker == 1 else 'matches'} (dimmed)"
    )


class PhotoGridView(QListView):
    """QListView in icon mode with uniform items: only visible rows are ever painted or loaded."""

    activated_photo = Signal(QModelIndex)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        # One pass: the scroll bar spans the whole library at once (a batched layout grows the
        # range batch by batch and clamps the scroll position on every relayout). It costs
        # ~2 µs a row (QListView asks the Python model for each index), 0.2 s at 100,000.
        self.setLayoutMode(QListView.LayoutMode.SinglePass)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setSpacing(4)
        self.setMouseTracking(True)
        self.setWrapping(True)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.delegate = ThumbnailDelegate(self)
        self.setItemDelegate(self.delegate)
        self.doubleClicked.connect(self.activated_photo)

    def set_side(self, side: int) -> None:
        self.delegate.side = side
        self.delegate.sizeHintChanged.emit(
            self.model().index(0, 0) if self.model() else QModelIndex()
        )
        self.scheduleDelayedItemsLayout()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            index = self.currentIndex()
            if index.isValid():
                self.activated_photo.emit(index)
                return
        super().keyPressEvent(event)


class LibraryPanel(Panel):
    """Browse every indexed photo, newest first; search by text; find similar photos."""

    title = "Library"
    icon = "SP_DirIcon"

    photo_opened = Signal(object)  # PhotoItem shown in the detail view

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(context, parent)
        session = context.session
        self.model = PhotoGridModel(session.runner, session.thumbnails, self)
        self._zoom = 2

        # toolbar: search, results chip, filters
        self.search_box = QLineEdit()
        self.search_box.setObjectName("SearchBox")
        self.search_box.setPlaceholderText(
            "Search your photos: “cat”, “beach at sunset”…  (Ctrl+F)"
        )
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(self.search)
        self.results_label = QLabel()
        self.results_label.setObjectName("ResultsLabel")
        self.show_all_button = QPushButton("Show all photos")
        self.show_all_button.clicked.connect(self.show_all)
        self.folder_filter = QComboBox()
        self.folder_filter.setToolTip("Show photos from one folder")
        self.folder_filter.setMinimumContentsLength(14)
        self.folder_filter.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.date_from = self._date_edit("From")
        self.date_to = self._date_edit("To")
        self.sort = QComboBox()
        self.sort.addItems(["Newest first", "Oldest first"])
        self.folder_filter.currentIndexChanged.connect(self._filters_changed)
        self.date_from.dateChanged.connect(self._filters_changed)
        self.date_to.dateChanged.connect(self._filters_changed)
        self.sort.currentIndexChanged.connect(self._filters_changed)

        top = QHBoxLayout()
        top.addWidget(self.search_box, 3)
        top.addWidget(self.folder_filter, 1)
        top.addWidget(QLabel("From"))
        top.addWidget(self.date_from)
        top.addWidget(QLabel("to"))
        top.addWidget(self.date_to)
        top.addWidget(self.sort)
        chip = QHBoxLayout()
        chip.addWidget(self.results_label, 1)
        chip.addWidget(self.show_all_button)
        self.chip = QWidget()
        self.chip.setLayout(chip)
        chip.setContentsMargins(0, 0, 0, 0)
        self.chip.hide()

        self.grid = PhotoGridView()
        self.grid.setObjectName("PhotoGrid")
        self.grid.setModel(self.model)
        self.grid.activated_photo.connect(self._open_index)
        self.grid.customContextMenuRequested.connect(self._context_menu)
        self.grid.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.empty = QLabel()
        self.empty.setObjectName("EmptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)

        grid_page = QWidget()
        grid_layout = QVBoxLayout(grid_page)
        grid_layout.setContentsMargins(0, 0, 0, 0)
        grid_layout.addLayout(top)
        grid_layout.addWidget(self.chip)
        grid_layout.addWidget(self.grid, 1)
        grid_layout.addWidget(self.empty, 1)
        self.detail = PhotoDetailView(session)
        self.detail.back_requested.connect(self.close_detail)
        self.detail.next_requested.connect(lambda: self._step(1))
        self.detail.previous_requested.connect(lambda: self._step(-1))
        self.detail.similar_requested.connect(self.find_similar)
        self.stack = QStackedWidget()
        self.stack.addWidget(grid_page)
        self.stack.addWidget(self.detail)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 0)
        layout.addWidget(self.stack)

        self.open_external_action = QAction("Open in system viewer", self)
        self.open_external_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.open_external_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.open_external_action.triggered.connect(self.open_current_externally)
        self.addAction(self.open_external_action)

        self._scroll_idle = QTimer(self)
        self._scroll_idle.setSingleShot(True)
        self._scroll_idle.setInterval(120)
        self._scroll_idle.timeout.connect(self.grid.viewport().update)
        self.model.rows_loaded.connect(self._update_empty)
        self.model.rows_loaded.connect(self._open_pending)
        self.model.modelReset.connect(self._update_empty)
        self.model.loading_changed.connect(self._update_empty)
        self._pending_open = -1  # a row the detail view steps to while its page loads
        session.library_changed.connect(self.model.refresh)
        session.folders_changed.connect(self._fill_folders)
        session.library_moved.connect(self.show_all)
        session.summary_changed.connect(self._update_empty)
        session.summary_changed.connect(lambda _s: self._fill_folders(session.folders))
        for changed in (
            session.encoder_loading,
            session.encoder_ready,
            session.encoder_failed,
            session.indexing_started,
            session.indexing_finished,
        ):
            changed.connect(self._update_empty)
        self._fill_folders(session.folders)
        self.set_zoom(self._zoom)
        # Zoom shortcuts are window actions (View menu), so they work from every widget.
        self.model.browse(session.library_dir, self._query())
        self._update_empty()

    # -- browsing ----------------------------------------------------------------------------
    def _date_edit(self, which: str) -> QDateEdit:
        edit = QDateEdit()
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd")
        edit.setMinimumDate(_NO_DATE)
        edit.setSpecialValueText("any date")
        edit.setDate(_NO_DATE)
        edit.setToolTip(f"{which}: capture date (clear to any date)")
        return edit

    def _query(self) -> BrowseQuery:
        root = self.folder_filter.currentData()
        start, end = self.date_from.date(), self.date_to.date()
        return BrowseQuery(
            root=Path(root) if root else None,
            date_from=start.toString("yyyy-MM-dd") if start != _NO_DATE else None,
            date_to=end.toString("yyyy-MM-dd") if end != _NO_DATE else None,
            newest_first=self.sort.currentIndex() == 0,
        )

    def set_query(self, query: BrowseQuery) -> None:
        """Set the filters (tests and the folder list use this)."""
        self.sort.setCurrentIndex(0 if query.newest_first else 1)
        index = self.folder_filter.findData(str(query.root) if query.root else "")
        self.folder_filter.setCurrentIndex(max(0, index))
        self.date_from.setDate(
            QDate.fromString(query.date_from, "yyyy-MM-dd") if query.date_from else _NO_DATE
        )
        self.date_to.setDate(
            QDate.fromString(query.date_to, "yyyy-MM-dd") if query.date_to else _NO_DATE
        )
        self._filters_changed()

    def _fill_folders(self, folders: list[Path]) -> None:
        summary = self.session.summary
        inside = summary.folders if summary is not None else []
        entries = [("All folders", "")]
        for folder in folders:
            # The photo folder, then every folder inside it that holds photos, indented.
            nested = [f for f in inside if f != folder and f.is_relative_to(folder)]
            for shown in [folder, *nested]:
                depth = len(shown.relative_to(folder).parts)
                entries.append(("    " * depth + (shown.name or str(shown)), str(shown)))
        combo = self.folder_filter
        if [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())] == entries:
            return  # every summary refresh calls this: an open list is left alone
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        for label, data in entries:
            combo.addItem(label, data)
            if data:
                combo.setItemData(combo.count() - 1, data, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(max(0, combo.findData(current or "")))
        combo.blockSignals(False)

    def _filters_changed(self, *_args: object) -> None:
        self.show_all()

    def show_all(self) -> None:
        """Leave search results and browse the library under the current filters."""
        self.session.runner.cancel("search")
        self.chip.hide()
        self.search_box.clear()  # the grid no longer answers the last query
        self.model.browse(self.session.library_dir, self._query())
        self.sort.show()

    def activated(self) -> None:
        if self.model.mode == "browse":
            self.model.refresh()

    def _update_empty(self, *_args: object) -> None:
        has_rows = self.model.rowCount() > 0
        if self.model.mode == "results":
            text = "No matching photos." if not has_rows else ""
        elif not self.session.folders:
            text = "No photo folders yet. Add one from the File menu or drop a folder here."
        elif self.session.indexing:
            text = "Indexing your photos… they appear here as they are added."
        elif self.session.index_pending:
            text = (
                "Loading the model… your photos appear here as soon as indexing starts."
                if self.session.encoder is None and not self.session.encoder_error
                else "Indexing your photos… they appear here as they are added."
            )
        elif self.model.loading:
            text = "Loading…"
        else:
            text = (
                "No photos match these filters."
                if self._query() != BrowseQuery()
                else "No photos found in your folders yet."
            )
        self.empty.setText(text)
        self.empty.setVisible(not has_rows)
        self.grid.setVisible(has_rows)

    # -- zoom ------------------------------------------------------------------------------
    def set_zoom(self, step: int) -> None:
        self._zoom = max(0, min(len(ZOOM_STEPS) - 1, step))
        side = ZOOM_STEPS[self._zoom]
        self.session.thumbnails.set_side(int(side * self.devicePixelRatioF()))
        self.grid.set_side(side)
        self.grid.setIconSize(QSize(side, side))

    def zoom_in(self) -> None:
        self.set_zoom(self._zoom + 1)

    def zoom_out(self) -> None:
        self.set_zoom(self._zoom - 1)

    @property
    def thumbnail_side(self) -> int:
        return ZOOM_STEPS[self._zoom]

    def _scrolled(self, _value: int) -> None:
        # Requests for rows that scrolled off are dropped; visible rows ask again on repaint.
        self.session.thumbnails.drop_queued()
        self._scroll_idle.start()

    # -- search ----------------------------------------------------------------------------
    def focus_search(self) -> None:
        self.close_detail()
        self.search_box.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search_box.selectAll()

    def search(self, text: str | None = None) -> None:
        """Text -> photos; a new search cancels the previous one."""
        text = (self.search_box.text() if text is None else text).strip()
        if text != self.search_box.text():
            self.search_box.setText(text)
        if not text:
            self.show_all()
            return
        encoder = self.session.encoder
        if encoder is None:
            self._show_chip("The model is still loading; search works in a moment.")
            return
        directory, queries = self.session.library_dir, self.session.queries
        self._show_chip(f"Searching for “{text}”…")
        job = self.session.runner.start(
            "search",
            lambda _ctx: tasks.search_text(queries, directory, encoder, text),
            lane=QUERY_LANE,
        )
        job.succeeded.connect(lambda items: self._show_results(items, f"Photos matching “{text}”"))
        job.failed.connect(self._search_failed)

    def find_similar(self, item: PhotoItem) -> None:
        """Photo -> the most similar photos in the library."""
        encoder = self.session.encoder
        if encoder is None:
            self._show_chip("The model is still loading; try again in a moment.")
            return
        self.close_detail()
        self.search_box.clear()  # the results will answer this photo, not the typed text
        directory, path, queries = self.session.library_dir, item.path, self.session.queries
        self._show_chip(f"Finding photos like {path.name}…")
        job = self.session.runner.start(
            "search",
            lambda _ctx: tasks.search_similar(queries, directory, encoder, path),
            lane=QUERY_LANE,
        )
        job.succeeded.connect(lambda items: self._show_results(items, f"Photos like {path.name}"))
        job.failed.connect(self._search_failed)

    def _show_chip(self, text: str) -> None:
        self.results_label.setText(text)
        self.chip.show()

    def _show_results(self, items: list[PhotoItem], title: str) -> None:
        self.model.show_results(items, title)
        self.sort.hide()  # results are ranked by relevance; no date order applies
        self._show_chip(results_summary(title, items))
        if items:
            self.grid.setCurrentIndex(self.model.index(0))
            self.grid.scrollToTop()

    def _search_failed(self, message: str) -> None:
        self._show_chip(message)

    # -- detail ----------------------------------------------------------------------------
    def _context_menu(self, pos: QPoint) -> None:
        index = self.grid.indexAt(pos)
        item = self.model.photo(index.row()) if index.isValid() else None
        if item is None:
            return
        self.grid.setCurrentIndex(index)  # the menu acts on the photo under the pointer
        menu = QMenu(self)
        open_action = QAction("Open", menu)
        open_action.triggered.connect(lambda: self._open_index(index))
        similar = QAction("Find similar photos", menu)
        similar.triggered.connect(lambda: self.find_similar(item))
        menu.addActions([open_action, similar, self.open_external_action])
        menu.popup(self.grid.viewport().mapToGlobal(pos))

    def current_photo(self) -> PhotoItem | None:
        """The photo in the detail view, or else the grid's current one."""
        if self.in_detail:
            return self.detail.item
        index = self.grid.currentIndex()
        return self.model.photo(index.row()) if index.isValid() else None

    def open_current_externally(self) -> None:
        """Open the current photo in the system's default viewer (Ctrl+Shift+O)."""
        item = self.current_photo()
        if item is not None:
            open_externally(item.path)

    def _open_index(self, index: QModelIndex) -> None:
        self.open_row(index.row())

    def open_row(self, row: int) -> None:
        item = self.model.photo(row)
        if item is None:
            return
        self.grid.setCurrentIndex(self.model.index(row))
        self.detail.show_photo(
            item,
            has_prev=row > 0,
            has_next=row + 1 < self.model.rowCount(),
        )
        self.stack.setCurrentWidget(self.detail)
        self.photo_opened.emit(item)

    def _step(self, delta: int) -> None:
        row = self.grid.currentIndex().row() + delta
        if not 0 <= row < self.model.rowCount():
            return
        if self.model.is_loaded(row):
            self.open_row(row)
        else:  # its page is not in memory: open it when it arrives
            self._pending_open = row
            self.model.request_row(row)

    def _open_pending(self) -> None:
        row, self._pending_open = self._pending_open, -1
        if row >= 0 and self.in_detail:
            if self.model.is_loaded(row):
                self.open_row(row)
            else:
                self._pending_open = row

    def close_detail(self) -> None:
        if self.stack.currentWidget() is self.detail:
            self.stack.setCurrentIndex(0)
            self.grid.setFocus()
            current = self.grid.currentIndex()
            if current.isValid():
                self.grid.scrollTo(current)

    @property
    def in_detail(self) -> bool:
        return self.stack.currentWidget() is self.detail
