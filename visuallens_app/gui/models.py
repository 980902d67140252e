"""Qt item models over core results: the library grid, virtual and paged, and search results.

The browsed library is virtual: the model knows the row count of the query from the start (one
COUNT on a worker), so the scroll bar spans the whole library and the end is one drag away, and
it materialises rows page by page for whatever the view paints. A row whose page has not arrived
is a placeholder (no name, no thumbnail) that paints at once and fills in when its page lands.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)

from visuallens_app.gui import tasks
from visuallens_app.gui.tasks import BrowseHead, BrowseQuery, PhotoItem
from visuallens_app.gui.thumbnails import ThumbnailLoader
from visuallens_app.gui.workers import JobRunner

#: Rows per page: a screenful at the smallest zoom is well under two pages.
PAGE_SIZE = 200
#: Pages kept in memory (least recently painted go first): memory stays flat however far the
#: user scrolls; a few screens either side of the visible one stay instant.
MAX_PAGES = 24
#: Page queries running at once. More would only load pages the user already scrolled past.
MAX_PAGES_IN_FLIGHT = 2
#: Requests older than this, relative to the newest one, are for rows no longer painted
#: (the user scrolled on), so they are dropped rather than loaded.
STALE_REQUEST_S = 0.05
#: After a query change or refresh, these most recently painted pages are re-read with the count.
REFRESH_PAGES = 3
#: How often pages may be dispatched while the view keeps asking (about once a frame).
DISPATCH_MS = 16

PhotoRole = Qt.ItemDataRole.UserRole + 1
ScoreRole = Qt.ItemDataRole.UserRole + 2
ThumbnailRole = Qt.ItemDataRole.UserRole + 3
#: False for a search result below the calibrated cut-off (a weaker match); None when browsing.
MatchRole = Qt.ItemDataRole.UserRole + 4
#: True on the first weaker match after the matches: where the grid draws the line.
DividerRole = Qt.ItemDataRole.UserRole + 5

_Index = QModelIndex | QPersistentModelIndex


class PhotoGridModel(QAbstractListModel):
    """Photos as rows: the browsed library (virtual, paged) or a list of search results.

    All SQLite work happens in worker tasks; this model only holds their results. An epoch
    number tags every request, so an answer that arrives after the query changed (or after a
    refresh re-read the library) is dropped.
    """

    loading_changed = Signal(bool)
    rows_loaded = Signal()  # after the count, every page, refresh or result set
    mode_changed = Signal(str)  # "browse" or "results"

    def __init__(
        self, runner: JobRunner, thumbnails: ThumbnailLoader, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.runner = runner
        self.thumbnails = thumbnails
        self.library_dir: Path | None = None
        self.query = BrowseQuery()
        self.mode = "browse"
        self.results_title = ""
        self._results: list[PhotoItem] = []
        self._total = 0
        self._pages: OrderedDict[int, list[PhotoItem]] = OrderedDict()
        self._rows_by_hash: dict[str, set[int]] = defaultdict(set)
        self._wanted: dict[int, float] = {}  # page -> when the view last painted one of its rows
        self._in_flight: set[int] = set()
        self._head_loading = False
        self._refresh_pending = False
        self._epoch = 0
        self._head_serial = 0
        self._dispatch = QTimer(self)
        self._dispatch.setSingleShot(True)
        self._dispatch.setInterval(DISPATCH_MS)
        self._dispatch.timeout.connect(self._dispatch_pages)
        thumbnails.thumbnail_ready.connect(self._on_thumbnail)

    # -- Qt model API -------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        if parent.isValid():
            return 0
        return len(self._results) if self.mode == "results" else self._total

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item = self._item(index.row(), request=True)
        if item is None:
            return None  # a placeholder: its page is on its way
        if role == Qt.ItemDataRole.DisplayRole:
            return item.path.name
        if role == Qt.ItemDataRole.DecorationRole or role == ThumbnailRole:  # noqa: PLR1714
            return self.thumbnails.get(item.record.content_hash, item.thumbnail, item.record.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            when = item.record.taken_at or "no capture date"
            score = f"\nscore {item.score:.3f}" if item.score is not None else ""
            weaker = "\na weaker match" if item.match is False else ""
            return f"{item.path}\n{when}{score}{weaker}"
        if role == PhotoRole:
            return item
        if role == ScoreRole:
            return item.score
        if role == MatchRole:
            return item.match
        if role == DividerRole:
            row = index.row()
            return bool(
                self.mode == "results"
                and item.match is False
                and row > 0
                and self._results[row - 1].match
            )
        return None

    # -- what to show --------------------------------------------------------------------------
    def photo(self, row: int) -> PhotoItem | None:
        """The photo at ``row``, or None when out of range or its page is not loaded yet."""
        return self._item(row, request=False)

    def rows(self) -> list[PhotoItem]:
        """The rows in memory, in order (every row of a small library once its page arrived)."""
        if self.mode == "results":
            return list(self._results)
        return [item for page in sorted(self._pages) for item in self._pages[page]]

    def row_of(self, photo_id: int) -> int:
        """The row of a photo in memory, or -1."""
        if self.mode == "results":
            return next((r for r, i in enumerate(self._results) if i.id == photo_id), -1)
        for page, items in self._pages.items():
            for offset, item in enumerate(items):
                if item.id == photo_id:
                    return page * PAGE_SIZE + offset
        return -1

    def is_loaded(self, row: int) -> bool:
        return self.photo(row) is not None

    def request_row(self, row: int) -> None:
        """Load the page of ``row`` now (stepping through photos in the detail view)."""
        self._item(row, request=True)

    @property
    def loading(self) -> bool:
        """True while the count (and first rows) of the query or a refresh is on its way."""
        return self._head_loading

    @property
    def pages_loading(self) -> bool:
        return bool(self._in_flight)

    @property
    def cached_pages(self) -> list[int]:
        return list(self._pages)

    def browse(self, library_dir: Path, query: BrowseQuery | None = None) -> None:
        """Show the library (from the top) under ``query``; rows load as the view paints them."""
        self.library_dir = library_dir
        if query is not None:
            self.query = query
        self._set_mode("browse")
        self.beginResetModel()
        self._results = []
        self._total = 0
        self._forget_pages()
        self.endResetModel()
        self._refresh_pending = False
        self._load_head([0])

    def refresh(self) -> None:
        """Re-read the count and the rows on screen (photos were indexed); keeps the scroll."""
        if self.mode != "browse" or self.library_dir is None:
            return
        if self._head_loading:
            self._refresh_pending = True  # done once the answer in flight arrived
            return
        self._refresh_pending = False
        recent = list(reversed(self._pages))[:REFRESH_PAGES]
        self._load_head(sorted(recent) or [0])

    def show_results(self, items: list[PhotoItem], title: str) -> None:
        """Show search results (scored), replacing the browsed rows until :meth:`browse`."""
        self._epoch += 1
        self._set_head_loading(False)
        self.results_title = title
        self.beginResetModel()
        self._set_mode("results")
        self._results = list(items)
        self._total = 0
        self._forget_pages()
        for row, item in enumerate(self._results):
            self._rows_by_hash[item.record.content_hash].add(row)
        self.endResetModel()
        self.rows_loaded.emit()

    def clear(self) -> None:
        self._epoch += 1
        self._set_head_loading(False)
        self.beginResetModel()
        self._results = []
        self._total = 0
        self._forget_pages()
        self.endResetModel()

    # -- internals: rows -----------------------------------------------------------------------
    def _item(self, row: int, *, request: bool) -> PhotoItem | None:
        if self.mode == "results":
            return self._results[row] if 0 <= row < len(self._results) else None
        if not 0 <= row < self._total:
            return None
        number, offset = divmod(row, PAGE_SIZE)
        page = self._pages.get(number)
        if page is None:
            if request:
                self._want(number)
            return None
        if request:
            self._pages.move_to_end(number)  # painted: the last page to be evicted
        return page[offset] if offset < len(page) else None

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self.mode_changed.emit(mode)

    def _forget_pages(self) -> None:
        self._epoch += 1
        self._pages.clear()
        self._rows_by_hash = defaultdict(set)
        self._wanted.clear()
        self._in_flight.clear()
        self._dispatch.stop()

    def _store_page(self, number: int, items: list[PhotoItem]) -> None:
        old = self._pages.pop(number, None)
        if old is not None:
            self._unindex(number, old)
        self._pages[number] = items
        first = number * PAGE_SIZE
        for offset, item in enumerate(items):
            self._rows_by_hash[item.record.content_hash].add(first + offset)
        while len(self._pages) > MAX_PAGES:
            evicted, rows = self._pages.popitem(last=False)
            self._unindex(evicted, rows)

    def _unindex(self, number: int, items: list[PhotoItem]) -> None:
        first = number * PAGE_SIZE
        for offset, item in enumerate(items):
            rows = self._rows_by_hash.get(item.record.content_hash)
            if rows is not None:
                rows.discard(first + offset)
                if not rows:
                    del self._rows_by_hash[item.record.content_hash]

    def _emit_rows_changed(self, first: int, last: int) -> None:
        last = min(last, self.rowCount() - 1)
        if first <= last:
            self.dataChanged.emit(self.index(first), self.index(last))

    # -- internals: the count and first rows ----------------------------------------------------
    def _load_head(self, pages: list[int]) -> None:
        assert self.library_dir is not None
        self._set_head_loading(True)
        self._head_serial += 1
        epoch, serial = self._epoch, self._head_serial
        directory, query = self.library_dir, self.query
        job = self.runner.start(
            f"grid-head-{id(self)}",
            lambda _ctx: tasks.browse_head(directory, query, pages, PAGE_SIZE),
        )
        job.succeeded.connect(partial(self._on_head, epoch))
        job.finished.connect(partial(self._on_head_done, serial))

    def _set_head_loading(self, loading: bool) -> None:
        if loading != self._head_loading:
            self._head_loading = loading
            self.loading_changed.emit(loading)

    def _on_head(self, epoch: int, head: BrowseHead) -> None:
        if epoch != self._epoch or self.mode != "browse":
            return
        old_total = self._total
        # Rows may have moved (indexing inserts anywhere in the timeline): every page in memory
        # or in flight is stale now, except the ones this answer carries.
        self._epoch += 1
        self._pages.clear()
        self._rows_by_hash = defaultdict(set)
        self._in_flight.clear()
        if head.total > old_total:
            self.beginInsertRows(QModelIndex(), old_total, head.total - 1)
            self._total = head.total
            self.endInsertRows()
        elif head.total < old_total:
            self.beginRemoveRows(QModelIndex(), head.total, old_total - 1)
            self._total = head.total
            self.endRemoveRows()
        for number, items in head.pages.items():
            self._store_page(number, items)
        self._emit_rows_changed(0, min(old_total, self._total) - 1)
        self.rows_loaded.emit()

    def _on_head_done(self, serial: int) -> None:
        if serial == self._head_serial and self._head_loading:
            self._set_head_loading(False)
            if self._refresh_pending:
                self.refresh()
            elif self._wanted:
                self._dispatch.start()

    # -- internals: pages the view paints -------------------------------------------------------
    def _want(self, number: int) -> None:
        self._wanted[number] = time.monotonic()
        if not self._dispatch.isActive():
            self._dispatch.start()

    def _dispatch_pages(self) -> None:
        """Start the pages the view painted last; forget the ones it scrolled past."""
        if not self._wanted or self.library_dir is None or self.mode != "browse":
            return
        if self._head_loading:
            return  # the head's answer resets what is in memory; ask once it arrived
        newest = max(self._wanted.values())
        for number, when in list(self._wanted.items()):
            if when < newest - STALE_REQUEST_S or number in self._pages:
                del self._wanted[number]
        free = MAX_PAGES_IN_FLIGHT - len(self._in_flight)
        ready = sorted(
            (n for n in self._wanted if n not in self._in_flight),
            key=lambda n: (-self._wanted[n], n),
        )
        for number in ready[: max(0, free)]:
            del self._wanted[number]
            self._load_page(number)

    def _load_page(self, number: int) -> None:
        assert self.library_dir is not None
        self._in_flight.add(number)
        epoch = self._epoch
        directory, query = self.library_dir, self.query
        job = self.runner.start(
            f"grid-page-{id(self)}-{number}",
            lambda _ctx: tasks.page(directory, query, number * PAGE_SIZE, PAGE_SIZE),
            supersede=False,
        )
        job.succeeded.connect(partial(self._on_page, epoch, number))
        job.finished.connect(partial(self._on_page_done, epoch, number))

    def _on_page(self, epoch: int, number: int, items: list[PhotoItem]) -> None:
        if epoch != self._epoch or self.mode != "browse":
            return
        self._store_page(number, items)
        first = number * PAGE_SIZE
        self._emit_rows_changed(first, first + PAGE_SIZE - 1)
        self.rows_loaded.emit()

    def _on_page_done(self, epoch: int, number: int) -> None:
        if epoch == self._epoch:
            self._in_flight.discard(number)
        if self._wanted:
            self._dispatch_pages()

    def _on_thumbnail(self, key: str) -> None:
        for row in self._rows_by_hash.get(key, ()):
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])
