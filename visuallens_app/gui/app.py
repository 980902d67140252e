"""Entry point of the desktop app: the window first, the model in the background.

``visuallens-app [PHOTO_FOLDER]``: the window is on screen before torch is imported (the encoder
loads on a worker once the event loop runs); a folder given on the command line is added and
indexed at once.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from visuallens_app.settings import cache_dir

log = logging.getLogger("visuallens_app")


def log_file() -> Path:
    return cache_dir() / "logs" / "visuallens-app.log"


def setup_logging() -> Path:
    """Log to a rotating file in the user's cache dir (the place an excepthook points people to)."""
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=2, encoding="utf-8"
        )
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def install_excepthook(show: Callable[[str], object] | None = None) -> None:
    """Unexpected errors go to the log file, and the user sees one short sentence, not a traceback.

    ``show(message)`` displays it (the main window's banner); the app keeps running.
    """

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        text = "".join(traceback.format_exception(kind, error, tb))
        log.error("Unexpected error:\n%s", text)
        message = (
            f"Something unexpected went wrong ({kind.__name__}). VisualLens keeps running; "
            f"details are in {log_file()}."
        )
        if show is not None:
            try:
                show(message)
                return
            except Exception:
                pass
        print(message, file=sys.stderr)

    sys.excepthook = hook


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="visuallens-app",
        description=(
            "VisualLens Studio: browse, search and get recommendations from your photo folders, "
            "entirely on this computer. The command-line twin is `visuallens`."
        ),
    )
    parser.add_argument(
        "folder", nargs="?", type=Path, help="a photo folder to add and index right away"
    )
    parser.add_argument(
        "--library",
        type=Path,
        metavar="DIR",
        help=(
            "open this library instead of the one in Settings; its photo folders are its own "
            "and are not added to your settings"
        ),
    )
    # Qt's own options (-platform, -style...) pass through to QApplication.
    known, _qt = parser.parse_known_args(argv)
    return known


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options = parse_args(args)
    if options.library:
        # Absolute: the workers and a later look at the settings must name the same folder.
        from visuallens_app.library.paths import normalise_root

        os.environ["VISUALLENS_LIBRARY"] = str(normalise_root(options.library))
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from visuallens_app.gui.main_window import MainWindow
    from visuallens_app.gui.session import LibrarySession
    from visuallens_app.gui.theme import follow_system_theme

    setup_logging()
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication([sys.argv[0], *args])
    app.setApplicationName("VisualLens Studio")
    app.setOrganizationName("VisualLens")
    app.setDesktopFileName("visuallens-studio")
    follow_system_theme(app)

    session = LibrarySession()
    window = MainWindow(session)
    install_excepthook(window.show_error)
    window.show()

    def after_shown() -> None:
        if os.environ.get("VISUALLENS_EXIT_WHEN_SHOWN"):  # benchmarks/bench_startup.py
            print("shown", flush=True)
            app.quit()
            return
        session.start()
        if options.folder:
            window.add_folder(options.folder)

    QTimer.singleShot(0, after_shown)
    app.aboutToQuit.connect(session.shutdown)
    return int(app.exec())


if __name__ == "__main__":
    raise SystemExit(main())
