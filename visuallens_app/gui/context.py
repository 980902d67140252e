"""What every panel receives: the library session and the shared vision-language model host."""

from __future__ import annotations

from dataclasses import dataclass

from visuallens_app.gui.session import LibrarySession
from visuallens_app.gui.vlm_host import VlmHost


@dataclass(frozen=True, eq=False)
class AppContext:
    """The app's shared services, handed to each panel at construction."""

    session: LibrarySession
    vlm: VlmHost
