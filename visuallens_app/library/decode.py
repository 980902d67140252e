"""Turn one photo file into what the indexer needs: a small RGB image, a thumbnail, facts, a hash.

Indexing spends most of its time here, so a photo is decoded only as large as needed: JPEGs are
scaled down inside the decoder (``Image.draft``, DCT-domain, 2-8x less work and memory), other
formats are decoded once and reduced. The file is read once; its bytes give both the content
hash and the decode. Every failure becomes a :class:`DecodeError` with a one-line reason that the
indexer records and the GUI shows; no Pillow traceback escapes.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from visuallens_app.library.scan import not_a_regular_file

T = TypeVar("T")

#: Pixel count above which a photo is refused before decoding (a "decompression bomb": a tiny
#: file that claims to be huge would otherwise take gigabytes of memory). 200 MP leaves room for
#: the largest real panoramas and medium-format cameras.
MAX_PIXELS = 200_000_000

#: Files larger than this are refused before being read into memory (read once, hashed, decoded).
MAX_FILE_BYTES = 1 << 30

#: How much larger than the scan saw it a file may be when it is read. A photo rewritten in
#: place (new metadata) grows a little; one that grew more was replaced or is still being
#: written, and is left for the next run, which sees its new size.
READ_MARGIN_BYTES = 1 << 20

# ImageFile.LOAD_TRUNCATED_IMAGES is deliberately left False: a truncated photo is reported, not
# indexed with a grey bottom half.
# Pillow warns above MAX_IMAGE_PIXELS and raises above twice that. Raise its threshold to ours so
# that legitimate photos up to MAX_PIXELS open without a warning; larger ones are refused by
# decode_photo's own check from the header, before any pixel is decoded. Never lowered, so an
# application that raised it on purpose keeps its value.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

#: EXIF tag ids used here (numbers, as in the EXIF standard).
TAG_ORIENTATION = 0x0112
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_DATETIME = 0x0132
TAG_EXIF_IFD = 0x8769
TAG_GPS_IFD = 0x8825
TAG_DATETIME_ORIGINAL = 0x9003
TAG_OFFSET_TIME_ORIGINAL = 0x9011
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4

#: EXIF orientation -> the transpose that shows the photo upright (as ImageOps.exif_transpose).
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

#: Leading bytes -> format name, only to word error messages when Pillow could not say.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

#: ISO base media major brands of HEIC/HEIF stills and sequences.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)

#: Background for transparent pixels. White, because transparent photos in a library are
#: mostly stickers, logos and screenshots made for light pages; on black, dark line art and
#: text would vanish, and image-text encoders were trained on web images flattened on white.
BACKGROUND = (255, 255, 255)


class DecodeError(Exception):
    """A photo that cannot be decoded; ``str(err)`` is a one-line reason for the user.

    ``transient`` marks failures of access rather than content (permission denied, a file that
    vanished, an I/O error): the same file may read fine next time, so it is not remembered.
    """

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class PhotoMeta:
    """Facts from a photo's EXIF block; each is None (orientation 1) when absent or unreadable."""

    taken_at: str | None  # ISO 8601 from EXIF DateTimeOriginal, else DateTime
    gps: tuple[float, float] | None  # (latitude, longitude) in decimal degrees
    camera: str | None  # "Make Model"
    orientation: int  # EXIF orientation 1..8; the decoded image already has it applied


@dataclass(frozen=True, slots=True)
class DecodedPhoto:
    """One decoded photo: the encoder's input, the grid's thumbnail and the store's facts."""

    image: Image.Image  # RGB, upright, shorter side >= the requested target (not full size)
    thumbnail: Image.Image  # RGB, upright, fits in thumb_size x thumb_size
    width: int  # original size, after orientation
    height: int
    content_hash: str  # hex blake2b-128 of the file bytes: a moved photo keeps its vector
    meta: PhotoMeta
    format: str  # Pillow's format name: "JPEG", "PNG", "HEIF", ...
    note: str | None = None  # what is wrong with a photo that still decoded (damaged EXIF)


_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow to open HEIC/HEIF, once and only when the first such file shows up.

    Deferred because importing pillow_heif loads libheif and its codecs, which most libraries
    without iPhone photos never need.
    """
    global _heif_registered  # noqa: PLW0603 - a once-per-process switch
    with _heif_lock:
        if _heif_registered:
            return
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError as error:  # pragma: no cover - it is a dependency of the project
            raise DecodeError("HEIC/HEIF support is not installed (pillow-heif)") from error
        _heif_registered = True


def decode_photo(
    path: Path, *, target: int = 224, thumb_size: int = 256, expected_size: int | None = None
) -> DecodedPhoto:
    """Decode the photo at ``path`` for indexing, reading the file once.

    Parameters
    ----------
    target
        The encoder's input size: ``image``'s shorter side is at least this (or the original's,
        if smaller), about ``max(target, thumb_size)``. The encoder does its own final resize/crop.
    thumb_size
        ``thumbnail`` fits in a square of this side.
    expected_size
        The size the scan saw: at most :data:`READ_MARGIN_BYTES` more is read, so a file that
        was replaced or keeps growing is not read without end (a transient DecodeError).

    Raises
    ------
    DecodeError
        For any file that is not a decodable photo, with a one-line reason.
    """
    data = _read(path, expected_size)
    content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    kind = _sniff(data)
    try:
        return _decode(data, content_hash, kind, max(1, target), max(1, thumb_size))
    except DecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise DecodeError(_too_large_from_pillow(str(error))) from error
    except UnidentifiedImageError as error:
        # Pillow says "unidentified" also when a known format's header is damaged.
        reason = f"damaged {kind} header" if kind else "not an image (unrecognised data)"
        raise DecodeError(reason) from error
    except MemoryError as error:
        raise DecodeError("not enough memory to decode this image") from error
    except Exception as error:  # any other Pillow/codec failure is a bad file, not a crash
        raise DecodeError(_reason(error, kind)) from error


def _read(path: Path, expected_size: int | None = None) -> bytes:
    """The file's bytes, or a DecodeError saying in words why they cannot be read.

    The file may have changed since the scan: a named pipe put in its place would block a
    plain open() until some writer appears, and a device (a symlink to /dev/zero) would be read
    until memory runs out. So the path is opened without blocking, and what was opened, not
    the path, is checked to be a regular file before a byte is read. Even then no more is read
    than the scan saw plus :data:`READ_MARGIN_BYTES`, and never more than :data:`MAX_FILE_BYTES`
    (a file still being written, or one a file system reports too small, such as /proc's).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as error:
        raise DecodeError(
            "file vanished (moved or deleted since the scan)", transient=True
        ) from error
    except PermissionError as error:
        raise DecodeError("permission denied", transient=True) from error
    except IsADirectoryError as error:
        raise DecodeError("a folder, not a file") from error
    except OSError as error:
        raise DecodeError(
            f"cannot read the file: {error.strerror or error}", transient=True
        ) from error
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise DecodeError("a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(not_a_regular_file(info.st_mode))
        limit = MAX_FILE_BYTES
        if expected_size is not None:
            limit = min(limit, max(0, expected_size) + READ_MARGIN_BYTES)
        if info.st_size > limit:
            raise _too_big(info.st_size, limit)
        with open(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)  # one byte more tells "exactly at the limit" from "beyond"
        if len(data) > limit:
            raise _too_big(len(data), limit)
    except OSError as error:
        raise DecodeError(
            f"cannot read the file: {error.strerror or error}", transient=True
        ) from error
    finally:
        os.close(fd)
    if not data:
        raise DecodeError("empty file")
    return data


#: Open for reading without waiting for a writer (named pipes) and without a controlling
#: terminal (tty devices); O_NONBLOCK changes nothing for the regular files that are then read.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _too_big(size: int, limit: int) -> DecodeError:
    if limit < MAX_FILE_BYTES:
        return DecodeError(
            "file changed since the scan (larger now); it is read next time", transient=True
        )
    return DecodeError(
        f"file too large: {size / (1 << 20):.0f} MB exceeds the {MAX_FILE_BYTES >> 20} MB limit"
    )


def _sniff(data: bytes) -> str | None:
    """Format from the leading bytes, for messages and to load HEIF support on demand."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:  # not MP4/MOV, which share ftyp
        return "HEIF"
    return None


def _decode(
    data: bytes, content_hash: str, kind: str | None, target: int, thumb: int
) -> DecodedPhoto:
    if kind == "HEIF":
        _register_heif()
    notes: list[str] = []
    # Image.open reads only the header: size, mode and EXIF are known before any pixel is decoded.
    with _metadata_warnings(notes):
        opened = Image.open(io.BytesIO(data))
    with opened:
        width, height = opened.size
        if width * height > MAX_PIXELS:
            raise DecodeError(_too_large(width, height))
        fmt = opened.format or kind or "image"
        with _metadata_warnings(notes):
            meta = read_meta(opened)
        needed = max(target, thumb)
        # JPEG only (a no-op elsewhere): decode at 1/2, 1/4 or 1/8 scale, chosen by the decoder
        # so that both sides stay >= needed, and go straight to RGB from YCbCr.
        opened.draft("RGB", (needed, needed))
        opened.load()
        image: Image.Image = opened
        missing = _rows_the_decoder_made_up(opened, width, len(data)) if fmt == "JPEG" else 0
        if missing == opened.height:
            raise DecodeError(f"truncated JPEG: no image data for the {width}x{height} it claims")
        if missing:
            # The decoded size: the rows that came from the file, not the header's claim.
            kept = opened.height - missing
            claimed = height
            height = min(height, math.ceil(kept * height / opened.height))
            image = opened.crop((0, 0, opened.width, kept))
            truncated = (
                f"its data ends after {height:,} of the {claimed:,} rows its header claims; "
                f"indexed as the {width:,}x{height:,} that is there"
            )
        # Some decoders turn the photo upright themselves (Pillow's TIFF plugin, pillow_heif)
        # and then drop the tag, so what is still to do is read after load, not from `meta`.
        with _metadata_warnings(notes):
            pending = _orientation(opened.getexif()) or 1
        if image.mode not in _RESIZABLE_MODES:
            image = _to_rgb(image)  # palette and 16-bit data cannot be resampled as they are
        image = _shrink(image, needed)
        image = _to_rgb(image)
        if image is opened:  # small RGB photo: detach it from the file it was read from
            image = opened.copy()
    upright = _UPRIGHT.get(pending)
    if upright is not None:
        image = image.transpose(upright)
        if pending >= 5:  # 5..8 turn the photo by a quarter: the sides swap
            width, height = height, width
    thumbnail = image.copy()
    thumbnail.thumbnail((thumb, thumb), Image.Resampling.BICUBIC, reducing_gap=None)
    note = None
    if missing:
        note = truncated
    elif notes:
        note = f"damaged EXIF data ({notes[0]}); some details may be missing"
    return DecodedPhoto(image, thumbnail, width, height, content_hash, meta, fmt, note)


#: The colour libjpeg gives a block it has no data for (all coefficients zero: Y=Cb=Cr=128).
_JPEG_FILL = 128


def _rows_the_decoder_made_up(image: Image.Image, width: int, file_bytes: int) -> int:
    """How many rows at the bottom of a decoded JPEG hold no data from the file (0 if none).

    When a JPEG's data ends early but the file still closes properly (a header claiming
    14000x14000 over 451x300 of data), libjpeg only warns, and Pillow hands back the claimed
    size with every missing block filled in flat mid-grey. Such rows are not part of the photo:
    the decoded size is what precedes them. A real photo can end in flat mid-grey too, so rows
    count as made up only when the whole file is too small to have coded them: every 8x8 block
    costs a Huffman-coded JPEG at least one bit (its DC code), so ``file_bytes`` below one bit
    per block of the grey band means the band was never in the file. A file cut short without
    its end marker is not this case: Pillow refuses it, and it is reported as truncated.
    ``width`` is the full-size width (``image`` may be drafted down).
    """
    if image.mode not in ("L", "RGB") or image.height < 2:
        return 0
    import numpy as np

    pixels = np.asarray(image)
    rows = pixels.reshape(pixels.shape[0], -1)
    if not (np.abs(rows[-1].astype(np.int16) - _JPEG_FILL) <= 1).all():  # the usual case
        return 0
    flat = (np.abs(rows.astype(np.int16) - _JPEG_FILL) <= 1).all(axis=1)
    has_data = np.flatnonzero(~flat)
    missing = image.height - (int(has_data[-1]) + 1 if has_data.size else 0)
    scale = width / image.width  # full-size pixels per decoded pixel
    blocks = (width / 8) * (missing * scale / 8)
    return missing if file_bytes * 8 < blocks else 0


_warnings_lock = threading.Lock()


@contextmanager
def _metadata_warnings(notes: list[str]) -> Iterator[None]:
    """Collect what Pillow warns about a photo's damaged metadata into ``notes``.

    Pillow reports a cut or garbled EXIF block with ``warnings.warn`` ("Truncated File Read",
    "Possibly corrupt EXIF data..."), lines on stderr that name no file; the photo itself is
    fine. The warnings filters are process-wide, so this holds a lock, and is only wrapped
    around header and EXIF parsing (microseconds), never around the pixel decode. Warnings that
    other threads raise meanwhile are caught too, and raised again afterwards.
    """
    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every file's warning, not only the first one's
        try:
            yield
        finally:
            mine = [w for w in caught if _is_metadata_warning(w)]
            others = [w for w in caught if not _is_metadata_warning(w)]
    for message in mine:
        text = " ".join(str(message.message).split()).rstrip(".")
        text = text if len(text) <= 100 else text[:99] + "…"
        if text not in notes:
            notes.append(text)
    for other in others:
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)


def _is_metadata_warning(caught: warnings.WarningMessage) -> bool:
    """A UserWarning raised inside Pillow (its decompression-bomb warning is a RuntimeWarning)."""
    return issubclass(caught.category, UserWarning) and "PIL" in Path(caught.filename).parts


#: Modes Pillow resamples directly; anything else is converted to RGB(A) first.
_RESIZABLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})


def _shrink(image: Image.Image, shorter: int) -> Image.Image:
    """Scale down (never up) so that the shorter side is ``shorter``, keeping the aspect ratio.

    ``reducing_gap`` first box-averages by an integer factor (fast, and what keeps a 50 MP PNG
    cheap), then resamples the small remainder with bicubic for quality.
    """
    width, height = image.size
    current = min(width, height)
    if current <= shorter:
        return image
    scale = shorter / current
    size = (max(shorter, round(width * scale)), max(shorter, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB 8-bit from any mode: transparency onto :data:`BACKGROUND`, 16-bit scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode in ("PA", "La"):
        image = image.convert("RGBA")
        mode = "RGBA"
    elif mode.startswith("I;16") or mode == "I":
        # 16-bit grey: Pillow's convert("L") clips at 255, which turns most photos white.
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
        mode = "L"
    elif mode == "F":
        image = image.convert("L")
        mode = "L"
    if mode in ("RGBA", "LA", "RGBa"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def read_meta(image: Image.Image) -> PhotoMeta:
    """Date taken, GPS position, camera and orientation from ``image``'s EXIF; never raises.

    Broken EXIF is common (editors, old phones) and must not make a photo unreadable, so each
    field falls back to None (orientation to 1) on its own.
    """
    try:
        exif = image.getexif()
    except Exception:
        return PhotoMeta(None, None, None, 1)
    return PhotoMeta(
        taken_at=_guarded(_taken_at, exif),
        gps=_guarded(_gps, exif),
        camera=_guarded(_camera, exif),
        orientation=_guarded(_orientation, exif) or 1,
    )


def _guarded(read: Callable[[Image.Exif], T | None], exif: Image.Exif) -> T | None:
    try:
        return read(exif)
    except Exception:
        return None


def _orientation(exif: Image.Exif) -> int | None:
    value = exif.get(TAG_ORIENTATION)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _text(value: object) -> str | None:
    """EXIF ASCII fields arrive as str or bytes, often NUL-padded; empty means absent."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _camera(exif: Image.Exif) -> str | None:
    make = _text(exif.get(TAG_MAKE))
    model = _text(exif.get(TAG_MODEL))
    if make and model and model.casefold().startswith(make.casefold()):
        return model  # "Canon" + "Canon EOS R5" would otherwise read "Canon Canon EOS R5"
    return " ".join(part for part in (make, model) if part) or None


_EXIF_DATETIME = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")


def _taken_at(exif: Image.Exif) -> str | None:
    exif_ifd = exif.get_ifd(TAG_EXIF_IFD)
    for raw in (exif_ifd.get(TAG_DATETIME_ORIGINAL), exif.get(TAG_DATETIME)):
        text = _text(raw)
        match = _EXIF_DATETIME.match(text or "")
        if match is None:
            continue
        try:  # cameras without a clock write "0000:00:00 00:00:00"
            year, month, day, hour, minute, second = (int(part) for part in match.groups())
            taken = datetime(year, month, day, hour, minute, second)
        except ValueError:
            continue
        offset = _text(exif_ifd.get(TAG_OFFSET_TIME_ORIGINAL))
        return taken.isoformat() + (offset if offset and _OFFSET.fullmatch(offset) else "")
    return None


def _degrees(value: object) -> float:
    """EXIF degrees/minutes/seconds (three rationals) to decimal degrees."""
    if not isinstance(value, tuple) or len(value) != 3:
        raise ValueError("not a degrees/minutes/seconds triple")
    degrees, minutes, seconds = (float(part) for part in value)
    result = degrees + minutes / 60 + seconds / 3600
    if not math.isfinite(result):  # a rational with a zero denominator
        raise ValueError("not a finite angle")
    return result


def _gps(exif: Image.Exif) -> tuple[float, float] | None:
    gps = exif.get_ifd(TAG_GPS_IFD)
    if GPS_LAT not in gps or GPS_LON not in gps:
        return None
    lat = _degrees(gps[GPS_LAT])
    lon = _degrees(gps[GPS_LON])
    if (_text(gps.get(GPS_LAT_REF)) or "N").upper() == "S":
        lat = -lat
    if (_text(gps.get(GPS_LON_REF)) or "E").upper() == "W":
        lon = -lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if lat == 0 and lon == 0:  # phones without a fix write zeros; nobody shoots at "null island"
        return None
    return (round(lat, 7), round(lon, 7))


def _too_large(width: int, height: int) -> str:
    return f"too large: {width}x{height} pixels exceeds the {MAX_PIXELS // 1_000_000} MP limit"


def _too_large_from_pillow(message: str) -> str:
    """Pillow's own bomb check fired (e.g. a GIF frame or TIFF tile bigger than the header)."""
    match = re.search(r"\((\d+) pixels\)", message)
    size = f"{int(match.group(1)) / 1e6:,.0f} MP" if match else "the image"
    return f"too large: {size} exceeds the {MAX_PIXELS // 1_000_000} MP limit"


def _reason(error: Exception, kind: str | None) -> str:
    """A one-line, human reason for a Pillow/codec failure."""
    what = kind or "image"
    message = " ".join(str(error).split())  # one line, whatever the codec said
    lowered = message.lower()
    if "truncated" in lowered or isinstance(error, EOFError):
        return f"truncated {what}"
    if "broken data stream" in lowered or "corrupt" in lowered:
        return f"corrupt {what} data"
    if len(message) > 120:
        message = message[:117] + "..."
    return f"cannot decode {what}: {message}" if message else f"cannot decode {what}"


__all__ = ["MAX_PIXELS", "DecodeError", "DecodedPhoto", "PhotoMeta", "decode_photo", "read_meta"]
