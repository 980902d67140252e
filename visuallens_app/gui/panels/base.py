"""What every panel is: a widget with a title, built from the app's shared context."""

from __future__ import annotations

from typing import ClassVar

from PySide6.QtWidgets import QWidget

from visuallens_app.gui.context import AppContext


class Panel(QWidget):
    """One page of the main window's sidebar.

    A panel gets the :class:`AppContext` (the library session and the shared vision-language
    model host) and does its core work through their job runner. ``activated`` is called each
    time the user switches to it. A panel with ``needs_library = False`` is usable before any
    photo folder is added (it works on image files opened or dropped on it).
    """

    #: Sidebar label, and the object name tests and shortcuts find the panel by.
    title: ClassVar[str] = ""
    #: A QStyle standard pixmap name for the sidebar icon.
    icon: ClassVar[str] = "SP_FileDialogContentsView"
    #: Whether the panel is only useful once the library has photos.
    needs_library: ClassVar[bool] = True

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.session = context.session
        self.vlm = context.vlm
        self.setObjectName(type(self).__name__)

    def activated(self) -> None:
        """The user switched to this panel (refresh what may be stale)."""

    def shutdown(self) -> None:
        """The window is closing: stop anything the panel started itself."""
