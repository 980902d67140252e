"""Folder watching: a root is reported once its changes settled, never mid-copy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from visuallens_app.library.watch import ChangeTracker, FolderWatcher, is_photo_name


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_settled_file_makes_its_root_due_once(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ChangeTracker(debounce=1.0, settle=1.0, clock=clock)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x" * 100)
    tracker.note(photo, tmp_path)
    assert tracker.due() == []  # too soon: not checked twice yet
    clock.now = 1.1
    assert tracker.due() == [tmp_path]
    clock.now = 5.0
    assert tracker.due() == []  # reported once


def test_a_file_still_growing_waits_until_its_size_stops_changing(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ChangeTracker(debounce=1.0, settle=1.0, clock=clock)
    photo = tmp_path / "big.jpg"
    photo.write_bytes(b"x" * 100)
    tracker.note(photo, tmp_path)
    clock.now = 1.1
    photo.write_bytes(b"x" * 5000)  # the copy goes on, with no new event reaching us
    assert tracker.due() == []
    clock.now = 1.5
    assert tracker.due() == []  # checked again only one settle interval later
    clock.now = 2.2
    assert tracker.due() == [tmp_path]


def test_new_events_push_the_root_back(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ChangeTracker(debounce=1.0, settle=0.5, clock=clock)
    for i in range(5):
        clock.now = i * 0.6
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"x")
        tracker.note(path, tmp_path)
        assert tracker.due() == []
    clock.now += 1.01
    assert tracker.due() == [tmp_path]


def test_a_deleted_file_counts_as_settled(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ChangeTracker(debounce=0.5, settle=0.5, clock=clock)
    gone = tmp_path / "gone.jpg"
    tracker.note(gone, tmp_path)
    clock.now = 0.6
    assert tracker.due() == [tmp_path]


def test_roots_are_independent(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ChangeTracker(debounce=1.0, settle=1.0, clock=clock)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "1.jpg").write_bytes(b"1")
    tracker.note(a / "1.jpg", a)
    clock.now = 0.9
    (b / "2.jpg").write_bytes(b"2")
    tracker.note(b / "2.jpg", b)
    clock.now = 1.2
    assert tracker.due() == [a]
    clock.now = 2.0
    assert tracker.due() == [b]


def test_only_photo_names_count() -> None:
    assert is_photo_name(Path("x/IMG_1.JPG"))
    assert is_photo_name(Path("x/a.heic"))
    assert not is_photo_name(Path("x/notes.txt"))
    assert not is_photo_name(Path("x/.hidden.jpg"))


def test_watcher_reports_a_new_photo_after_it_is_written(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    library = root / "library"  # a library inside a photo folder must not trigger itself
    library.mkdir()
    seen: list[Path] = []
    event = threading.Event()

    def changed(path: Path) -> None:
        seen.append(path)
        event.set()

    watcher = FolderWatcher(changed, debounce=0.2, settle=0.2, poll=0.05, ignore=[library])
    watcher.start()
    try:
        assert watcher.set_roots([root]) == []
        (library / "thumb.jpg").write_bytes(b"t")
        (root / "notes.txt").write_text("not a photo")
        time.sleep(0.6)
        assert seen == []
        (root / "new.jpg").write_bytes(b"\xff\xd8" + b"x" * 1000)
        assert event.wait(5.0)
        assert seen == [root]
    finally:
        watcher.stop()
    assert not watcher.running


def test_watching_a_missing_folder_is_reported_not_raised(tmp_path: Path) -> None:
    watcher = FolderWatcher(lambda _root: None)
    watcher.start()
    try:
        assert watcher.set_roots([tmp_path / "nope"]) == [tmp_path / "nope"]
    finally:
        watcher.stop()
