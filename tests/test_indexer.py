"""Indexing as a user lives it: incremental runs, moves, deletes, unplugged drives, kills."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from visuallens_app.jobs import CancelToken, run_to_end
from visuallens_app.library.indexer import IndexReport, index_folders
from visuallens_app.library.search import PhotoSearch, index_name
from visuallens_app.library.store import PhotoStore
from visuallens_app.models.base import Encoder

# A CLIP small enough to build and run in well under a second on two cores.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    from visuallens_app.models.embedded import EmbeddedEncoder

    return EmbeddedEncoder()


def _index(library: Path, encoder: Encoder, *roots: Path, cancel: CancelToken | None = None):
    with PhotoStore(library) as store:
        return run_to_end(index_folders(store, encoder, list(roots), cancel=cancel))


def _paths(library: Path) -> set[str]:
    with PhotoStore(library) as store:
        return {p.path.name for p in store.list_photos()}


def _search(library: Path, encoder: Encoder, text: str) -> list[str]:
    with PhotoStore(library) as store:
        return [h.photo.path.name for h in PhotoSearch(store, encoder).text(text, k=5)]


def test_second_run_reads_nothing_again(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    first = _index(library_dir, encoder, photo_dir)
    assert first.indexed == 5
    assert first.failed == []
    second = _index(library_dir, encoder, photo_dir)
    assert (second.indexed, second.unchanged, second.removed) == (0, 5, 0)


def test_text_search_finds_the_right_photo(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    _index(library_dir, encoder, photo_dir)
    assert _search(library_dir, encoder, "cat")[0] == "chelsea.jpg"
    assert _search(library_dir, encoder, "a cup of coffee")[0] == "coffee.jpg"


def test_rename_and_move_keep_the_vector_and_delete_disappears(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    _index(library_dir, encoder, photo_dir)
    (photo_dir / "trips").mkdir()
    (photo_dir / "chelsea.jpg").rename(photo_dir / "trips" / "my cat.jpg")
    (photo_dir / "rocket.jpg").unlink()
    report = _index(library_dir, encoder, photo_dir)
    assert report.removed == 2  # the old chelsea path and the rocket
    assert report.indexed == 1  # the moved file is read once (for its hash) ...
    assert report.reused_vectors == 1  # ... but not embedded again
    assert _paths(library_dir) == {"my cat.jpg", "coffee.jpg", "astronaut.jpg", "motorcycle.jpg"}
    assert _search(library_dir, encoder, "cat")[0] == "my cat.jpg"
    assert "rocket.jpg" not in _search(library_dir, encoder, "rocket")


def test_changed_file_is_indexed_again(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    _index(library_dir, encoder, photo_dir)
    target = photo_dir / "coffee.jpg"
    Image.open(photo_dir / "chelsea.jpg").save(target)  # the coffee photo is now a cat
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    report = _index(library_dir, encoder, photo_dir)
    assert report.indexed == 1
    assert set(_search(library_dir, encoder, "cat")[:2]) == {"chelsea.jpg", "coffee.jpg"}


def test_unplugged_folder_keeps_its_photos_offline(
    library_dir: Path, photo_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    _index(library_dir, encoder, photo_dir)
    unplugged = tmp_path / "unplugged"
    photo_dir.rename(unplugged)
    report = _index(library_dir, encoder, photo_dir)
    assert report.removed == 0
    assert report.offline_roots == [str(photo_dir)]
    with PhotoStore(library_dir) as store:
        assert store.counts()["offline"] == 5
    unplugged.rename(photo_dir)
    report = _index(library_dir, encoder, photo_dir)
    assert (report.indexed, report.unchanged) == (0, 5)
    with PhotoStore(library_dir) as store:
        assert store.counts()["ok"] == 5


def test_bad_files_are_reported_and_never_stop_the_run(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    (photo_dir / "empty.jpg").write_bytes(b"")
    (photo_dir / "noise.jpg").write_bytes(os.urandom(5000))
    good = (photo_dir / "coffee.jpg").read_bytes()
    (photo_dir / "cut.jpg").write_bytes(good[: len(good) // 3])
    (photo_dir / "notes.txt").write_text("not a photo")  # silently skipped
    report = _index(library_dir, encoder, photo_dir)
    assert report.indexed == 5
    failed = {Path(p).name: reason for p, reason in report.failed}
    assert set(failed) == {"empty.jpg", "noise.jpg", "cut.jpg"}
    assert all(reason and "\n" not in reason for reason in failed.values())
    again = _index(library_dir, encoder, photo_dir)
    assert again.indexed == 0
    assert {Path(p).name for p, _ in again.failed} == set(failed)


def test_photos_lost_by_a_recovered_database_are_indexed_again(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    """`sqlite3 .recover` (what the damaged-library sentence suggests) or an old backup can keep
    the generation counter while photo rows are gone: the next run must find them again."""
    import sqlite3

    assert _index(library_dir, encoder, photo_dir).indexed == 5
    assert _index(library_dir, encoder, photo_dir).unchanged == 5  # the re-scan's snapshot
    with sqlite3.connect(library_dir / "library.sqlite") as db:
        db.execute("DELETE FROM photos WHERE path LIKE '%coffee.jpg'")  # meta is untouched
    assert "coffee.jpg" not in _paths(library_dir)
    again = _index(library_dir, encoder, photo_dir)
    assert (again.indexed, again.unchanged) == (1, 4)
    assert "coffee.jpg" in _paths(library_dir)


def test_cancel_keeps_written_batches_and_resumes(
    library_dir: Path, photo_dir: Path, encoder: Encoder, sample_images: dict[str, Image.Image]
) -> None:
    for i in range(70):
        ImageOps.mirror(sample_images["astronaut"]).rotate(i).save(photo_dir / f"a{i:03}.jpg")
    cancel = CancelToken()
    with PhotoStore(library_dir) as store:
        job = index_folders(store, encoder, [photo_dir], cancel=cancel)
        for progress in job:
            if progress.stage == "index" and progress.done >= 32:
                cancel.cancel()
        # the generator returned: everything written so far is in the store
        assert 32 <= store.counts()["ok"] < 75
    report = _index(library_dir, encoder, photo_dir)
    assert report.unchanged >= 32
    assert report.indexed + report.unchanged == 75
    assert len(_paths(library_dir)) == 75


def _wait_until_committed(library: Path, proc: subprocess.Popen[Any], n: int) -> None:
    """Return once ``n`` photos are committed to ``library`` (or ``proc`` ended, or 120 s).

    A cheap read-only look every 20 ms: opening a PhotoStore per poll was slow enough on a
    loaded machine that the whole run finished before the test could interrupt it.
    """
    db = library / "library.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                    done = conn.execute("SELECT count(*) FROM photos WHERE state = 'ok'")
                    if done.fetchone()[0] >= n:
                        return
            except sqlite3.Error:  # the library is still being created
                pass
        time.sleep(0.02)


def test_killed_run_resumes_to_the_same_state(
    library_dir: Path, photo_dir: Path, tmp_path: Path, sample_images: dict[str, Image.Image]
) -> None:
    """SIGKILL mid-run (no cleanup at all), run again: same photos, no duplicates, no loss."""
    for i in range(60):
        sample_images["rocket"].rotate(i * 3).save(photo_dir / f"r{i:03}.jpg")
    cmd = [sys.executable, "-m", "visuallens_app.cli", "index", str(photo_dir), "--json"]
    cmd += ["--encoder", "embedded", "--library", str(library_dir)]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_until_committed(library_dir, proc, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with PhotoStore(library_dir) as store:
        partial = store.counts()["ok"]
    assert 0 < partial < 65
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    resumed = json.loads(out.stdout)
    assert resumed["unchanged"] == partial
    assert resumed["indexed"] + resumed["unchanged"] == 65

    # An uninterrupted run into a fresh library ends in the same state.
    fresh = tmp_path / "fresh"
    subprocess.run([*cmd[:-2], "--library", str(fresh)], env=env, capture_output=True, check=True)
    with PhotoStore(library_dir) as a, PhotoStore(fresh) as b:
        rows_a = {(p.path, p.content_hash) for p in a.list_photos()}
        rows_b = {(p.path, p.content_hash) for p in b.list_photos()}
        assert rows_a == rows_b
        assert len(rows_a) == 65
        ids_a, _ = a.vectors(a.encoders().popitem()[0])
        assert len(ids_a) == 65


def test_faiss_file_deleted_or_corrupted_is_rebuilt(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    _index(library_dir, encoder, photo_dir)
    with PhotoStore(library_dir) as store:
        PhotoSearch(store, encoder).index()
        files = [p for p in store.index_dir.iterdir() if p.name.startswith(index_name(encoder.id))]
    assert files
    for f in files:
        f.write_bytes(b"garbage")
    assert _search(library_dir, encoder, "cat")[0] == "chelsea.jpg"
    shutil.rmtree(library_dir / "index")
    assert _search(library_dir, encoder, "a cup of coffee")[0] == "coffee.jpg"


def test_switching_encoder_never_mixes_spaces(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    from visuallens_app.models.clip import ClipEncoder

    _index(library_dir, encoder, photo_dir)
    tiny = ClipEncoder.random(model_cfg=TINY_CLIP)
    report = _index(library_dir, tiny, photo_dir)
    assert report.indexed == 5  # every photo embedded again, into its own space
    with PhotoStore(library_dir) as store:
        per_encoder = store.encoders()
        assert per_encoder == {encoder.id: 5, tiny.id: 5}
        _, vectors = store.vectors(tiny.id)
        assert vectors.shape == (5, tiny.dim)
    assert _search(library_dir, encoder, "cat")[0] == "chelsea.jpg"


def test_a_folder_that_cannot_be_listed_keeps_its_photos(
    library_dir: Path, photo_dir: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share that drops mid-scan, an I/O error: absence the scan cannot vouch for."""
    sub = photo_dir / "trip"
    sub.mkdir()
    (photo_dir / "coffee.jpg").rename(sub / "coffee.jpg")
    _index(library_dir, encoder, photo_dir)
    real_scandir = os.scandir

    def failing_scandir(path: object) -> object:
        if os.fspath(path) == str(sub):  # type: ignore[arg-type]
            raise OSError(5, "Input/output error")
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", failing_scandir)
    report = _index(library_dir, encoder, photo_dir)
    assert report.removed == 0
    assert "coffee.jpg" in _paths(library_dir)
    assert any(Path(p) == sub for p, _ in report.failed)


def test_an_empty_mount_point_is_offline_not_a_deletion(
    library_dir: Path, photo_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    _index(library_dir, encoder, photo_dir)
    for photo in photo_dir.iterdir():  # the drive is unmounted: its folder is there, empty
        photo.rename(tmp_path / photo.name)
    report = _index(library_dir, encoder, photo_dir)
    assert report.removed == 0
    assert report.offline_roots == [str(photo_dir)]
    with PhotoStore(library_dir) as store:
        assert store.counts()["offline"] == 5


def test_nested_folders_are_walked_once_and_stay_unchanged(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    sub = photo_dir / "trip"
    sub.mkdir()
    (photo_dir / "rocket.jpg").rename(sub / "rocket.jpg")
    first = _index(library_dir, encoder, photo_dir, sub)
    assert first.indexed == 5
    again = _index(library_dir, encoder, photo_dir, sub)
    assert (again.indexed, again.unchanged, again.removed) == (0, 5, 0)


def test_a_mistyped_folder_is_refused_and_not_remembered(
    library_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    from visuallens_app.errors import LibraryError

    with pytest.raises(LibraryError, match="does not exist"):
        _index(library_dir, encoder, tmp_path / "Pictres")
    with PhotoStore(library_dir) as store:
        assert store.roots() == []


def test_a_folder_removed_while_indexing_does_not_come_back(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    with PhotoStore(library_dir) as store:
        job = index_folders(store, encoder, [photo_dir])
        for progress in job:
            if progress.stage == "index":
                with PhotoStore(library_dir) as other:  # the user removes the folder
                    other.remove_root(photo_dir)
        assert store.list_photos() == []


def test_a_file_that_could_not_be_read_for_now_is_retried(
    library_dir: Path, photo_dir: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visuallens_app.library import decode

    real_read = decode._read

    def denied(path: Path, expected_size: int | None = None) -> bytes:
        if path.name == "coffee.jpg":
            raise decode.DecodeError("permission denied", transient=True)
        return real_read(path, expected_size)

    monkeypatch.setattr(decode, "_read", denied)
    report = _index(library_dir, encoder, photo_dir)
    assert [(Path(p).name, why) for p, why in report.failed] == [
        ("coffee.jpg", "permission denied")
    ]
    monkeypatch.setattr(decode, "_read", real_read)  # the user fixed the permissions
    report = _index(library_dir, encoder, photo_dir)
    assert report.indexed == 1
    assert report.failed == []


def _index_swapping(
    library: Path, encoder: Encoder, root: Path, swap: Callable[[], None]
) -> IndexReport:
    """Index ``root``, calling ``swap`` once the scan is over and before anything is decoded.

    Makes "the file changed between the scan and the decode" deterministic: the job yields its
    first "index" progress after the scan and before it reads any photo.
    """
    with PhotoStore(library) as store:
        job = index_folders(store, encoder, [root])
        for progress in job:
            if progress.stage == "index":
                swap()
                break
        return run_to_end(job)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_photo_replaced_by_a_named_pipe_after_the_scan_does_not_hang(
    library_dir: Path,
    photo_dir: Path,
    encoder: Encoder,
    fifo_released_after_a_while: Callable[[Path], AbstractContextManager[None]],
) -> None:
    coffee = photo_dir / "coffee.jpg"

    def swap() -> None:
        coffee.unlink()
        os.mkfifo(coffee)

    with fifo_released_after_a_while(coffee):
        report = _index_swapping(library_dir, encoder, photo_dir, swap)

    assert report.indexed == 4
    assert report.failed == [(str(coffee), "not a regular file (a named pipe)")]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_photo_replaced_by_a_link_to_dev_zero_after_the_scan_is_not_read(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    coffee = photo_dir / "coffee.jpg"

    def swap() -> None:
        coffee.unlink()
        coffee.symlink_to("/dev/zero")

    report = _index_swapping(library_dir, encoder, photo_dir, swap)

    assert report.indexed == 4
    assert report.failed == [(str(coffee), "not a regular file (a device)")]


def test_a_photo_replaced_by_a_much_larger_file_after_the_scan_is_read_next_time(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    coffee = photo_dir / "coffee.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), np.uint8)

    def swap() -> None:  # e.g. an editor exporting the full-size photo over the preview
        Image.fromarray(noise).save(coffee, quality=100)
        assert coffee.stat().st_size > 2 << 20

    report = _index_swapping(library_dir, encoder, photo_dir, swap)

    assert report.indexed == 4
    assert report.failed == [
        (str(coffee), "file changed since the scan (larger now); it is read next time")
    ]
    again = _index(library_dir, encoder, photo_dir)
    assert (again.indexed, again.failed) == (1, [])


def test_a_photo_with_damaged_exif_is_indexed_with_its_note_once(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS R5 with a long model name"
    whole = exif.tobytes()
    with Image.open(photo_dir / "coffee.jpg") as coffee:
        coffee.save(photo_dir / "coffee.jpg", quality=90, exif=whole[: len(whole) - 20])

    report = _index(library_dir, encoder, photo_dir)

    assert (report.indexed, report.failed) == (5, [])
    assert report.notes == [
        (
            str(photo_dir / "coffee.jpg"),
            "damaged EXIF data (Truncated File Read); some details may be missing",
        )
    ]
    assert report.as_json()["notes"] == [
        {"path": path, "note": note} for path, note in report.notes
    ]


class _InterruptedAfter:
    """The real encoder, with a user who interrupts once ``photos`` have been encoded: the hook
    fires inside the encode call that would go past them, as Ctrl-C or Cancel would."""

    def __init__(self, encoder: Encoder, photos: int, interrupt: Callable[[], None]) -> None:
        self._encoder = encoder
        self._left = photos
        self._interrupt = interrupt
        self.encoded = 0
        self.id, self.dim, self.input_size = encoder.id, encoder.dim, encoder.input_size

    def encode_images(self, images):
        if len(images) > self._left:
            self._interrupt()
        vectors = self._encoder.encode_images(images)
        self._left -= len(images)
        self.encoded += len(images)
        return vectors

    def encode_texts(self, texts):
        return self._encoder.encode_texts(texts)


def _many_photos(photo_dir: Path, sample_images: dict[str, Image.Image], n: int) -> None:
    for i in range(n):
        ImageOps.mirror(sample_images["coffee"]).rotate(i + 1).save(photo_dir / f"c{i:03}.jpg")


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_ctrl_c_while_encoding_keeps_every_photo_already_encoded(
    library_dir: Path, photo_dir: Path, encoder: Encoder, sample_images: dict[str, Image.Image]
) -> None:
    """Issue 11 item 9: Ctrl-C before the first 32 photos were done used to keep none."""
    _many_photos(photo_dir, sample_images, 25)  # 30 photos: fewer than one full batch
    user = _InterruptedAfter(encoder, 20, _raise_keyboard_interrupt)
    with PhotoStore(library_dir) as store, pytest.raises(KeyboardInterrupt):
        run_to_end(index_folders(store, user, [photo_dir]))
    assert user.encoded == 20
    with PhotoStore(library_dir) as store:
        assert store.counts()["ok"] == 20  # every photo with a vector, none without
        ids, _ = store.vectors(encoder.id)
        assert len(ids) == 20
    report = _index(library_dir, encoder, photo_dir)
    assert (report.unchanged, report.indexed) == (20, 10)


def test_cancel_while_encoding_keeps_the_encoded_photos_and_says_how_many(
    library_dir: Path, photo_dir: Path, encoder: Encoder, sample_images: dict[str, Image.Image]
) -> None:
    _many_photos(photo_dir, sample_images, 25)
    cancel = CancelToken()
    user = _InterruptedAfter(encoder, 20, cancel.cancel)  # Cancel pressed during an encode
    with PhotoStore(library_dir) as store:
        report = run_to_end(index_folders(store, user, [photo_dir], cancel=cancel))
        kept = store.counts()["ok"]
    assert report.cancelled
    # The encode call under way when Cancel was pressed finishes and is kept, no more starts.
    assert report.indexed == kept == user.encoded
    assert 20 < kept < 30


def test_progress_counts_photos_as_they_are_encoded(
    library_dir: Path, photo_dir: Path, encoder: Encoder, sample_images: dict[str, Image.Image]
) -> None:
    """Issue 11 item 8: the count moved in steps of 32 and stood at 0 through the first batch."""
    _many_photos(photo_dir, sample_images, 35)
    counts: list[int] = []
    with PhotoStore(library_dir) as store:
        job = index_folders(store, encoder, [photo_dir])
        for progress in job:
            if progress.stage == "index":
                counts.append(progress.done)
    assert counts[-1] == 40
    assert min(c for c in counts if c > 0) <= 8  # the first photos show before a batch of 32


def test_ctrl_c_on_the_command_line_says_how_many_photos_are_kept(
    library_dir: Path, photo_dir: Path, sample_images: dict[str, Image.Image]
) -> None:
    _many_photos(photo_dir, sample_images, 60)
    cmd = [sys.executable, "-m", "visuallens_app.cli", "index", str(photo_dir)]
    cmd += ["--encoder", "embedded", "--library", str(library_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_committed(library_dir, proc, 4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping after the photos being encoded" in err
    with PhotoStore(library_dir) as store:
        kept = store.counts()["ok"]
    assert 4 <= kept < 65
    assert f"Cancelled: the {kept} photos indexed before that are kept" in out, out


def test_deleted_thumbnails_are_made_again_when_asked_for(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    """Issue 12 item 10: a re-scan said "unchanged" and the thumbnails never came back."""
    _index(library_dir, encoder, photo_dir)
    with PhotoStore(library_dir) as store:
        photos = store.list_photos()
        shutil.rmtree(store.thumbnails.root)
        report = _index(library_dir, encoder, photo_dir)
        assert report.unchanged == 5  # the re-scan does not look at thumbnails at all
        assert not store.thumbnails.root.exists()
        for photo in photos:
            path = store.thumbnails.ensure(photo.content_hash, photo.path)
            assert path is not None
            with Image.open(path) as thumbnail:
                assert max(thumbnail.size) == 256
        # A photo whose content changed since it was indexed gets no thumbnail under the old
        # hash (the next index run gives it one under the new).
        changed = photos[0]
        store.thumbnails.remove(changed.content_hash)
        Image.new("RGB", (64, 64), "red").save(changed.path, "JPEG")
        assert store.thumbnails.ensure(changed.content_hash, changed.path) is None


def test_search_json_gives_each_result_its_thumbnail_rebuilt_if_deleted(
    library_dir: Path, photo_dir: Path
) -> None:
    base = [sys.executable, "-m", "visuallens_app.cli"]
    lib = ["--library", str(library_dir), "--encoder", "embedded"]
    subprocess.run([*base, "index", str(photo_dir), *lib], check=True, capture_output=True)
    shutil.rmtree(library_dir / "thumbnails")
    out = subprocess.run(
        [*base, "search", "a cat", "-k", "3", "--json", *lib],
        check=True,
        capture_output=True,
        text=True,
    )
    hits = json.loads(out.stdout)
    assert len(hits) == 3
    for hit in hits:
        assert Path(hit["thumbnail"]).is_file()


def test_indexing_keeps_the_classifier_signals_and_clip_leaves_them_unknown(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    from samples import photographed_page

    from visuallens_app.lens.history import History
    from visuallens_app.models.clip import ClipEncoder

    photographed_page().save(photo_dir / "page.jpg", quality=90)
    _index(library_dir, encoder, photo_dir)
    tiny = ClipEncoder.random(model_cfg=TINY_CLIP)
    _index(library_dir, tiny, photo_dir)
    with PhotoStore(library_dir) as store:
        history = History.from_store(store, encoder.id)
        clip_history = History.from_store(store, tiny.id)
    names = [p.name for p in history.paths]
    page = names.index("page.jpg")
    photos = [i for i in range(len(names)) if i != page]
    assert np.isfinite(history.confidence).all()
    assert np.isfinite(history.document).all()
    assert history.document[page] > 0.2 > history.document[photos].max()
    assert names.index("coffee.jpg") == int(np.argmax(history.confidence))  # espresso, 0.9
    assert np.isnan(clip_history.confidence).all()
    assert np.isnan(clip_history.document).all()
    assert history.subset([page]).document[0] == history.document[page]


def test_a_library_made_before_the_signals_opens_with_them_unknown(
    library_dir: Path, photo_dir: Path, encoder: Encoder
) -> None:
    import sqlite3

    from visuallens_app.lens.history import History

    _index(library_dir, encoder, photo_dir)
    # Undo migration 004 by hand, as in a library written by the previous release.
    conn = sqlite3.connect(library_dir / "library.sqlite")
    conn.execute("ALTER TABLE vectors DROP COLUMN confidence")
    conn.execute("ALTER TABLE vectors DROP COLUMN document")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_photo_signals'")
    conn.commit()
    conn.close()
    with PhotoStore(library_dir) as store:
        history = History.from_store(store, encoder.id)
    assert len(history) == 5
    assert np.isnan(history.confidence).all()
