"""Find the photos under the folders a user chose: a fast, loop-proof, resumable directory walk.

The walk is the first step of every (re-)index, and on a re-index almost every file is unchanged,
so its cost is the cost of the whole job: one ``os.scandir`` per folder and one ``stat`` per
image file (``DirEntry.stat()``, free on Windows, one syscall elsewhere), nothing more.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import NamedTuple

from visuallens_app.jobs import CancelToken

#: File name endings (lower case) of the formats :mod:`visuallens_app.library.decode` reads.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".gif",
        ".heic",
        ".heif",
    }
)

#: Folders and files that operating systems, NAS boxes and photo tools create next to photos.
#: Their images are thumbnails or deleted files, never the user's photos. Compared case-folded.
SYSTEM_NAMES: frozenset[str] = frozenset(
    name.casefold()
    for name in (
        "@eaDir",  # Synology thumbnails
        "#recycle",  # Synology recycle bin
        "#snapshot",
        "$RECYCLE.BIN",
        "RECYCLER",
        "System Volume Information",
        "lost+found",
        "__MACOSX",  # resource forks unpacked from zip files
        ".Trashes",
        ".Trash",
        ".Spotlight-V100",
        ".fseventsd",
        ".DocumentRevisions-V100",
        ".TemporaryItems",
        ".thumbnails",
        ".thumb",
        ".picasaoriginals",
        "Thumbs.db",
        "desktop.ini",
        ".DS_Store",
    )
)

#: How many directory entries pass between two ``cancel.check()`` calls.
CANCEL_EVERY = 256

_IS_WINDOWS = sys.platform == "win32"
_HIDDEN_OR_SYSTEM = getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 2) | getattr(
    stat, "FILE_ATTRIBUTE_SYSTEM", 4
)

#: Called with a path the walk had to skip and a one-line reason, for the caller to log.
OnError = Callable[[Path, str], None]


class ScannedFile(NamedTuple):
    """An image file found by :func:`scan_folders`: where it is and what tells a change.

    A named tuple holding the path as the string ``os.scandir`` produced: a re-scan builds one
    per file and mostly discards it (the file is unchanged), so neither a ``Path`` nor a frozen
    dataclass instance is paid for until someone asks for :attr:`path`.
    """

    fspath: str
    root: Path  # the scanned root it was found under, as given by the caller
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return Path(self.fspath)


def _is_hidden_on_windows(entry: os.DirEntry[str]) -> bool:
    """Windows marks hidden and system items with attributes, not names (free in DirEntry.stat)."""
    try:
        attributes: int = entry.stat(follow_symlinks=False).st_file_attributes  # type: ignore[attr-defined,unused-ignore]
    except OSError:
        return False
    return bool(attributes & _HIDDEN_OR_SYSTEM)


def _describe(error: OSError) -> str:
    """One line for a log: the reason only, since the caller already has the path."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "vanished during the scan"
    if isinstance(error, NotADirectoryError):
        return "not a folder"
    return error.strerror or type(error).__name__


def _dir_key(entry_or_path: os.DirEntry[str] | str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of a directory, following symlinks; None if it cannot be stat'ed."""
    try:
        if isinstance(entry_or_path, str):
            st = os.stat(entry_or_path)
        else:
            st = entry_or_path.stat()
            if st.st_ino == 0:  # Windows DirEntry.stat() leaves st_ino empty
                st = os.stat(entry_or_path.path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def scan_folders(
    roots: Sequence[Path],
    *,
    cancel: CancelToken | None = None,
    on_error: OnError | None = None,
    on_special: OnError | None = None,
    unchanged: Mapping[str, tuple[int, int, int]] | None = None,
    matched: set[str] | None = None,
) -> Iterator[ScannedFile]:
    """Yield every image file under ``roots``, recursively, in a deterministic order.

    Per folder, image files come first in name order, then sub-folders in name order, so two
    scans of an unchanged tree yield the same sequence (an interrupted index can resume).
    Hidden items, system folders (:data:`SYSTEM_NAMES`) and files whose suffix is not in
    :data:`IMAGE_SUFFIXES` are skipped silently. Directory symlinks are followed, but each
    directory is entered at most once (by ``(st_dev, st_ino)``), which stops symlink loops and
    also means overlapping roots yield each file once, under the root that reached it first.
    Names that are not valid UTF-8 come through as Python's surrogate-escaped ``str`` paths.

    Parameters
    ----------
    roots
        Folders to walk. A missing root is reported through ``on_error`` and skipped; see
        :func:`missing_roots` to tell an unplugged drive from an emptied folder.
    cancel
        Checked every :data:`CANCEL_EVERY` entries; raises ``Cancelled`` (pausing blocks).
    on_error
        Called with ``(path, reason)`` for what had to be skipped although it may hold photos:
        unreadable folders, dangling symlinks with an image suffix, files that vanished
        mid-scan. The scan itself never stops for these.
    on_special
        Called with ``(path, reason)`` for an item named like a photo that is no file at all:
        a named pipe, a device or a socket, or a symlink to one. Never read (a pipe would block,
        /dev/zero never ends); defaults to ``on_error``.
    unchanged, matched
        A re-scan's shortcut: a file whose path maps in ``unchanged`` to ``(size, mtime_ns, 1)``
        (as ``PhotoStore.known_files`` says) is added to ``matched`` instead of being yielded.
        Done here, in the one loop over every file, it is a fifth of a re-scan's own time.
    """
    report: OnError = on_error if on_error is not None else _ignore
    special: OnError = on_special if on_special is not None else report
    visited: set[tuple[int, int]] = set()
    by_name = attrgetter("name")
    # tuple.__new__ skips the NamedTuple's Python-level __new__: a tenth of a re-scan's own time.
    new_file = tuple.__new__
    suffixes = IMAGE_SUFFIXES
    countdown = CANCEL_EVERY
    known_get = (unchanged or {}).get
    matched_add = matched.add if matched is not None else None

    for root in roots:
        root_key = _dir_key(os.fspath(root))
        if root_key is None:
            report(root, "folder not found or not mounted")
            continue
        if root_key in visited:
            continue
        visited.add(root_key)
        # LIFO of folders still to list; sub-folders are pushed in reverse name order so that
        # they pop in name order.
        pending: list[Path] = [root]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as listing:
                    # Not sorted here: only what is yielded and the sub-folders need name order,
                    # and on a re-scan that is a few files (sorting every entry cost a tenth).
                    entries = list(listing)
            except OSError as error:
                report(folder, _describe(error))
                continue
            found: list[ScannedFile] = []
            subdirs: list[os.DirEntry[str]] = []
            said: list[tuple[str, OnError, Path, str]] = []  # told in name order, below
            for entry in entries:
                countdown -= 1
                if countdown <= 0:
                    countdown = CANCEL_EVERY
                    if cancel is not None:
                        cancel.check()
                name = entry.name
                if name[0] == "." or (_IS_WINDOWS and _is_hidden_on_windows(entry)):
                    continue
                dot = name.rfind(".")
                is_image_name = dot > 0 and name[dot:].lower() in suffixes
                try:
                    # d_type answers is_file/is_dir without a syscall unless it is a symlink.
                    if entry.is_file():
                        # No system name ends in an image suffix, so that check is for folders.
                        if is_image_name:
                            st = entry.stat()
                            path = entry.path
                            if matched_add is not None:
                                old = known_get(path)
                                if (
                                    old is not None
                                    and old[0] == st.st_size
                                    and old[1] == st.st_mtime_ns
                                    and old[2]
                                ):
                                    matched_add(path)
                                    continue
                            found.append(
                                new_file(ScannedFile, (path, root, st.st_size, st.st_mtime_ns))
                            )
                    elif entry.is_dir():
                        if name.casefold() not in SYSTEM_NAMES:
                            subdirs.append(entry)
                    elif is_image_name:
                        # Named like a photo, neither file nor folder: a link to nothing, or
                        # (through a link or not) a pipe, device or socket.
                        path = entry.path
                        try:
                            mode = os.stat(path).st_mode
                        except FileNotFoundError:
                            said.append((name, report, Path(path), "dangling symlink"))
                        else:
                            said.append((name, special, Path(path), not_a_regular_file(mode)))
                except OSError as error:
                    said.append((name, report, Path(entry.path), _describe(error)))
            if said:
                said.sort(key=itemgetter(0))
                for _name, tell, path_said, why in said:
                    tell(path_said, why)
            if found:
                found.sort()  # by path: name order, as every entry shares this folder
                for n, item in enumerate(found, 1):
                    yield item
                    if cancel is not None and n % CANCEL_EVERY == 0:
                        cancel.check()  # the consumer may cancel while a big folder drains
            subdirs.sort(key=by_name)
            subfolders: list[Path] = []
            for entry in subdirs:  # in name order, so the first way into a folder wins
                key = _dir_key(entry)
                if key is None or key in visited:
                    continue  # a loop, or a second way into a folder already walked
                visited.add(key)
                subfolders.append(Path(entry.path))
            pending.extend(reversed(subfolders))


def not_a_regular_file(mode: int) -> str:
    """The reason given for a named pipe, device or socket found where a photo was expected."""
    if stat.S_ISFIFO(mode):
        kind = "a named pipe"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "neither a file nor a folder"
    return f"not a regular file ({kind})"


def _ignore(path: Path, reason: str) -> None:
    """Default ``on_error``: skipped items are simply not yielded."""


def missing_roots(roots: Sequence[Path]) -> list[Path]:
    """Roots that do not exist or are not folders right now (e.g. an unplugged drive).

    The caller marks photos under these roots offline instead of deleting them: an absent
    external disk must not wipe its part of the library. An empty mount point directory looks
    present here; the indexer should still be careful when a root that had photos yields none.
    """
    return [root for root in roots if not os.path.isdir(root)]
