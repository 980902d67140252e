"""Typed user settings, persisted as JSON in the user config dir (platformdirs), versioned.

Environment overrides, for scripts and tests: ``VISUALLENS_LIBRARY`` (library dir),
``VISUALLENS_CONFIG_DIR`` (where settings.json lives), ``VISUALLENS_CACHE_DIR`` (model caches).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from visuallens_app.errors import SettingsError

APP_NAME = "VisualLens"
SCHEMA_VERSION = 1


def config_dir() -> Path:
    env = os.environ.get("VISUALLENS_CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    env = os.environ.get("VISUALLENS_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def default_library_dir() -> Path:
    env = os.environ.get("VISUALLENS_LIBRARY")
    return Path(env) if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resources_dir() -> Path:
    """The shipped data (aspect vocabulary, default catalog), next to the package in a checkout."""
    here = Path(__file__).resolve().parent
    bundle = getattr(sys, "_MEIPASS", None)  # a PyInstaller bundle unpacks data there
    candidates = [Path(bundle) / "resources"] if bundle else []
    for candidate in (*candidates, here / "resources", here.parent / "resources"):
        if candidate.is_dir():
            return candidate
    return here.parent / "resources"


@dataclass(slots=True)
class Settings:
    """What a user can change in the Settings view; unknown keys in the file are ignored."""

    photo_folders: list[str] = field(default_factory=list)
    library_dir: str = ""  # empty: the platform default
    encoder: str = "auto"  # auto | embedded | clip[:ARCH[/PRETRAINED]] | path to a checkpoint
    device: str = "auto"  # auto | cpu | cuda | mps
    retrieval_size: int = 64  # w: history photos kept per category
    catalog_dir: str = ""  # empty: the shipped default catalog
    captioner_dir: str = ""  # a local Hugging Face captioning model folder; empty: no captions
    window_geometry: str = ""  # base64 of QWidget.saveGeometry(), written by the GUI
    schema_version: int = SCHEMA_VERSION

    @property
    def library_path(self) -> Path:
        return Path(self.library_dir) if self.library_dir else default_library_dir()

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        path = path or config_dir() / "settings.json"
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError):
            # Keep the user's hand-edited file: the next save would overwrite it with defaults.
            with contextlib.suppress(OSError):
                shutil.copyfile(path, path.with_suffix(".json.bad"))
            return cls()
        if not isinstance(raw, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known and k != "schema_version"}
        try:
            return cls(**values)
        except TypeError:
            return cls()

    def save(self, path: Path | None = None) -> None:
        """Write atomically (a crash never leaves half a file).

        Raises SettingsError, with the sentence to show, when the file cannot be written.
        """
        path = path or config_dir() / "settings.json"
        data = json.dumps(asdict(self), indent=2, sort_keys=True)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as err:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise SettingsError(_cannot_save(path, err)) from err


def _cannot_save(path: Path, err: OSError) -> str:
    folder = path.parent
    if err.errno in (errno.EACCES, errno.EPERM):
        return (
            f"The settings cannot be saved: the folder {folder} is not writable (permission "
            "denied); check its permissions or set VISUALLENS_CONFIG_DIR to a folder you own."
        )
    if err.errno == errno.EROFS:
        return (
            f"The settings cannot be saved: {folder} is on a read-only disk; set "
            "VISUALLENS_CONFIG_DIR to a folder you can write to."
        )
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"The settings cannot be saved: the disk holding {folder} is full."
    return f"The settings cannot be saved to {path} ({err.strerror or err})."
