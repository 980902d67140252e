"""Decoding photos for the index: every format, EXIF, big JPEGs, and every kind of bad file."""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from visuallens_app.library.decode import (
    MAX_PIXELS,
    READ_MARGIN_BYTES,
    DecodedPhoto,
    DecodeError,
    PhotoMeta,
    decode_photo,
    read_meta,
)
from visuallens_app.library.thumbnails import ThumbnailCache

TARGET = 224
THUMB = 256


@pytest.fixture
def cat(sample_images: dict[str, Image.Image]) -> Image.Image:
    return sample_images["chelsea"]  # 451 x 300, landscape


def _check_decoded(photo: DecodedPhoto, width: int, height: int) -> None:
    """What every successful decode promises, whatever the format."""
    assert photo.image.mode == "RGB"
    assert photo.thumbnail.mode == "RGB"
    assert (photo.width, photo.height) == (width, height)
    assert min(photo.image.size) >= min(TARGET, width, height)
    assert max(photo.thumbnail.size) <= THUMB
    # Same aspect ratio as the original, within rounding.
    assert photo.image.width / photo.image.height == pytest.approx(width / height, rel=0.02)
    assert len(photo.content_hash) == 32
    int(photo.content_hash, 16)


def _mean_colour_difference(a: Image.Image, b: Image.Image) -> float:
    resized = b.resize(a.size, Image.Resampling.BILINEAR)
    return float(np.abs(np.asarray(a, float) - np.asarray(resized, float)).mean())


@pytest.mark.parametrize(
    ("suffix", "pillow_format", "options"),
    [
        (".jpg", "JPEG", {"quality": 90}),
        (".png", "PNG", {}),
        (".webp", "WEBP", {"quality": 90}),
        (".tif", "TIFF", {}),
        (".bmp", "BMP", {}),
    ],
)
def test_every_still_format_decodes_to_the_same_photo(
    tmp_path: Path, cat: Image.Image, suffix: str, pillow_format: str, options: dict[str, int]
) -> None:
    path = tmp_path / f"cat{suffix}"
    cat.save(path, pillow_format, **options)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    _check_decoded(photo, *cat.size)
    assert photo.format == pillow_format
    assert _mean_colour_difference(photo.image, cat) < 12


def test_gif_decodes_its_first_frame(tmp_path: Path, sample_images: dict[str, Image.Image]) -> None:
    cat, coffee = sample_images["chelsea"], sample_images["coffee"].resize((451, 300))
    path = tmp_path / "animated.gif"
    cat.save(path, save_all=True, append_images=[coffee], duration=100, loop=0)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    _check_decoded(photo, 451, 300)
    assert photo.format == "GIF"
    # Palette quantisation blurs colours; the cat must still be much closer than the coffee.
    assert _mean_colour_difference(photo.image, cat) < _mean_colour_difference(photo.image, coffee)


def test_heic_decodes_through_pillow_heif(tmp_path: Path, cat: Image.Image) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()  # only to *write* the fixture; decode registers lazily
    path = tmp_path / "IMG_0001.HEIC"
    cat.save(path, "HEIF", quality=90)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    _check_decoded(photo, *cat.size)
    assert photo.format == "HEIF"
    assert _mean_colour_difference(photo.image, cat) < 12


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    # A landscape sensor image with a red block top-left, stored as a phone held upright
    # stores it: pixels sideways, EXIF orientation 6 ("rotate 90° clockwise to view").
    sensor = Image.new("RGB", (600, 400), (0, 0, 200))
    sensor.paste((255, 0, 0), (0, 0, 150, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    sensor.save(path, quality=95, exif=exif)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    assert (photo.width, photo.height) == (400, 600)  # upright: portrait
    assert photo.image.height > photo.image.width
    assert photo.thumbnail.height > photo.thumbnail.width
    assert photo.meta.orientation == 6
    # Turning clockwise moves the top-left corner to the top-right.
    pixels = np.asarray(photo.image, float)
    h, w = pixels.shape[:2]
    top_right = pixels[: h // 8, -w // 8 :].mean(axis=(0, 1))
    top_left = pixels[: h // 8, : w // 8].mean(axis=(0, 1))
    assert top_right[0] > 200 > top_right[2]  # red
    assert top_left[2] > 150 > top_left[0]  # blue


def test_tiff_orientation_is_applied_exactly_once(tmp_path: Path, cat: Image.Image) -> None:
    # Pillow's TIFF reader turns the image upright itself; decoding must not turn it again.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "cat.tif"
    cat.save(path, exif=exif)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    assert (photo.width, photo.height) == (300, 451)
    assert photo.image.height > photo.image.width


def _exif_with_date_gps_camera() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0132] = "2020:01:01 00:00:00"  # DateTime (last edit): must lose to DateTimeOriginal
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = "2023:07:14 18:30:05"
    exif_ifd[0x9011] = "+02:00"
    gps = exif.get_ifd(0x8825)
    # Cape Town (33°55'31.2"S 18°25'26.4"E): south and east, so one sign flips.
    gps[1] = "S"
    gps[2] = (Fraction(33), Fraction(55), Fraction(312, 10))
    gps[3] = "E"
    gps[4] = (Fraction(18), Fraction(25), Fraction(264, 10))
    return exif


def test_exif_date_gps_and_camera_are_read_back(tmp_path: Path, cat: Image.Image) -> None:
    path = tmp_path / "trip.jpg"
    cat.save(path, quality=90, exif=_exif_with_date_gps_camera())

    meta = decode_photo(path).meta

    assert meta.taken_at == "2023-07-14T18:30:05+02:00"
    assert meta.gps is not None
    assert meta.gps == pytest.approx((-33.9253333, 18.424), abs=1e-6)
    assert meta.camera == "Canon EOS R5"
    assert meta.orientation == 1


def _jpeg_with_truncated_exif(path: Path, cat: Image.Image) -> Path:
    """A JPEG whose EXIF block was cut short (as some editors and old phones write it)."""
    exif = Image.Exif()
    exif[TAG_MAKE_ID] = "Canon"
    exif[TAG_MODEL_ID] = "EOS R5 with a long model name"
    whole = exif.tobytes()
    cat.save(path, "JPEG", quality=90, exif=whole[: len(whole) - 20])
    return path


TAG_MAKE_ID, TAG_MODEL_ID = 0x010F, 0x0110


def test_damaged_exif_is_the_photos_note_not_warnings_on_stderr(
    tmp_path: Path, cat: Image.Image
) -> None:
    path = _jpeg_with_truncated_exif(tmp_path / "cut-exif.jpg", cat)

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    assert [str(w.message) for w in escaped] == []
    _check_decoded(photo, *cat.size)
    assert photo.meta.camera == "Canon"  # what could be read is kept
    assert photo.note == "damaged EXIF data (Truncated File Read); some details may be missing"
    clean = tmp_path / "clean.jpg"
    cat.save(clean, quality=90)
    assert decode_photo(clean).note is None


def test_read_meta_without_exif_and_with_broken_exif(cat: Image.Image) -> None:
    assert read_meta(cat) == PhotoMeta(None, None, None, 1)
    exif = Image.Exif()
    exif[0x0112] = 42  # not an orientation
    exif[0x0132] = "0000:00:00 00:00:00"  # camera without a clock
    exif[0x010F] = "NIKON\x00\x00"
    exif.get_ifd(0x8825)[2] = (Fraction(1), Fraction(0))  # malformed latitude
    with_exif = cat.copy()
    with_exif.info["exif"] = exif.tobytes()
    assert read_meta(with_exif) == PhotoMeta(None, None, "NIKON", 1)


def test_a_12_megapixel_jpeg_is_never_decoded_at_full_size(
    tmp_path: Path, cat: Image.Image
) -> None:
    path = tmp_path / "DSC_0001.jpg"
    cat.resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    assert (photo.width, photo.height) == (4000, 3000)
    assert max(photo.image.size) <= 4 * TARGET
    assert min(photo.image.size) >= TARGET
    assert max(photo.thumbnail.size) == THUMB
    assert _mean_colour_difference(photo.image, cat) < 12


def test_small_photos_are_not_upscaled(tmp_path: Path, cat: Image.Image) -> None:
    path = tmp_path / "tiny.png"
    cat.resize((90, 60)).save(path)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    assert photo.image.size == (90, 60)
    assert photo.thumbnail.size == (90, 60)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "I;16", "1"])
def test_every_pixel_mode_becomes_rgb(tmp_path: Path, cat: Image.Image, mode: str) -> None:
    if mode == "I;16":
        grey = np.asarray(cat.convert("L"), np.uint16) * 257  # full 16-bit range
        source = Image.fromarray(grey)
    elif mode == "P":
        source = cat.quantize(64)
    else:
        source = cat.convert(mode)
    path = tmp_path / f"cat-{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    source.save(path)

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    _check_decoded(photo, *cat.size)
    # Not clipped to white or black: the 16-bit grey keeps the photo's tones.
    assert 40 < np.asarray(photo.image).mean() < 220


def test_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    sticker = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    sticker.paste((200, 0, 0, 255), (100, 100, 200, 200))
    path = tmp_path / "sticker.png"
    sticker.save(path)

    image = decode_photo(path, target=TARGET, thumb_size=THUMB).image

    assert image.getpixel((5, 5)) == (255, 255, 255)
    centre = image.getpixel((image.width // 2, image.height // 2))
    assert isinstance(centre, tuple)
    assert centre[0] > 150 > centre[1]


def test_same_bytes_same_hash_different_bytes_different_hash(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "sub-b.png", tmp_path / "c.png"
    Image.new("RGB", (20, 20), "red").save(a)
    b.write_bytes(a.read_bytes())
    Image.new("RGB", (20, 20), "blue").save(c)
    assert decode_photo(a).content_hash == decode_photo(b).content_hash
    assert decode_photo(a).content_hash != decode_photo(c).content_hash


# --- bad files: each is a DecodeError with a one-line reason, never a Pillow/OS traceback ----


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, and no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _reason(path: Path) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_photo(path)
    reason = str(caught.value)
    assert reason
    assert "\n" not in reason
    assert "Traceback" not in reason
    return reason


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    assert _reason(path) == "empty file"


def test_truncated_jpeg(tmp_path: Path, cat: Image.Image) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # decode must not rely on flipping it
    whole = tmp_path / "whole.jpg"
    cat.save(whole, quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert _reason(path) == "truncated JPEG"


def test_random_bytes_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    assert _reason(path) == "not an image (unrecognised data)"


def test_corrupt_png_header(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert _reason(path) == "damaged PNG header"


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    assert path.stat().st_size < 100  # tiny file, 10 gigapixels claimed
    reason = _reason(path)
    assert reason.startswith("too large")
    assert f"{MAX_PIXELS // 1_000_000} MP limit" in reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_just_over_the_limit_is_refused_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(15_000, 15_000))  # 225 MP
    assert _reason(path) == "too large: 15000x15000 pixels exceeds the 200 MP limit"


def test_file_gone_between_scan_and_decode(tmp_path: Path) -> None:
    # chmod 000 cannot make a file unreadable for root (tests run as root), so an unreadable
    # file is simulated by what really happens to users: it is moved or deleted after the scan.
    path = tmp_path / "moved.jpg"
    assert _reason(path).startswith("file vanished")


def test_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "link.jpg"
    path.symlink_to(tmp_path / "nowhere.jpg")
    assert _reason(path).startswith("file vanished")


def test_directory_named_like_a_photo(tmp_path: Path) -> None:
    path = tmp_path / "album.jpg"
    path.mkdir()
    assert _reason(path) == "a folder, not a file"


def test_no_more_is_read_than_the_scan_saw_plus_a_margin(tmp_path: Path, cat: Image.Image) -> None:
    path = tmp_path / "cat.jpg"
    cat.save(path, quality=90)
    size = path.stat().st_size
    assert decode_photo(path, expected_size=size - 100).width == cat.width  # rewritten in place
    with path.open("ab") as grown:  # a file still being written, or replaced by a larger one
        grown.write(b"\0" * (READ_MARGIN_BYTES + 1))

    with pytest.raises(DecodeError) as caught:
        decode_photo(path, expected_size=size)

    assert str(caught.value) == "file changed since the scan (larger now); it is read next time"
    assert caught.value.transient


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipe_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, fifo_released_after_a_while: Callable[[Path], AbstractContextManager[None]]
) -> None:
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    with fifo_released_after_a_while(path):
        assert _reason(path) == "not a regular file (a named pipe)"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_symlink_to_an_endless_device_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "zero.jpg"
    path.symlink_to("/dev/zero")
    assert _reason(path) == "not a regular file (a device)"


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores raw bytes")
def test_non_utf8_file_name(tmp_path: Path, cat: Image.Image) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")  # Latin-1 "café", not UTF-8
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "wb") as file:
        cat.save(file, "JPEG", quality=90)
    path = Path(os.fsdecode(raw))  # a str with a surrogate escape, as os.scandir gives it

    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)

    _check_decoded(photo, *cat.size)


# --- the thumbnail cache -------------------------------------------------------------------


def test_thumbnail_cache_round_trip(tmp_path: Path, photo_dir: Path) -> None:
    photo = decode_photo(photo_dir / "astronaut.jpg", target=TARGET, thumb_size=THUMB)
    cache = ThumbnailCache(tmp_path / "thumbs")
    key = photo.content_hash

    assert not cache.has(key)
    stored = cache.save(key, photo.thumbnail)

    assert stored == cache.path_for(key)
    assert stored.parent.name == key[:2]
    assert cache.has(key)
    with Image.open(stored) as reloaded:
        assert reloaded.size == photo.thumbnail.size
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no temp file left
    cache.save(key, photo.thumbnail)  # overwriting is fine
    cache.remove(key)
    assert not cache.has(key)
    cache.remove(key)  # removing twice is fine


def test_thumbnail_cache_rejects_a_path_as_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="content hash"):
        ThumbnailCache(tmp_path).path_for("../../etc/passwd")


def _with_claimed_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF) claiming another size: the data is unchanged."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_a_jpeg_claiming_more_than_its_data_records_the_decoded_size(
    tmp_path: Path, cat: Image.Image
) -> None:
    """Issue 12 item 15: a header claiming 14000x14000 over 451x300 of data was stored as such.

    libjpeg fills the rows it has no data for in flat grey and only warns; the decoded size is
    the rows that came from the file.
    """
    whole = tmp_path / "whole.jpg"
    cat.save(whole, quality=90)
    liar = tmp_path / "liar.jpg"
    liar.write_bytes(_with_claimed_size(whole.read_bytes(), 14000, 14000))
    photo = decode_photo(liar, target=TARGET, thumb_size=THUMB)
    assert photo.width == 14000  # each decoded row spans the claimed width
    assert 0 < photo.height < 300  # far less than claimed: only what the data filled
    assert photo.note is not None
    assert "14,000 rows its header claims" in photo.note
    # Nothing of the made-up grey is left in what is encoded or shown.
    assert not (np.asarray(photo.image)[-1] == 128).all()


def test_a_real_photo_ending_in_flat_mid_grey_keeps_its_size(tmp_path: Path) -> None:
    """The grey fill test must not crop a photo whose bottom really is mid-grey."""
    rng = np.random.default_rng(1)
    pixels = np.full((600, 800, 3), 128, np.uint8)
    pixels[:200] = rng.integers(0, 256, (200, 800, 3), np.uint8)  # detail on top, grey below
    path = tmp_path / "grey-floor.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    photo = decode_photo(path, target=TARGET, thumb_size=THUMB)
    assert (photo.width, photo.height) == (800, 600)
    assert photo.note is None
