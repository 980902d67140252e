"""Qt's xcb plugin has every system library it needs, and the window opens on a real X screen.

`make test` runs `python -m visuallens_app.gui.system_libs --install` first (CI runs as root and
installs them); this test then cannot pass while one is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from visuallens_app.gui import system_libs

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /x/Qt/lib/libQt6XcbQpa.so.6 (0x00007f)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-cursor.so.0 => not found
\tlibweird.so.9 => not found
"""


def test_missing_libraries_are_named_with_their_packages() -> None:
    missing = system_libs.missing_from_ldd(LDD_OUTPUT)
    assert missing == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libweird.so.9"]
    packages, unknown = system_libs.packages_for(missing)
    assert packages == ["libxcb-cursor0", "libxcb-icccm4"]
    assert unknown == ["libweird.so.9"]


@pytest.mark.skipif(system_libs.xcb_plugin() is None, reason="no xcb plugin on this platform")
def test_the_xcb_plugin_finds_every_library_it_links() -> None:
    assert system_libs.missing_libraries() == []
    assert system_libs.main([]) == 0


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="no Xvfb here")
def test_the_window_opens_with_the_xcb_plugin_under_xvfb() -> None:
    script = (
        "import sys; from PySide6.QtCore import QTimer; "
        "from PySide6.QtWidgets import QApplication, QLabel; "
        "app = QApplication(sys.argv); w = QLabel('VisualLens'); w.show(); "
        "QTimer.singleShot(1500, app.quit); sys.exit(app.exec())"
    )
    result = subprocess.run(
        ["xvfb-run", "-a", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"QT_QPA_PLATFORM": "xcb", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
