"""The boundaries the design depends on, checked mechanically."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_importing_the_cli_does_not_load_torch_or_qt() -> None:
    loaded = _run(
        "import sys, visuallens_app.cli, visuallens_app.cli.library, visuallens_app.cli.lens;"
        "visuallens_app.cli.build_parser();"
        "print(sorted(m for m in ('torch', 'open_clip', 'transformers', 'faiss', 'PySide6')"
        " if m in sys.modules))"
    )
    assert loaded == "[]"


def test_help_explains_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "visuallens_app.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("index", "search", "similar", "status", "recommend"):
        assert command in out
