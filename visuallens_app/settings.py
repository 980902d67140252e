"""Typed user settings, persisted as JSON in the user config dir (platformdirs), versioned.

Environment overrides, for scripts and tests: ``VISUALLENS_LIBRARY`` (library dir),
``VISUALLENS_CONFIG_DIR`` (where settings.json lives), ``VISUALLENS_CACHE_DIR`` (model caches).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

APP_NAME = "VisualLens"
SCHEMA_VERSION = 1

#: What the one vision-language model setting serves; each may be given its own model.
VLM_FEATURES = ("captions", "rerank", "tldr", "steering")


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
    captioner_dir: str = ""  # legacy (before the shared VLM): the captions model folder
    vlm: str = ""  # the vision-language model: a folder or a cached Hub name; empty: none
    # Per-feature choices over ``vlm``: keys in VLM_FEATURES, values a folder or Hub name.
    vlm_overrides: dict[str, str] = field(default_factory=dict)
    window_geometry: str = ""  # base64 of QWidget.saveGeometry(), written by the GUI
    schema_version: int = SCHEMA_VERSION

    def vlm_for(self, feature: str) -> str:
        """The vision-language model ``feature`` (one of VLM_FEATURES) uses; empty: none."""
        if feature not in VLM_FEATURES:
            raise ValueError(f"unknown VLM feature {feature!r}; one of {', '.join(VLM_FEATURES)}")
        chosen = self.vlm_overrides.get(feature, "").strip()
        if not chosen and feature == "captions":
            chosen = self.captioner_dir.strip()
        return chosen or self.vlm.strip()

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
        """Write atomically, so a crash never leaves a half-written settings file."""
        path = path or config_dir() / "settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(asdict(self), indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
