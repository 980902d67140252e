"""The system libraries Qt's xcb platform plugin needs on Linux, checked before the window opens.

PySide6's wheels bring Qt itself but not the X11 client libraries its ``xcb`` plugin links to; on a
clean Debian or Ubuntu the app then aborts with "Could not load the Qt platform plugin xcb",
naming ``libxcb-cursor0`` at best and never ``libxcb-icccm4`` or ``libxcb-keysyms1``.
``python -m visuallens_app.gui.system_libs`` runs ``ldd`` on the plugin, names every missing
library and the Debian package that provides it, and with ``--install`` installs them with
``apt-get`` (as root, or through ``sudo -n``); otherwise it prints the one command to run.
``make run`` calls it first; ``make test`` also passes ``--xvfb`` (Xvfb, for the test that opens
a window through the xcb plugin). Nothing here imports Qt's GUI modules (only PySide6's location).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Library file -> the Debian/Ubuntu package that ships it.
DEBIAN_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
}


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin, or None (not Linux, or a PySide6 without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import PySide6
    except ImportError:
        return None
    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def missing_from_ldd(output: str) -> list[str]:
    """The library names ``ldd`` reported as "not found", in order, without repeats."""
    missing: list[str] = []
    for line in output.splitlines():
        name, _, where = line.strip().partition("=>")
        if "not found" in where and name.strip() not in missing:
            missing.append(name.strip())
    return missing


def missing_libraries(plugin: Path | None = None) -> list[str]:
    """Libraries the xcb plugin needs that this system lacks (empty when all are there)."""
    plugin = plugin or xcb_plugin()
    if plugin is None or shutil.which("ldd") is None:
        return []
    result = subprocess.run(
        ["ldd", str(plugin)], capture_output=True, text=True, check=False, timeout=30
    )
    return missing_from_ldd(result.stdout)


def packages_for(libraries: list[str]) -> tuple[list[str], list[str]]:
    """(Debian packages that provide ``libraries``, libraries no known package provides)."""
    packages = [DEBIAN_PACKAGES[lib] for lib in libraries if lib in DEBIAN_PACKAGES]
    unknown = [lib for lib in libraries if lib not in DEBIAN_PACKAGES]
    return list(dict.fromkeys(packages)), unknown


def _installer() -> list[str] | None:
    """How to run apt-get here without asking for a password, or None."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return ["apt-get"]
    if shutil.which("sudo") is not None:
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["sudo", "-n", "apt-get"]
    return None


def install(packages: list[str]) -> bool:
    """Install ``packages`` with apt-get (updating the package lists once if needed)."""
    runner = _installer()
    if runner is None or not packages:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [*runner, "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(command, env=env, check=False).returncode == 0:
        return True
    subprocess.run([*runner, "update", "-q"], env=env, check=False)
    return subprocess.run(command, env=env, check=False).returncode == 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the window can open (after installing with ``--install``), else 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    wants_xvfb = "--xvfb" in args and shutil.which("xvfb-run") is None
    # Only the tests need a virtual X screen (the xcb window test); never fatal.
    if wants_xvfb and _installer() is not None and not install(["xvfb", "xauth"]):
        print("Could not install Xvfb; the test of the xcb window is skipped.", file=sys.stderr)
    missing = missing_libraries()
    if not missing:
        return 0
    packages, unknown = packages_for(missing)
    if "--install" in args and packages and install(packages):
        missing = missing_libraries()
        if not missing:
            print(f"Installed {' '.join(packages)} for Qt's window system plugin.")
            return 0
        packages, unknown = packages_for(missing)
    print(
        "The window cannot open: Qt's xcb plugin needs "
        + ", ".join(missing)
        + (f"; install them with: sudo apt-get install {' '.join(packages)}" if packages else "")
        + (f" (and the packages providing {', '.join(unknown)})" if unknown else "")
        + ".",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
