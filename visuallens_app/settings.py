"""Typed user settings, persisted as JSON in the user config dir (platformdirs), versioned.

Environment overrides, for scripts and tests: ``VISUALLENS_LIBRARY`` (library dir),
``VISUALLENS_CONFIG_DIR`` (where settings.json lives), ``VISUALLENS_CACHE_DIR`` (model caches).

A settings file is a person's to edit, and an older or newer app may read it, so ``load`` never
trusts it: every value is checked against its field's declared type and range, an invalid one falls
back to its default with a warning sentence (``Settings.warnings``, and the log) while the file
is kept as ``settings.json.bad``; keys this version does not know are kept and written back;
older files are migrated by ``schema_version``. GUI state (window geometry) lives in QSettings.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from visuallens_app.errors import SettingsError

APP_NAME = "VisualLens"
#: The version of the settings file this app writes; see MIGRATIONS for what changed.
SCHEMA_VERSION = 3

log = logging.getLogger(__name__)

#: What the one vision-language model setting serves; each may be given its own model.
VLM_FEATURES = ("captions", "rerank", "tldr", "steering")


def config_dir() -> Path:
    env = os.environ.get("VISUALLENS_CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    env = os.environ.get("VISUALLENS_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def library_override() -> Path | None:
    """The library the environment names (``VISUALLENS_LIBRARY``; ``visuallens-app --library``
    sets it), which is opened instead of the one the settings name; None when unset."""
    env = os.environ.get("VISUALLENS_LIBRARY")
    return Path(env) if env else None


def platform_library_dir() -> Path:
    """The user data dir: the library when neither the settings nor the environment name one."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def same_library(a: Path | str, b: Path | str) -> bool:
    """Whether two spellings of a library folder name the same folder (``~``, relative paths and
    symlinks followed, so ``--library ~/lib`` and ``/home/me/lib`` agree)."""

    def spelled(path: Path | str) -> str:
        return os.path.normcase(os.path.realpath(os.path.expanduser(os.fspath(path))))

    return spelled(a) == spelled(b)


def resources_dir() -> Path:
    """The shipped data (aspect vocabulary, default catalog), next to the package in a checkout."""
    here = Path(__file__).resolve().parent
    bundle = getattr(sys, "_MEIPASS", None)  # a PyInstaller bundle unpacks data there
    candidates = [Path(bundle) / "resources"] if bundle else []
    for candidate in (*candidates, here / "resources", here.parent / "resources"):
        if candidate.is_dir():
            return candidate
    return here.parent / "resources"


class _FromFile:
    """What ``load`` learned about the file: kept beside the settings, never saved as settings."""

    # Slots on a base class, so that the dataclass keeps its own slots (a mistyped attribute
    # still fails) while these stay out of fields(), asdict() and the saved file.
    __slots__ = ("_unknown", "legacy_window_geometry", "warnings")

    #: One sentence per problem found on load (invalid value, newer file...), for the user.
    warnings: tuple[str, ...]
    #: ``window_geometry`` from a version 1 file, for the GUI to move into QSettings once.
    legacy_window_geometry: str
    _unknown: dict[str, Any]

    def __post_init__(self) -> None:
        self._found(warnings=(), legacy_window_geometry="", unknown={})

    def _found(
        self, *, warnings: tuple[str, ...], legacy_window_geometry: str, unknown: dict[str, Any]
    ) -> None:
        self.warnings = warnings
        self.legacy_window_geometry = legacy_window_geometry
        self._unknown = unknown


@dataclass(slots=True)
class Settings(_FromFile):
    """What a user can change in the Settings view.

    Each field's declared type is its schema (str, int, float, bool, list[str], dict[str, str]);
    ``metadata={"min": ..., "max": ...}`` bounds a number.
    """

    photo_folders: list[str] = field(default_factory=list)
    library_dir: str = ""  # empty: the platform default
    encoder: str = "auto"  # auto | embedded | clip[:ARCH[/PRETRAINED]] | path to a checkpoint
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    # w: history photos kept per category; the bounds are the Settings view's.
    retrieval_size: int = field(default=64, metadata={"min": 8, "max": 1024})
    catalog_dir: str = ""  # empty: the shipped default catalog
    vlm: str = ""  # the vision-language model: a folder or a cached Hub name; empty: none
    # Per-feature choices over ``vlm``: keys in VLM_FEATURES, values a folder or Hub name.
    vlm_overrides: dict[str, str] = field(default_factory=dict)
    # Where photo vectors are searched: faiss (in the library) | http(s)://HOST:PORT (a Qdrant
    # server) | local:DIR (Qdrant in-process). A new field with a default: no schema change.
    vector_store: str = field(default="faiss", metadata={"check": "vector_store"})
    schema_version: int = SCHEMA_VERSION

    def vlm_for(self, feature: str) -> str:
        """The vision-language model ``feature`` (one of VLM_FEATURES) uses; empty: none."""
        if feature not in VLM_FEATURES:
            raise ValueError(f"unknown VLM feature {feature!r}; one of {', '.join(VLM_FEATURES)}")
        chosen = self.vlm_overrides.get(feature, "").strip()
        return chosen or self.vlm.strip()

    @property
    def apps_library(self) -> Path:
        """The library these settings name (``library_dir``, else the user data dir), whatever
        the environment says: the one whose folders are ``photo_folders``."""
        return Path(self.library_dir) if self.library_dir else platform_library_dir()

    @property
    def library_path(self) -> Path:
        """The library to open: ``VISUALLENS_LIBRARY`` when set, else the settings' own."""
        return library_override() or self.apps_library

    def is_apps_library(self, directory: Path | str) -> bool:
        """Whether ``directory`` is the library these settings name.

        Only that library's folders are ``photo_folders``: a library opened with ``--library``
        or ``VISUALLENS_LIBRARY`` keeps its folders to itself (its ``roots`` table), so the CLI
        never adds them to the settings and the window lists that library's own.
        """
        return same_library(directory, self.apps_library)

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """The settings in ``path`` (default: the config dir), checked; never raises for content.

        A missing file gives the defaults. A file that cannot be used whole (not JSON, not an
        object) gives the defaults, one warning, and a ``.bad`` copy; a single invalid value falls
        back to its default the same way while the other values load.
        """
        path = path or config_dir() / "settings.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except OSError as err:
            return cls._defaults_because(
                f"The settings file {path} cannot be read ({err.strerror or err}); "
                "using the default settings."
            )
        except ValueError as err:  # not JSON, or not UTF-8
            kept = _keep_bad_copy(path)
            return cls._defaults_because(
                f"The settings file {path} is not valid JSON ({err}); using the default "
                f"settings{kept}."
            )
        if not isinstance(raw, dict):
            kept = _keep_bad_copy(path)
            return cls._defaults_because(
                f"The settings file {path} holds {_json_kind(raw)}, not an object of settings; "
                f"using the default settings{kept}."
            )
        return cls._from_dict(raw, path)

    @classmethod
    def _defaults_because(cls, warning: str) -> Settings:
        settings = cls()
        settings._found(warnings=(warning,), legacy_window_geometry="", unknown={})
        _log_once(warning)
        return settings

    @classmethod
    def _from_dict(cls, raw: dict[str, Any], path: Path) -> Settings:
        warnings: list[str] = []
        invalid: list[tuple[str, str]] = []  # (field, why), worded once we know about the copy
        version = raw.get("schema_version", 1)  # version 1 did not always write it
        if not _is_int(version) or version < 1:
            invalid.append(
                ("schema_version", f"is {_show(version)}, not a version number; reading it as 1")
            )
            version = 1
        data = dict(raw)
        for step in range(version, SCHEMA_VERSION):
            data = MIGRATIONS[step](data)
        if version > SCHEMA_VERSION:
            warnings.append(
                f"{path.name} was written by a newer VisualLens (settings version {version}, this "
                f"one knows {SCHEMA_VERSION}); the settings it does not know are kept as they are."
            )
        legacy_geometry = data.pop(LEGACY_WINDOW_GEOMETRY, "")

        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name == "schema_version" or f.name not in data:
                continue
            value, problem = _validate(data.pop(f.name), hints[f.name], f)
            if problem is None:
                values[f.name] = value
            else:
                invalid.append((f.name, problem))
                if value is not MISSING:  # a list or mapping with some bad items keeps the rest
                    values[f.name] = value
        data.pop("schema_version", None)

        kept = _keep_bad_copy(path) if invalid else ""
        defaults = cls()
        for name, problem in invalid:
            said = f"The setting {name} in {path.name} {problem}"
            if name in values or name == "schema_version":
                warnings.append(f"{said}{kept}.")
            else:
                default = getattr(defaults, name)
                shown = f", {_show(default)}" if default not in ("", [], {}) else " (empty)"
                warnings.append(f"{said}; using the default{shown}{kept}.")

        settings = cls(**values, schema_version=max(version, SCHEMA_VERSION))
        settings._found(
            warnings=tuple(warnings),
            legacy_window_geometry=legacy_geometry if isinstance(legacy_geometry, str) else "",
            unknown=data,
        )
        for warning in warnings:
            _log_once(warning)
        return settings

    def save(self, path: Path | None = None) -> None:
        """Write atomically (a crash never leaves half a file), keeping keys this version lacks.

        Raises SettingsError, with the sentence to show, when the file cannot be written.
        """
        path = path or config_dir() / "settings.json"
        data = json.dumps({**self._unknown, **asdict(self)}, indent=2, sort_keys=True)
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


# -- migrations ---------------------------------------------------------------------------------
#: Where the 1 -> 2 migration hands the old window geometry to ``Settings.legacy_window_geometry``.
LEGACY_WINDOW_GEOMETRY = "legacy_window_geometry"


def _move_window_geometry_out(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2: window geometry is GUI state, kept in QSettings; the GUI moves it there once."""
    data = dict(data)
    if "window_geometry" in data:
        data[LEGACY_WINDOW_GEOMETRY] = data.pop("window_geometry")
    data["schema_version"] = 2
    return data


def _captioner_to_vlm(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3: one vision-language model setting; the old captions folder becomes the
    captions feature's own choice, so captions keep coming from the same model."""
    data = dict(data)
    folder = data.pop("captioner_dir", "")
    overrides = data.get("vlm_overrides")
    overrides = dict(overrides) if isinstance(overrides, dict) else {}
    if isinstance(folder, str) and folder.strip() and not overrides.get("captions"):
        overrides["captions"] = folder.strip()
    if overrides:
        data["vlm_overrides"] = overrides
    data["schema_version"] = 3
    return data


#: Version N -> the function that turns a version N file's dict into version N + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _move_window_geometry_out,
    2: _captioner_to_vlm,
}


# -- validation ---------------------------------------------------------------------------------
_KIND_WORDS: dict[type, str] = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
}


def _validate(value: Any, kind: Any, spec: Field[Any]) -> tuple[Any, str | None]:
    """(value, None) when ``value`` fits ``kind``; else (usable part or MISSING, why not)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and args == (str,):
        if isinstance(value, str):  # a hand edit writes one folder without the brackets
            return [value], None
        if not isinstance(value, list):
            return MISSING, f"is {_show(value)}, not a list of text"
        good = [item for item in value if isinstance(item, str)]
        if len(good) == len(value):
            return good, None
        bad = ", ".join(_show(item) for item in value if not isinstance(item, str))
        return good, f"has items that are not text ({bad}); they are left out"
    if origin is dict and args == (str, str):
        if not isinstance(value, dict):
            return MISSING, f"is {_show(value)}, not an object of text values"
        good_map = {k: v for k, v in value.items() if isinstance(v, str)}
        if len(good_map) == len(value):
            return good_map, None
        bad = ", ".join(k for k, v in value.items() if not isinstance(v, str))
        return good_map, f"has values that are not text (for {bad}); they are left out"
    if kind not in _KIND_WORDS:
        raise TypeError(f"Settings.{spec.name}: no validator for the type {kind!r}")
    fits = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: _is_int(value),
        float: _is_int(value) or (isinstance(value, float) and math.isfinite(value)),
    }[kind]
    if not fits:
        return MISSING, f"is {_show(value)}, not {_KIND_WORDS[kind]}"
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if low is not None and value < low:
        return MISSING, f"is {_show(value)}, below the least allowed, {low}"
    if high is not None and value > high:
        return MISSING, f"is {_show(value)}, above the most allowed, {high}"
    check = _CHECKS.get(spec.metadata.get("check", ""))
    problem = check(value) if check is not None else None
    if problem is not None:
        return MISSING, problem
    return (float(value) if kind is float else value), None


def _check_vector_store(value: str) -> str | None:
    from visuallens_app.index.stores import SPEC_HELP, check_spec

    if check_spec(value) is None:
        return None
    return f"is {_show(value)}, not {SPEC_HELP.replace(' (default)', '')}"


#: Checks beyond type and range, by the name a field's ``metadata["check"]`` gives.
_CHECKS: dict[str, Callable[[Any], str | None]] = {"vector_store": _check_vector_store}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a number


def _show(value: Any) -> str:
    """A value as the user wrote it in the file, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "true or false" if isinstance(value, bool) else "a number"


def _keep_bad_copy(path: Path) -> str:
    """Copy the user's file to ``settings.json.bad`` before a save could overwrite it.

    Returns the clause that tells the user, or "" when the copy could not be made.
    """
    bad = path.with_name(path.name + ".bad")
    try:
        shutil.copyfile(path, bad)
    except OSError:
        return ""
    return f"; the file is kept as {bad}"


_logged: set[str] = set()


def _log_once(warning: str) -> None:
    """Log a warning once per process: the CLI loads the settings several times per command."""
    if warning not in _logged:
        _logged.add(warning)
        log.warning(warning)


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
