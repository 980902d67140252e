"""Thumbnails on disk, one file per photo content, for the grid views.

Keyed by content hash (not path), so a renamed or moved photo keeps its thumbnail and duplicates
share one. Stored as JPEG at quality 85: Qt reads JPEG through libjpeg-turbo on every platform,
a scrolling grid decodes hundreds per second, and thumbnails have no transparency (decode
flattens it). Measured with Pillow on a 256 px photo: WebP is ~35% smaller (12 vs 18 KB) but
decodes 2x and encodes 20x slower (1.4 vs 0.7 ms, 8.5 vs 0.4 ms), and the disk saved matters
less than scrolling and indexing speed.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image

#: File name ending of a stored thumbnail.
SUFFIX = ".jpg"
#: JPEG quality: 85 is visually clean at 256 px and about half the size of 95.
QUALITY = 85


class ThumbnailCache:
    """A folder of thumbnails named by content hash, sharded by its first two hex digits.

    Sharding keeps each folder to ~1/256 of the library, since file managers, backup tools
    and some file systems slow down with 100,000 entries in one folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, content_hash: str) -> Path:
        """Where the thumbnail of ``content_hash`` lives: ``root/ab/abcdef....jpg``."""
        if len(content_hash) < 3 or not all(c in "0123456789abcdef" for c in content_hash):
            raise ValueError(f"not a lower-case hex content hash: {content_hash!r}")
        return self.root / content_hash[:2] / f"{content_hash}{SUFFIX}"

    def has(self, content_hash: str) -> bool:
        """Whether a thumbnail is stored for ``content_hash``."""
        return self.path_for(content_hash).is_file()

    def save(self, content_hash: str, image: Image.Image) -> Path:
        """Store ``image`` (RGB) as the thumbnail of ``content_hash`` and return its path.

        Written to a temporary file in the same folder and renamed into place, so a reader (the
        GUI, another indexer run) never sees half a JPEG, even if the app is killed mid-write.
        """
        return self.save_encoded(content_hash, encode(image))

    def ensure(self, content_hash: str, photo: Path) -> Path | None:
        """The thumbnail of ``content_hash``, made again from ``photo`` if it was deleted.

        Lazy on purpose: a missing thumbnail is rebuilt when something asks for it (the grid, a
        search result), not found by checking every file on each re-scan. None when the photo
        cannot be read now or no longer holds that content (the next index run sees it).
        """
        target = self.path_for(content_hash)
        if target.is_file():
            return target
        from visuallens_app.library.decode import DecodeError, decode_photo

        try:
            decoded = decode_photo(photo, target=1)
        except DecodeError:
            return None
        if decoded.content_hash != content_hash:
            return None
        try:
            return self.save(content_hash, decoded.thumbnail)
        except OSError:  # a cache on a full or read-only disk: the photo still shows its name
            return None

    def save_encoded(self, content_hash: str, data: bytes) -> Path:
        """Store JPEG bytes made by :func:`encode` (here, or on a Ray worker), atomically."""
        target = self.path_for(content_hash)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{content_hash[:16]}.", suffix=".tmp", dir=target.parent
        )
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return target

    def remove(self, content_hash: str) -> None:
        """Delete the thumbnail of ``content_hash``; a missing one is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(content_hash).unlink()


def ensure_thumbnail(thumbnail: Path, photo: Path) -> bool:
    """Rebuild the thumbnail file ``thumbnail`` (a :meth:`ThumbnailCache.path_for` path) from
    ``photo`` if it is missing; whether it is there now. For readers that hold only paths."""
    cache = ThumbnailCache(thumbnail.parent.parent)
    content_hash = thumbnail.name.removesuffix(SUFFIX)
    try:
        return cache.ensure(content_hash, photo) is not None
    except ValueError:  # not a thumbnail path of a cache
        return False


def encode(image: Image.Image) -> bytes:
    """The bytes :meth:`ThumbnailCache.save` writes for ``image``, made where the photo was."""
    buffer = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(
        buffer, "JPEG", quality=QUALITY, optimize=False
    )
    return buffer.getvalue()
