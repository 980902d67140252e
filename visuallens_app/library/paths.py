"""File paths as SQLite text, reversibly, including names that are not valid UTF-8.

POSIX file names are bytes; Python hands undecodable bytes over as lone surrogates, which SQLite
(UTF-8) cannot store. Such names are kept as ``fsb64:<base64 of the raw bytes>`` so the exact file
can be found again; every valid name is stored as itself, readable in the database.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

_RAW_PREFIX = "fsb64:"


def path_to_db(path: Path | str) -> str:
    text = os.fspath(path)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _RAW_PREFIX + base64.b64encode(os.fsencode(text)).decode("ascii")
    return text


def path_from_db(text: str) -> Path:
    if text.startswith(_RAW_PREFIX):
        return Path(os.fsdecode(base64.b64decode(text[len(_RAW_PREFIX) :])))
    return Path(text)


def display_path(path: Path | str) -> str:
    """A printable form: undecodable bytes shown as \\xNN escapes."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def normalise_root(path: Path | str) -> Path:
    """The one spelling of a photo folder used everywhere (store, settings, GUI, lookups).

    Absolute with ``~`` expanded, but symlinks kept: ``resolve()`` would turn a symlinked
    ``~/Pictures`` into a second, different folder and index every photo twice.
    """
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
