"""The one place panels are registered: the main window shows these, in this order.

A new panel (the TLDR inspector, the steering studio) is one module with a :class:`Panel`
subclass plus one line in :data:`PANELS`.
"""

from __future__ import annotations

from visuallens_app.gui.panels.base import Panel
from visuallens_app.gui.panels.hallucinations import HallucinationsPanel
from visuallens_app.gui.panels.library import LibraryPanel
from visuallens_app.gui.panels.recommendations import RecommendationsPanel
from visuallens_app.gui.panels.steering import SteeringPanel

PANELS: list[type[Panel]] = [
    LibraryPanel,
    RecommendationsPanel,
    HallucinationsPanel,
    SteeringPanel,
]

__all__ = ["PANELS", "Panel"]
