"""The CLI as a script sees it: --json shapes, plain text, and one-sentence errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def visuallens(*args: str, library: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visuallens_app.cli", *args, "--library", str(library)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )


def test_index_search_similar_status_json(library_dir: Path, photo_dir: Path) -> None:
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = visuallens(
        "index", str(photo_dir), "--json", "--encoder", "embedded", library=library_dir
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["indexed"] == 5
    assert report["unchanged"] == 0
    assert report["removed"] == 0
    assert [Path(f["path"]).name for f in report["failed"]] == ["broken.jpg"]
    assert report["encoder"].startswith("embedded")
    assert "embedded" in out.stderr.lower()  # the choice of encoder is said

    out = visuallens(
        "search",
        "a cup of coffee",
        "-k",
        "3",
        "--json",
        "--encoder",
        "embedded",
        library=library_dir,
    )
    hits = json.loads(out.stdout)
    assert Path(hits[0]["path"]).name == "coffee.jpg"
    assert len(hits) == 3
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    out = visuallens(
        "similar",
        str(photo_dir / "chelsea.jpg"),
        "--json",
        "--encoder",
        "embedded",
        library=library_dir,
    )
    hits = json.loads(out.stdout)
    assert "chelsea.jpg" not in {Path(h["path"]).name for h in hits}
    assert len(hits) == 4

    out = visuallens("status", library=library_dir)
    assert "5 available" in out.stdout
    out = visuallens("status", "--json", library=library_dir)
    status = json.loads(out.stdout)
    assert status["photos"]["ok"] == 5
    assert status["photos"]["failed"] == 1
    assert all(status["index_current"].values())
    assert "search index, current" in visuallens("status", library=library_dir).stdout

    # A manifest that claims what the store does not hold (a kill, a hand edit) is not believed.
    (manifest,) = (library_dir / "index").glob("*.json")
    claims = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**claims, "count": 99999999999, "fingerprint": "stale"}))
    out = visuallens("status", library=library_dir)
    assert "99999999999" not in out.stdout
    assert "the saved search index is out of date (rebuilt on the next search)" in out.stdout


def test_errors_are_one_sentence_not_a_traceback(library_dir: Path, tmp_path: Path) -> None:
    # The last stderr line is the whole message: one sentence that says what to do.
    out = visuallens("search", "cat", "--encoder", "embedded", library=library_dir)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "visuallens: No photos are indexed with this encoder yet: "
        "run `visuallens index FOLDER` first."
    )
    missing = tmp_path / "nope.jpg"
    out = visuallens("similar", str(missing), library=library_dir)
    assert out.returncode == 1
    assert out.stderr.strip() == f"visuallens: {missing} does not exist: check the file name."


def test_indexing_an_empty_folder_is_not_an_error(library_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = visuallens("index", str(empty), "--json", "--encoder", "embedded", library=library_dir)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["indexed"] == 0


def test_bad_arguments_are_refused_before_any_model_loads(
    library_dir: Path, tmp_path: Path
) -> None:
    """In-process and with torch never imported: the answer comes at once, not after a load."""
    code = (
        "import sys; from visuallens_app.cli import main; "
        "codes = [main(a) for a in (['index', sys.argv[1]], ['search', '  '], "
        "['search', 'cat', '-k', '0'], ['similar', sys.argv[2]], ['similar', sys.argv[3]])]; "
        "print(codes, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "Pictres"), str(tmp_path), "nothere.jpg"],
        capture_output=True,
        text=True,
        env={**os.environ, "VISUALLENS_LIBRARY": str(library_dir)},
        check=False,
    )
    assert out.stdout.strip() == "[1, 1, 1, 1, 1] False", out.stderr
    assert out.stderr.splitlines() == [
        f"visuallens: {tmp_path / 'Pictres'} does not exist: check the folder name.",
        'visuallens: Give a text to search for, e.g. visuallens search "a red bicycle".',
        "visuallens: -k must be at least 1 (it is 0).",
        f"visuallens: {tmp_path} is a folder; give one photo to find similar ones.",
        "visuallens: nothere.jpg does not exist: check the file name.",
    ]


def test_a_mistyped_folder_gets_one_sentence(library_dir: Path, tmp_path: Path) -> None:
    out = visuallens(
        "index", str(tmp_path / "Pictres"), "--encoder", "embedded", library=library_dir
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"visuallens: {tmp_path / 'Pictres'} does not exist: check the folder name."
    )


def _index_dir_made_unwritable(library: Path, how: str) -> None:
    """Empty ``library/index`` and make it a folder nothing can be written into."""
    index = library / "index"
    shutil.rmtree(index)
    if how == "chmod":
        index.mkdir()
        index.chmod(0o555)
    else:  # sysfs refuses new files even to root, for whom chmod changes nothing
        index.symlink_to("/sys/kernel", target_is_directory=True)


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(
            "chmod",
            marks=pytest.mark.skipif(
                not hasattr(os, "geteuid") or os.geteuid() == 0,
                reason="root writes into read-only folders",
            ),
        ),
        pytest.param(
            "read-only file system",
            marks=pytest.mark.skipif(
                not os.access("/sys/kernel", os.F_OK), reason="needs Linux sysfs"
            ),
        ),
    ],
)
def test_search_and_index_work_while_the_index_cache_cannot_be_saved(
    library_dir: Path, photo_dir: Path, how: str
) -> None:
    out = visuallens("index", str(photo_dir), "--encoder", "embedded", library=library_dir)
    assert out.returncode == 0, out.stderr
    _index_dir_made_unwritable(library_dir, how)
    try:
        out = visuallens(
            "search", "a cup of coffee", "--json", "--encoder", "embedded", library=library_dir
        )
        assert out.returncode == 0, out.stderr
        assert Path(json.loads(out.stdout)[0]["path"]).name == "coffee.jpg"
        said = [line for line in out.stderr.splitlines() if "index could not be saved" in line]
        assert len(said) == 1, out.stderr
        assert said[0].endswith("searches work without it, and it is rebuilt next time.")

        (photo_dir / "again.jpg").write_bytes((photo_dir / "coffee.jpg").read_bytes())
        out = visuallens("index", str(photo_dir), "--encoder", "embedded", library=library_dir)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Indexed 1, unchanged 5")
        assert sum("index could not be saved" in line for line in out.stderr.splitlines()) == 1
    finally:
        if how == "chmod":
            (library_dir / "index").chmod(0o755)


def test_a_reader_that_stops_early_ends_the_command_quietly(
    library_dir: Path, tmp_path: Path
) -> None:
    # `visuallens status | true`, made deterministic: the reader is gone before any output.
    read, write = os.pipe()
    os.close(read)
    try:
        for args in (["status"], ["status", "--json"]):
            out = subprocess.run(
                [sys.executable, "-m", "visuallens_app.cli", *args, "--library", str(library_dir)],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(os.environ),
                check=False,
            )
            assert out.stderr == ""
            assert out.returncode == 141  # what a shell reports for a tool stopped by SIGPIPE
    finally:
        os.close(write)
    assert not (tmp_path / "cache" / "logs").exists()  # no crash log


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_items_that_are_not_files_are_counted_in_one_line(
    library_dir: Path, photo_dir: Path
) -> None:
    os.mkfifo(photo_dir / "pipe.jpg")
    os.mkfifo(photo_dir / "pipe 2.jpg")
    (photo_dir / "null.png").symlink_to(os.devnull)

    out = visuallens("index", str(photo_dir), "--encoder", "embedded", library=library_dir)

    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1:] == [
        "Skipped 3 items named like photos that are not files (named pipes, devices, sockets)."
    ]
    out = visuallens(
        "index", str(photo_dir), "--json", "--encoder", "embedded", library=library_dir
    )
    report = json.loads(out.stdout)
    assert (report["not_files"], report["failed"]) == (3, [])


@pytest.mark.parametrize("page", [2, 6])
def test_a_damaged_database_says_how_to_recover(
    library_dir: Path, photo_dir: Path, page: int
) -> None:
    out = visuallens("index", str(photo_dir), "--encoder", "embedded", library=library_dir)
    assert out.returncode == 0, out.stderr
    database = library_dir / "library.sqlite"
    with open(database, "r+b") as db:  # random bytes over one page, as a failing disk leaves
        db.seek(4096 * (page - 1))
        db.write(os.urandom(4096))
    out = visuallens("status", library=library_dir)
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("visuallens: The library's database is damaged")
    assert "SQLite's integrity check" in line  # PRAGMA quick_check's evidence, in the sentence
    assert ".recover" in line
    assert "photos are untouched" in line


def _index_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visuallens_app.cli", "index", *args, "--encoder", "embedded"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_folders_belong_to_the_library_they_were_indexed_into(
    library_dir: Path, photo_dir: Path, tmp_path: Path
) -> None:
    """Issue 11 item 10: VISUALLENS_LIBRARY put its folder into the app's own folder list."""
    from visuallens_app.settings import Settings

    env = dict(os.environ)  # VISUALLENS_LIBRARY names a library of its own
    out = _index_cli(env, str(photo_dir))
    assert out.returncode == 0, out.stderr
    assert Settings.load().photo_folders == []

    own = tmp_path / "own-library"  # the library the settings (and so the app) use
    Settings(library_dir=str(own)).save()
    env.pop("VISUALLENS_LIBRARY")
    out = _index_cli(env, str(photo_dir))
    assert out.returncode == 0, out.stderr
    assert Settings.load().photo_folders == [str(photo_dir)]


def test_an_empty_folder_says_no_photos_were_found_and_is_not_added(
    library_dir: Path, tmp_path: Path
) -> None:
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.settings import Settings

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not a photo")
    own = tmp_path / "own-library"
    Settings(library_dir=str(own)).save()
    env = {k: v for k, v in os.environ.items() if k != "VISUALLENS_LIBRARY"}
    out = _index_cli(env, str(empty))
    assert out.returncode == 0, out.stderr
    assert f"No photos found in {empty}" in out.stdout
    assert Settings.load().photo_folders == []
    with PhotoStore(own) as store:
        assert store.roots() == []
    out = _index_cli(env, str(empty), "--json")
    assert json.loads(out.stdout)["empty_roots"] == [str(empty)]


def test_counts_of_one_read_as_one(library_dir: Path, photo_dir: Path) -> None:
    """Issue 11 item 11: "1 files could not be read", "1 moved or duplicate photos"."""
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = visuallens("index", str(photo_dir), "--encoder", "embedded", library=library_dir)
    assert "1 file could not be read:" in out.stdout
    shutil.copy(photo_dir / "chelsea.jpg", photo_dir / "chelsea-copy.jpg")
    out = visuallens("index", str(photo_dir), "--encoder", "embedded", library=library_dir)
    assert "1 moved or duplicate photo kept its vector." in out.stdout
    out = visuallens("status", library=library_dir)
    assert "6 photos" in out.stdout


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["search", "cat", "--kk", "3"], "usage: visuallens search "),
        (["models", "download-clip", "--archx", "B"], "usage: visuallens models download-clip "),
    ],
)
def test_a_mistyped_option_shows_the_commands_own_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from visuallens_app.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert f"unrecognized arguments: {' '.join(argv[-2:])}" in err


def test_visuallens_library_opens_that_library_even_when_the_settings_name_one(
    library_dir: Path, photo_dir: Path, tmp_path: Path
) -> None:
    """The environment's library used to lose to the settings' library_dir: the photos went
    into the settings' library, and its folder into the settings' folder list."""
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.settings import Settings

    own = tmp_path / "own-library"
    Settings(library_dir=str(own)).save()
    out = _index_cli(dict(os.environ), str(photo_dir))  # VISUALLENS_LIBRARY=library_dir
    assert out.returncode == 0, out.stderr
    with PhotoStore(library_dir) as store:
        assert store.roots() == [photo_dir]
        assert store.counts().get("ok") == 5
    assert not (own / "library.sqlite").exists()
    assert Settings.load().photo_folders == []
    out = visuallens("status", "--json", library=library_dir)
    assert json.loads(out.stdout)["library"] == str(library_dir)
