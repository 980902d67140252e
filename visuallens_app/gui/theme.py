"""Light and dark palettes that follow the system (Qt 6 colour scheme), and a little styling."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

STYLE = """
#Banner { background: rgba(220, 80, 60, 0.16); border-bottom: 1px solid rgba(220, 80, 60, 0.5); }
#Banner[level="info"] {
    background: rgba(60, 130, 220, 0.14); border-bottom: 1px solid rgba(60, 130, 220, 0.4);
}
#IndexingBar { border-top: 1px solid palette(mid); }
#Sidebar { border: none; border-right: 1px solid palette(mid); padding-top: 6px; font-size: 11pt; }
#Sidebar::item { padding: 8px 10px; border-radius: 6px; margin: 1px 6px; }
#Sidebar::item:selected { background: palette(highlight); color: palette(highlighted-text); }
#WelcomeCard { border: 1px solid palette(mid); border-radius: 14px; background: palette(base); }
#WelcomeTitle { font-size: 20pt; font-weight: 600; }
#WelcomeHint, #CardEvidenceCaption, #CardScore, #RecommendationStatus, #EmptyState {
    color: palette(placeholder-text);
}
#EmptyState { font-size: 13pt; }
#Card { border: 1px solid palette(mid); border-radius: 10px; background: palette(base); }
#CardName { font-size: 13pt; }
#CardRank {
    border-radius: 14px; background: palette(highlight); color: palette(highlighted-text);
    font-weight: 600;
}
#EvidencePhoto { border-radius: 4px; background: palette(alternate-base); }
#PhotoGrid { border: none; }
#DetailInfo { border-left: 1px solid palette(mid); padding-left: 8px; }
#SearchBox { padding: 5px 8px; border-radius: 6px; }
"""


def dark_palette() -> QPalette:
    p = QPalette()
    window, base, text = QColor(37, 38, 42), QColor(28, 29, 32), QColor(228, 228, 232)
    p.setColor(QPalette.ColorRole.Window, window)
    p.setColor(QPalette.ColorRole.WindowText, text)
    p.setColor(QPalette.ColorRole.Base, base)
    p.setColor(QPalette.ColorRole.AlternateBase, QColor(44, 45, 50))
    p.setColor(QPalette.ColorRole.ToolTipBase, QColor(50, 51, 56))
    p.setColor(QPalette.ColorRole.ToolTipText, text)
    p.setColor(QPalette.ColorRole.Text, text)
    p.setColor(QPalette.ColorRole.PlaceholderText, QColor(150, 150, 158))
    p.setColor(QPalette.ColorRole.Button, QColor(48, 49, 54))
    p.setColor(QPalette.ColorRole.ButtonText, text)
    p.setColor(QPalette.ColorRole.Mid, QColor(70, 71, 78))
    p.setColor(QPalette.ColorRole.Highlight, QColor(64, 128, 220))
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    p.setColor(QPalette.ColorRole.Link, QColor(110, 160, 240))
    for role in (
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
        QPalette.ColorRole.WindowText,
    ):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 120, 126))
    return p


def light_palette() -> QPalette:
    p = QApplication.style().standardPalette()
    p.setColor(QPalette.ColorRole.Highlight, QColor(46, 110, 210))
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    return p


def is_dark() -> bool:
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply_theme(app: QApplication, dark: bool | None = None) -> None:
    """Fusion with a palette matching the system scheme (or ``dark`` when given)."""
    app.setStyle("Fusion")
    use_dark = is_dark() if dark is None else dark
    app.setPalette(dark_palette() if use_dark else light_palette())
    app.setStyleSheet(STYLE)


def follow_system_theme(app: QApplication) -> None:
    apply_theme(app)
    QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
