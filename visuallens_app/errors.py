"""Errors a user can cause. Each carries one sentence that the CLI and GUI show as it is."""

from __future__ import annotations


class VisualLensError(Exception):
    """Base of every error that is the user's to fix; ``str(err)`` is the message to show."""


class ModelUnavailableError(VisualLensError):
    """A model's weights are not on this machine and cannot be fetched."""


class LibraryError(VisualLensError):
    """The photo library cannot be opened or written (bad path, disk full, locked)."""


class CatalogError(VisualLensError):
    """A catalog folder is missing or has no usable items."""


class NotEnoughHistoryError(VisualLensError):
    """Too few indexed photos to do what was asked."""


class SettingsError(VisualLensError):
    """The settings file cannot be written (read-only or full disk, no permission)."""


class Cancelled(Exception):  # noqa: N818 - it is an outcome, not a failure
    """Raised inside a long job when its CancelToken was cancelled."""


def user_message(err: BaseException) -> str | None:
    """The one sentence for an error a user can cause, or None when it is a bug to log.

    The CLI and the GUI both show this, so a locked library or a full disk reads the same in
    the terminal and in the window's banner.
    """
    import errno
    import sqlite3

    if isinstance(err, VisualLensError):
        return str(err)
    if isinstance(err, MemoryError):
        return "Not enough memory to finish; close other programs and try again."
    if isinstance(err, sqlite3.DatabaseError) and is_damaged_database(err):
        return damaged_library_sentence()
    if isinstance(err, sqlite3.OperationalError):
        text = str(err).lower()
        if "full" in text:
            return "The disk holding the library is full: free some space and try again."
        if "locked" in text or "busy" in text:
            return "The library is busy in another program (the app?): try again in a moment."
        if "readonly" in text or "disk i/o" in text:
            return f"The library cannot be written ({err}): check the disk and the library folder."
        return None
    if isinstance(err, OSError) and err.errno is not None:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"The disk is full{where}: free some space and try again."
        if err.errno == errno.EROFS:
            return f"The disk is read-only{where}: choose a folder you can write to."
        if err.errno in (errno.EACCES, errno.EPERM):
            return f"Permission denied{where}: choose a folder you can write to."
        if err.errno == errno.ENOENT:
            return f"A file or folder is missing{where}: check that the drive is connected."
        return f"{err.strerror or err}{where}."
    return None


def first_sentence(err: BaseException) -> str:
    """The first sentence of a library's error message, so ours stays one sentence."""
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(err).__name__


def is_damaged_database(err: BaseException) -> bool:
    """Whether a SQLite error says the database file itself is damaged."""
    text = str(err).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def damaged_library_sentence(path: object = None, evidence: str = "") -> str:
    """What to say when SQLite finds the library's database damaged, and how to recover.

    ``evidence`` is what SQLite's own integrity check found, when it was run (a short clause).
    """
    where = "; ".join(str(x) for x in (path, evidence) if x)
    where = f" ({where})" if where else ""
    return (
        f"The library's database is damaged{where}; your photos are untouched: recover it with "
        "`sqlite3 library.sqlite .recover | sqlite3 recovered.sqlite` and put the result in its "
        "place, or move it aside and index your folders again."
    )
