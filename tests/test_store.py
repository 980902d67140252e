"""The store on its own: concurrent first opens, non-UTF-8 paths, filters."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from visuallens_app.library.paths import display_path, path_from_db, path_to_db
from visuallens_app.library.store import NewPhoto, PhotoStore


def test_many_threads_opening_a_new_library_at_once_all_succeed(tmp_path: Path) -> None:
    """The GUI's indexer and grid open a brand-new library at the same moment on first run."""
    for trial in range(5):
        library = tmp_path / f"lib{trial}"
        errors: list[BaseException] = []

        def open_it(library: Path = library, errors: list[BaseException] = errors) -> None:
            try:
                with PhotoStore(library) as store:
                    store.counts()
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_names_that_are_not_utf8_round_trip_through_the_database(tmp_path: Path) -> None:
    raw = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not valid UTF-8
    path = tmp_path / raw
    stored = path_to_db(path)
    stored.encode("utf-8")  # storable as SQLite text
    assert path_from_db(stored) == path
    assert "\\xe9" in display_path(path)
    assert path_to_db(tmp_path / "naïve.jpg") == str(tmp_path / "naïve.jpg")  # readable as is


def test_date_and_folder_filters(tmp_path: Path) -> None:
    def photo(name: str, root: str, taken: str | None) -> NewPhoto:
        return NewPhoto(
            path=tmp_path / root / name,
            root=tmp_path / root,
            size=1,
            mtime_ns=1,
            content_hash=name,
            width=1,
            height=1,
            format="JPEG",
            taken_at=taken,
        )

    with PhotoStore(tmp_path / "lib") as store:
        store.add_roots([tmp_path / "trip", tmp_path / "home"])
        vectors = {n: np.ones(4, np.float32) for n in ("a", "b", "c")}
        store.write_batch(
            [
                photo("a", "trip", "2024-05-01T10:00:00"),
                photo("b", "trip", "2024-06-01T10:00:00"),
                photo("c", "home", None),
            ],
            vectors,
            "enc",
        )
        names = [p.path.name for p in store.list_photos(root=tmp_path / "trip")]
        assert names == ["b", "a"]  # newest first
        june = store.list_photos(date_from="2024-06-01", date_to="2024-06-01")
        assert [p.path.name for p in june] == ["b"]
        assert len(store.list_photos(newest_first=False)) == 3


def test_a_zero_byte_database_beside_its_thumbnails_says_the_library_was_lost(
    tmp_path: Path,
) -> None:
    from visuallens_app.library.store import DB_NAME, PhotoStore

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / DB_NAME).touch()  # an empty file and nothing else: a library being created
    with PhotoStore(fresh) as store:
        assert store.warnings == []
    lost = tmp_path / "lost"
    (lost / "thumbnails").mkdir(parents=True)
    (lost / "thumbnails" / "ab.jpg").write_bytes(b"x")
    (lost / DB_NAME).touch()  # truncated by a crash or a disk problem
    with PhotoStore(lost) as store:
        (warning,) = store.warnings
        assert "was empty (0 bytes)" in warning
        assert "index your folders again" in warning
        assert store.counts()["ok"] == 0  # a new, working library


def test_a_damaged_database_is_reported_with_what_quick_check_finds(tmp_path: Path) -> None:
    """Issue 12: on a "malformed" open, PRAGMA quick_check's findings join the sentence."""
    import pytest

    from visuallens_app.errors import LibraryError

    library = tmp_path / "library"
    with PhotoStore(library) as store:
        store.add_roots([tmp_path / f"folder{i}" for i in range(400)])  # several b-tree pages
    database = library / "library.sqlite"
    assert database.stat().st_size > 3 * 4096
    with open(database, "r+b") as db:
        db.seek(2 * 4096)  # page 3: a table's b-tree page, not the schema
        db.write(os.urandom(4096))
    with pytest.raises(LibraryError) as err:
        PhotoStore(library)
    message = str(err.value)
    assert message.startswith("The library's database is damaged")
    assert "SQLite's integrity check (quick_check) finds" in message
    assert "Page 3" in message  # the page SQLite found damaged
    assert "\n" not in message


def test_folders_inside_a_photo_folder_are_listed_and_filter_by_what_is_under_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "photos"
    where = ["a.jpg", "2019/b.jpg", "2019/spain/c.jpg", "2019b/d.jpg", "x/y/z/e.jpg"]
    photos = [
        NewPhoto(
            path=root / rel, root=root, size=1, mtime_ns=1, content_hash=f"{i:x}0",
            width=1, height=1, format="JPEG", taken_at=None,
        )
        for i, rel in enumerate(where)
    ]  # fmt: skip
    with PhotoStore(tmp_path / "lib") as store:
        store.add_roots([root])
        store.write_batch(photos, {}, "enc")
        assert store.photo_folders() == [
            root,
            root / "2019",
            root / "2019" / "spain",
            root / "2019b",
            root / "x",
            root / "x" / "y",
            root / "x" / "y" / "z",
        ]
        under = {p.path.name for p in store.list_photos(root=root / "2019")}
        assert under == {"b.jpg", "c.jpg"}  # not 2019b's d.jpg
        assert {p.path.name for p in store.list_photos(root=root / "x")} == {"e.jpg"}
        assert len(store.list_photos(root=root)) == 5
