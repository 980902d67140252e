"""What every panel is: a widget with a title, built from the shared session."""

from __future__ import annotations

from typing import ClassVar

from PySide6.QtWidgets import QWidget

from visuallens_app.gui.session import LibrarySession


class Panel(QWidget):
    """One page of the main window's sidebar.

    A panel gets the :class:`LibrarySession` and does its core work through the session's job
    runner. ``activated`` is called each time the user switches to it.
    """

    #: Sidebar label, and the object name tests and shortcuts find the panel by.
    title: ClassVar[str] = ""
    #: A QStyle standard pixmap name for the sidebar icon.
    icon: ClassVar[str] = "SP_FileDialogContentsView"

    def __init__(self, session: LibrarySession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setObjectName(type(self).__name__)

    def activated(self) -> None:
        """The user switched to this panel (refresh what may be stale)."""

    def shutdown(self) -> None:
        """The window is closing: stop anything the panel started itself."""
