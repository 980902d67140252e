"""Throwaway virtual environments for benchmarks that need packages the app does not ship.

``layered_venv`` sees this environment's packages (torch, open_clip) plus a few extra ones
(onnx, onnxruntime), so nothing is added to the app's own install; ``isolated_venv`` is a clean
one for a peer tool (rclip) with its own pinned dependencies. Both are cached under the system
temp dir by name and reused while their packages are there.
"""

from __future__ import annotations

import site
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(tempfile.gettempdir()) / "visuallens-bench-venvs"


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _has(python: Path, modules: list[str]) -> bool:
    probe = "import " + ", ".join(modules)
    return (
        subprocess.run([str(python), "-c", probe], capture_output=True, check=False).returncode == 0
    )


def layered_venv(name: str, packages: list[str], modules: list[str]) -> Path:
    """A venv over this interpreter's site-packages with ``packages`` added; returns its python."""
    env = ROOT / name
    python = _python(env)
    if python.exists() and _has(python, modules):
        return python
    venv.create(env, with_pip=True, clear=True)
    own = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A .pth line puts this environment's packages after the venv's own: torch is shared, the
    # extra packages shadow nothing of the app's.
    (Path(own) / "visuallens-base.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    print(f"Installing {' '.join(packages)} into {env} ...", file=sys.stderr)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def isolated_venv(name: str, packages: list[str], probe: list[str]) -> Path:
    """A clean venv with ``packages`` (and their own dependencies); returns its python."""
    env = ROOT / name
    python = _python(env)
    if python.exists() and _has(python, probe):
        return python
    venv.create(env, with_pip=True, clear=True)
    print(f"Installing {' '.join(packages)} into {env} ...", file=sys.stderr)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python
