"""``python -m visuallens_app`` starts the desktop app (the CLI is ``visuallens``)."""

from __future__ import annotations

import sys


def main() -> int:
    from visuallens_app.gui.app import main as gui_main

    return int(gui_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
