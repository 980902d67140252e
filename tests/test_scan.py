"""Finding photos in folders: what is found, what is skipped, and what never stops a scan."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from visuallens_app.errors import Cancelled
from visuallens_app.jobs import CancelToken
from visuallens_app.library.scan import (
    CANCEL_EVERY,
    IMAGE_SUFFIXES,
    ScannedFile,
    missing_roots,
    scan_folders,
)


def _names(found: list[ScannedFile], root: Path) -> list[str]:
    return [f.path.relative_to(root).as_posix() for f in found]


def test_finds_the_photos_of_a_folder(photo_dir: Path) -> None:
    found = list(scan_folders([photo_dir]))

    assert _names(found, photo_dir) == [
        "astronaut.jpg",
        "chelsea.jpg",
        "coffee.jpg",
        "motorcycle.jpg",
        "rocket.jpg",
    ]
    cat = found[1]
    stat = (photo_dir / "chelsea.jpg").stat()
    assert cat.root == photo_dir
    assert (cat.size, cat.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert isinstance(cat.path, Path)


def test_every_image_suffix_in_any_case_and_nothing_else(tmp_path: Path) -> None:
    for suffix in IMAGE_SUFFIXES:
        (tmp_path / f"a{suffix}").write_bytes(b"x")
        (tmp_path / f"B{suffix.upper()}").write_bytes(b"x")
    for other in ("notes.txt", "clip.mp4", "raw.CR2", "sidecar.xmp", "jpg", "Makefile"):
        (tmp_path / other).write_bytes(b"x")

    found = _names(list(scan_folders([tmp_path])), tmp_path)

    assert len(found) == 2 * len(IMAGE_SUFFIXES)
    assert {Path(name).suffix.lower() for name in found} == IMAGE_SUFFIXES


def test_hidden_and_system_folders_are_skipped(tmp_path: Path) -> None:
    keep = tmp_path / "2023" / "summer"
    keep.mkdir(parents=True)
    (keep / "beach.jpg").write_bytes(b"x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    for system in ("@eaDir", ".git", "$RECYCLE.BIN", "System Volume Information", "__MACOSX",
                   ".Trashes", "lost+found", ".thumbnails", "@EADIR"):  # fmt: skip
        folder = tmp_path / system / "inner"
        folder.mkdir(parents=True)
        (folder / "thumb.jpg").write_bytes(b"x")
    (tmp_path / "Thumbs.db").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    errors: list[tuple[Path, str]] = []

    found = list(scan_folders([tmp_path], on_error=lambda p, r: errors.append((p, r))))

    assert _names(found, tmp_path) == ["2023/summer/beach.jpg"]
    assert errors == []  # skipped silently


def test_a_hidden_root_chosen_by_the_user_is_scanned(tmp_path: Path) -> None:
    root = tmp_path / ".private"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    assert len(list(scan_folders([root]))) == 1


def test_order_is_deterministic_files_then_subfolders_by_name(tmp_path: Path) -> None:
    for rel in ("b/2.jpg", "b/1.jpg", "a/z.jpg", "a/sub/y.jpg", "m.jpg", "c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")

    first = _names(list(scan_folders([tmp_path])), tmp_path)

    assert first == ["c.png", "m.jpg", "a/z.jpg", "a/sub/y.jpg", "b/1.jpg", "b/2.jpg"]
    assert _names(list(scan_folders([tmp_path])), tmp_path) == first


def test_symlink_loop_does_not_hang_and_symlinked_folders_are_followed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    (photos / "a" / "cat.jpg").write_bytes(b"x")
    (photos / "a" / "loop").symlink_to("..")  # a -> .. : photos/a/loop/a/loop/...
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dog.jpg").write_bytes(b"x")
    (photos / "linked").symlink_to(elsewhere)

    found = _names(list(scan_folders([photos])), photos)

    assert found == ["a/cat.jpg", "linked/dog.jpg"]


def test_overlapping_roots_yield_each_file_once(photo_dir: Path) -> None:
    sub = photo_dir / "sub"
    sub.mkdir()
    (sub / "x.jpg").write_bytes(b"x")

    found = list(scan_folders([photo_dir, sub]))

    assert len(found) == 6
    assert len({f.path for f in found}) == 6


def test_dangling_symlink_is_reported_not_fatal(photo_dir: Path) -> None:
    (photo_dir / "gone.jpg").symlink_to(photo_dir / "deleted-long-ago.jpg")
    (photo_dir / "gone.txt").symlink_to(photo_dir / "deleted.txt")
    errors: list[tuple[Path, str]] = []

    found = list(scan_folders([photo_dir], on_error=lambda p, r: errors.append((p, r))))

    assert len(found) == 5
    assert errors == [(photo_dir / "gone.jpg", "dangling symlink")]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_symlink_to_a_device_is_reported_as_not_a_regular_file(photo_dir: Path) -> None:
    (photo_dir / "zero.jpg").symlink_to("/dev/zero")
    errors: list[tuple[Path, str]] = []

    found = list(scan_folders([photo_dir], on_error=lambda p, r: errors.append((p, r))))

    assert len(found) == 5
    assert errors == [(photo_dir / "zero.jpg", "not a regular file (a device)")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipes_and_device_links_with_photo_names_are_said_apart(photo_dir: Path) -> None:
    os.mkfifo(photo_dir / "pipe.jpg")
    os.mkfifo(photo_dir / "pipe.txt")  # not named like a photo: nothing to say
    (photo_dir / "null.png").symlink_to(os.devnull)
    errors: list[tuple[Path, str]] = []
    special: list[tuple[Path, str]] = []

    found = list(
        scan_folders(
            [photo_dir],
            on_error=lambda p, r: errors.append((p, r)),
            on_special=lambda p, r: special.append((p, r)),
        )
    )

    assert len(found) == 5
    assert errors == []
    assert special == [
        (photo_dir / "null.png", "not a regular file (a device)"),
        (photo_dir / "pipe.jpg", "not a regular file (a named pipe)"),
    ]


def test_unreadable_folder_is_reported_and_the_scan_goes_on(
    photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, for whom chmod 000 changes nothing; make os.scandir refuse instead.
    locked = photo_dir / "locked"
    locked.mkdir()
    (locked / "secret.jpg").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors: list[tuple[Path, str]] = []

    found = list(scan_folders([photo_dir], on_error=lambda p, r: errors.append((p, r))))

    assert len(found) == 5
    assert errors == [(locked, "permission denied")]


def test_missing_root_is_reported_and_the_others_scanned(photo_dir: Path, tmp_path: Path) -> None:
    unplugged = tmp_path / "media" / "usb-disk"
    errors: list[tuple[Path, str]] = []

    found = list(scan_folders([unplugged, photo_dir], on_error=lambda p, r: errors.append((p, r))))

    assert len(found) == 5
    assert [p for p, _ in errors] == [unplugged]


def test_missing_roots(photo_dir: Path, tmp_path: Path) -> None:
    unplugged = tmp_path / "media" / "usb-disk"
    a_file = photo_dir / "chelsea.jpg"
    assert missing_roots([photo_dir, unplugged, a_file]) == [unplugged, a_file]
    assert missing_roots([]) == []


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores raw bytes")
def test_non_utf8_file_name_is_yielded(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")  # Latin-1 "café", not UTF-8
    os.close(os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644))

    found = list(scan_folders([tmp_path]))

    assert len(found) == 1
    assert os.fsencode(found[0].path) == raw
    assert found[0].path.exists()


def test_cancel_stops_the_scan(tmp_path: Path) -> None:
    for i in range(CANCEL_EVERY * 3):
        (tmp_path / f"{i:05d}.jpg").write_bytes(b"x")
    token = CancelToken()
    seen = 0

    with pytest.raises(Cancelled):  # noqa: PT012 - cancelling from inside the loop is the point
        for _ in scan_folders([tmp_path], cancel=token):
            seen += 1
            if seen == 10:
                token.cancel()

    assert seen < CANCEL_EVERY + 10
