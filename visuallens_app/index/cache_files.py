"""The on-disk side of a VectorIndex: manifest, checksums and crash-safe file replacement.

A save writes the index to a new, uniquely named file and then atomically replaces the manifest
that names it; the manifest is the single commit point. A load trusts nothing the manifest does
not vouch for (name, size, CRC32) before faiss parses a byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Bumped when the manifest or the meaning of its fields changes; older manifests are rebuilt.
FORMAT_VERSION = 1
#: A saved index file is ``<name>.<16 hex>.faiss``; the random token makes every save a new file,
#: so the manifest (replaced atomically, last) is the single commit point of a save.
TOKEN_HEX = 16


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a saved index claims to be; checked against the file before faiss parses it."""

    format_version: int
    fingerprint: str
    count: int
    dim: int
    kind: Literal["exact", "ivf"]
    index_file: str
    bytes: int
    crc32: int
    faiss_version: str
    nprobe: int | None
    calibrated_recall: float | None

    @classmethod
    def parse(cls, raw: object) -> Manifest | None:
        """The manifest in ``raw`` (decoded JSON), or None when any field is missing or wrong."""
        if not isinstance(raw, dict):
            return None
        try:
            kind = raw["kind"]
            nprobe = raw["nprobe"]
            recall = raw["calibrated_recall"]
            manifest = cls(
                format_version=int(raw["format_version"]),
                fingerprint=str(raw["fingerprint"]),
                count=int(raw["count"]),
                dim=int(raw["dim"]),
                kind=kind,
                index_file=str(raw["index_file"]),
                bytes=int(raw["bytes"]),
                crc32=int(raw["crc32"]),
                faiss_version=str(raw["faiss_version"]),
                nprobe=None if nprobe is None else int(nprobe),
                calibrated_recall=None if recall is None else float(recall),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if manifest.format_version != FORMAT_VERSION or kind not in ("exact", "ivf"):
            return None
        return manifest


def new_index_file_name(name: str) -> str:
    """A fresh ``<name>.<token>.faiss`` file name, never equal to an earlier save's."""
    return f"{name}.{secrets.token_hex(TOKEN_HEX // 2)}.faiss"


def check_name(name: str) -> None:
    if not name or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"index name must be letters, digits, '-' or '_', not {name!r}")


def is_index_file_name(name: str, file_name: str) -> bool:
    return (
        re.fullmatch(rf"{re.escape(name)}\.[0-9a-f]{{{TOKEN_HEX}}}\.faiss", file_name) is not None
    )


def crc32(path: Path) -> int:
    # CRC32 catches accidental damage (truncation, bad sectors) at several GB/s; a cache file
    # needs no defence against deliberate tampering, which would need a keyed hash.
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def crc32_and_fsync(path: Path) -> int:
    crc = crc32(path)
    with path.open("rb+") as f:
        os.fsync(f.fileno())
    return crc


def write_atomic(path: Path, data: bytes) -> None:
    # A unique name per writer: two threads rebuilding at once must not clobber each other.
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(TOKEN_HEX // 2)}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    """Make the renames durable (POSIX); Windows cannot open a directory, and needs no fsync."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_files(
    directory: Path, name: str, *, keep: str, older_than: float | None = None
) -> None:
    """Delete what earlier (or interrupted) saves of ``name`` left; best effort.

    That is every index file but ``keep``, and the temporary files of index and manifest writes
    that a kill -9 left behind. ``older_than`` (seconds) spares files changed more recently: at
    load time another process may be in the middle of a save of its own.
    """
    pattern = re.compile(
        rf"{re.escape(name)}\.(?:[0-9a-f]{{{TOKEN_HEX}}}\.faiss(?:\.tmp)?"
        rf"|json\.[0-9a-f]{{{TOKEN_HEX}}}\.tmp)"
    )
    cutoff = None if older_than is None else time.time() - older_than
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for path in entries:
        if path.name == keep or not pattern.fullmatch(path.name):
            continue
        # Failure is fine (e.g. still open by another process on Windows): next time retries.
        with contextlib.suppress(OSError):
            if cutoff is None or path.stat().st_mtime < cutoff:
                path.unlink()
