"""Qt item models over core results: the library grid, paged and refreshed while indexing."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)

from visuallens_app.gui import tasks
from visuallens_app.gui.tasks import BrowseQuery, PhotoItem
from visuallens_app.gui.thumbnails import ThumbnailLoader
from visuallens_app.gui.workers import JobRunner

#: Rows fetched per page; the first screenful of a huge library arrives in one query.
PAGE_SIZE = 400

PhotoRole = Qt.ItemDataRole.UserRole + 1
ScoreRole = Qt.ItemDataRole.UserRole + 2
ThumbnailRole = Qt.ItemDataRole.UserRole + 3

_Index = QModelIndex | QPersistentModelIndex


class PhotoGridModel(QAbstractListModel):
    """Photos as rows: the browsed library (paged via fetchMore) or a list of search results.

    All SQLite work happens in worker tasks; this model only holds their results. A generation
    number tags every page request, so a page that arrives after the query changed is dropped.
    """

    loading_changed = Signal(bool)
    rows_loaded = Signal()  # after every page, refresh or result set
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
        self._rows: list[PhotoItem] = []
        self._rows_by_hash: dict[str, list[int]] = defaultdict(list)
        self._exhausted = True
        self._fetching = False
        self._refresh_pending = False
        self._generation = 0
        thumbnails.thumbnail_ready.connect(self._on_thumbnail)

    # -- Qt model API -------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        item = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.path.name
        if role == Qt.ItemDataRole.DecorationRole or role == ThumbnailRole:  # noqa: PLR1714
            return self.thumbnails.get(item.record.content_hash, item.thumbnail)
        if role == Qt.ItemDataRole.ToolTipRole:
            when = item.record.taken_at or "no capture date"
            score = f"\nscore {item.score:.3f}" if item.score is not None else ""
            return f"{item.path}\n{when}{score}"
        if role == PhotoRole:
            return item
        if role == ScoreRole:
            return item.score
        return None

    def canFetchMore(self, parent: _Index = QModelIndex()) -> bool:  # noqa: B008
        return (
            not parent.isValid()
            and self.mode == "browse"
            and self.library_dir is not None
            and not self._exhausted
            and not self._fetching
        )

    def fetchMore(self, parent: _Index = QModelIndex()) -> None:  # noqa: B008
        if self.canFetchMore(parent):
            self._request(len(self._rows), PAGE_SIZE, replace=False)

    # -- what to show --------------------------------------------------------------------------
    def photo(self, row: int) -> PhotoItem | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def rows(self) -> list[PhotoItem]:
        return list(self._rows)

    def row_of(self, photo_id: int) -> int:
        for row, item in enumerate(self._rows):
            if item.id == photo_id:
                return row
        return -1

    @property
    def loading(self) -> bool:
        return self._fetching

    def browse(self, library_dir: Path, query: BrowseQuery | None = None) -> None:
        """Show the library (from the top) under ``query``; pages load as the view scrolls."""
        self.library_dir = library_dir
        if query is not None:
            self.query = query
        self._set_mode("browse")
        self._generation += 1
        self._fetching = False
        self._refresh_pending = False
        self._set_rows([])
        self._exhausted = False
        self._request(0, PAGE_SIZE, replace=True)

    def refresh(self) -> None:
        """Re-read what is loaded (photos were indexed); keeps the rows that did not change."""
        if self.mode != "browse" or self.library_dir is None:
            return
        if self._fetching:
            self._refresh_pending = True  # done once the page in flight arrived
            return
        self._refresh_pending = False
        self._request(0, max(PAGE_SIZE, len(self._rows)), replace=True)

    def show_results(self, items: list[PhotoItem], title: str) -> None:
        """Show search results (scored), replacing the browsed rows until :meth:`browse`."""
        self._generation += 1
        self._fetching = False
        self.results_title = title
        self._exhausted = True
        self._set_mode("results")
        self._set_rows(items)
        self.rows_loaded.emit()

    def clear(self) -> None:
        self._generation += 1
        self._set_rows([])
        self._exhausted = True

    # -- internals ---------------------------------------------------------------------------
    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self.mode_changed.emit(mode)

    def _request(self, offset: int, limit: int, *, replace: bool) -> None:
        assert self.library_dir is not None
        self._fetching = True
        self.loading_changed.emit(True)
        generation = self._generation
        directory, query = self.library_dir, self.query
        job = self.runner.start(
            f"grid-page-{id(self)}",
            lambda _ctx: tasks.page(directory, query, offset, limit),
            supersede=replace,
        )
        job.succeeded.connect(partial(self._on_page, generation, offset, limit, replace))
        job.finished.connect(partial(self._on_page_done, generation))

    def _on_page_done(self, generation: int) -> None:
        if generation == self._generation:
            self._fetching = False
            self.loading_changed.emit(False)
            if self._refresh_pending:
                self.refresh()

    def _on_page(
        self, generation: int, offset: int, limit: int, replace: bool, items: list[PhotoItem]
    ) -> None:
        if generation != self._generation or self.mode != "browse":
            return
        self._fetching = False
        if replace:
            self._exhausted = len(items) < limit
            self._merge(items)
        else:
            if offset != len(self._rows):
                return  # a refresh changed the rows in between; the view will ask again
            self._exhausted = len(items) < limit
            if items:
                first = len(self._rows)
                self.beginInsertRows(QModelIndex(), first, first + len(items) - 1)
                self._rows.extend(items)
                self._index_hashes(first)
                self.endInsertRows()
        self.rows_loaded.emit()

    def _merge(self, items: list[PhotoItem]) -> None:
        """Replace the rows with as few view changes as possible (indexing grows the library)."""
        old = self._rows
        if [i.id for i in items[: len(old)]] == [i.id for i in old]:
            if len(items) > len(old):
                self.beginInsertRows(QModelIndex(), len(old), len(items) - 1)
                self._rows = items
                self._index_hashes(0)
                self.endInsertRows()
            else:
                self._rows = items
                self._index_hashes(0)
            if old:
                self.dataChanged.emit(self.index(0), self.index(min(len(old), len(items)) - 1))
            return
        self._set_rows(items)

    def _set_rows(self, items: list[PhotoItem]) -> None:
        self.beginResetModel()
        self._rows = list(items)
        self._index_hashes(0)
        self.endResetModel()

    def _index_hashes(self, start: int) -> None:
        if start == 0:
            self._rows_by_hash = defaultdict(list)
        for row in range(start, len(self._rows)):
            self._rows_by_hash[self._rows[row].record.content_hash].append(row)

    def _on_thumbnail(self, key: str) -> None:
        for row in self._rows_by_hash.get(key, ()):
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])
