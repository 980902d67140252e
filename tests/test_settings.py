"""Settings files as people and other versions leave them: checked, migrated, never lost."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from visuallens_app.errors import SettingsError
from visuallens_app.settings import (
    LEGACY_WINDOW_GEOMETRY,
    MIGRATIONS,
    SCHEMA_VERSION,
    Settings,
    config_dir,
)


@pytest.fixture
def settings_file(library_dir: Path) -> Path:
    """settings.json in the test's isolated config dir (not written yet)."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "settings.json"


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def saved(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_a_single_folder_written_as_a_string_is_a_one_folder_list(settings_file: Path) -> None:
    write(settings_file, {"schema_version": 2, "photo_folders": "~/Pictures"})
    settings = Settings.load()
    assert settings.photo_folders == ["~/Pictures"]  # not "~", "/", "P", ...
    assert settings.warnings == ()
    settings.save()
    assert saved(settings_file)["photo_folders"] == ["~/Pictures"]


def test_an_invalid_value_falls_back_to_its_default_and_the_file_is_kept(
    settings_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original = {"schema_version": 2, "retrieval_size": "sixty", "device": "cpu"}
    write(settings_file, original)
    with caplog.at_level(logging.WARNING, logger="visuallens_app.settings"):
        settings = Settings.load()
    assert settings.retrieval_size == 64
    assert settings.device == "cpu"  # the other values still load
    bad = settings_file.with_name("settings.json.bad")
    assert settings.warnings == (
        'The setting retrieval_size in settings.json is "sixty", not a whole number; using the '
        f"default, 64; the file is kept as {bad}.",
    )
    assert settings.warnings[0] in caplog.messages
    assert json.loads(bad.read_text(encoding="utf-8")) == original
    settings.save()  # the rewrite does not touch the copy of what the user wrote
    assert saved(settings_file)["retrieval_size"] == 64
    assert json.loads(bad.read_text(encoding="utf-8")) == original
    assert "warnings" not in saved(settings_file)


@pytest.mark.parametrize(
    ("field", "value", "kept"),
    [
        ("retrieval_size", 4, 64),  # below the Settings view's range
        ("retrieval_size", True, 64),  # JSON true is not a number
        ("retrieval_size", 64.5, 64),
        ("library_dir", 5, ""),
        ("photo_folders", {"a": "b"}, []),
        ("photo_folders", ["/photos", 3], ["/photos"]),  # the good folders stay
        ("schema_version", "two", SCHEMA_VERSION),  # read as version 1, then migrated
    ],
)
def test_each_invalid_value_is_named_in_one_warning(
    settings_file: Path, field: str, value: Any, kept: Any
) -> None:
    write(settings_file, {"schema_version": 2, field: value})
    settings = Settings.load()
    assert getattr(settings, field) == kept
    assert len(settings.warnings) == 1
    assert settings.warnings[0].startswith(f"The setting {field} in settings.json ")
    assert settings_file.with_name("settings.json.bad").exists()


@pytest.mark.parametrize(
    ("content", "what"),
    [("[1, 2]", "holds a list, not an object of settings"), ("{nope", "is not valid JSON")],
)
def test_a_file_that_is_not_an_object_of_settings_gives_the_defaults(
    settings_file: Path, content: str, what: str
) -> None:
    settings_file.write_text(content, encoding="utf-8")
    settings = Settings.load()
    assert settings == Settings()
    (warning,) = settings.warnings
    assert f"The settings file {settings_file} {what}" in warning
    bad = settings_file.with_name("settings.json.bad")
    assert warning.endswith(f"the file is kept as {bad}.")
    assert bad.read_text(encoding="utf-8") == content


def test_a_file_from_a_newer_version_loads_what_it_can_and_keeps_the_rest(
    settings_file: Path,
) -> None:
    newer = {
        "schema_version": SCHEMA_VERSION + 1,
        "photo_folders": ["/photos"],
        "retrieval_size": 32,
        "theme": "dark",
        "panels": {"tldr": {"threshold": 0.5}},
    }
    write(settings_file, newer)
    settings = Settings.load()
    assert settings.photo_folders == ["/photos"]
    assert settings.retrieval_size == 32
    (warning,) = settings.warnings
    assert "written by a newer VisualLens" in warning
    assert not settings_file.with_name("settings.json.bad").exists()

    settings.photo_folders.append("/more")
    settings.save()
    after = saved(settings_file)
    assert after["theme"] == "dark"  # the newer version's settings survive this one
    assert after["panels"] == {"tldr": {"threshold": 0.5}}
    assert after["schema_version"] == SCHEMA_VERSION + 1  # so the newer app does not re-migrate
    assert after["photo_folders"] == ["/photos", "/more"]


def test_unknown_keys_in_a_current_file_are_kept_on_save(settings_file: Path) -> None:
    write(settings_file, {"schema_version": SCHEMA_VERSION, "experimental": [1, 2]})
    settings = Settings.load()
    assert settings.warnings == ()
    settings.save()
    assert saved(settings_file)["experimental"] == [1, 2]


#: A file as each older version wrote it; a version 1 file did not always have schema_version.
OLDER_FILES: dict[str, dict[str, Any]] = {
    "version 1": {
        "schema_version": 1,
        "photo_folders": ["/photos"],
        "library_dir": "/lib",
        "encoder": "embedded",
        "device": "cpu",
        "retrieval_size": 48,
        "catalog_dir": "",
        "captioner_dir": "/models/blip",
        "window_geometry": "AdnQywADAAA=",
    },
    "version 1 without schema_version": {
        "photo_folders": ["/photos"],
        "library_dir": "/lib",
        "encoder": "embedded",
        "device": "cpu",
        "retrieval_size": 48,
        "captioner_dir": "/models/blip",
        "window_geometry": "AdnQywADAAA=",
    },
    "version 2": {
        "schema_version": 2,
        "photo_folders": ["/photos"],
        "library_dir": "/lib",
        "encoder": "embedded",
        "device": "cpu",
        "retrieval_size": 48,
        "captioner_dir": "/models/blip",
        LEGACY_WINDOW_GEOMETRY: "AdnQywADAAA=",
    },
}


def test_every_older_version_has_a_migration_and_a_test_file() -> None:
    assert set(MIGRATIONS) == set(range(1, SCHEMA_VERSION))
    versions = {data.get("schema_version", 1) for data in OLDER_FILES.values()}
    assert versions == set(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("name", OLDER_FILES)
def test_an_older_file_is_migrated_once(settings_file: Path, name: str) -> None:
    write(settings_file, OLDER_FILES[name])
    settings = Settings.load()
    assert settings.warnings == ()
    assert (settings.photo_folders, settings.library_dir, settings.encoder) == (
        ["/photos"],
        "/lib",
        "embedded",
    )
    assert (settings.device, settings.retrieval_size) == ("cpu", 48)
    # The old captions model stays the captions model; nothing else uses it.
    assert settings.vlm_overrides == {"captions": "/models/blip"}
    assert settings.vlm_for("captions") == "/models/blip"
    assert settings.vlm_for("steering") == ""
    assert settings.legacy_window_geometry == "AdnQywADAAA="  # handed to the GUI's QSettings
    assert settings.schema_version == SCHEMA_VERSION

    settings.save()
    after = saved(settings_file)
    assert after["schema_version"] == SCHEMA_VERSION
    assert "window_geometry" not in after  # GUI state is no longer core settings
    assert "legacy_window_geometry" not in after
    assert "captioner_dir" not in after
    again = Settings.load()
    assert again.legacy_window_geometry == ""  # migrated once, not at every start
    assert again.retrieval_size == 48
    assert not settings_file.with_name("settings.json.bad").exists()


@pytest.fixture
def read_only_config(settings_file: Path) -> Iterator[Path]:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    write(settings_file, {"schema_version": SCHEMA_VERSION, "photo_folders": ["/photos"]})
    folder = settings_file.parent
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        yield folder
    finally:
        folder.chmod(stat.S_IRWXU)


def test_a_read_only_config_folder_loads_but_saving_says_why_not(
    settings_file: Path, read_only_config: Path
) -> None:
    settings = Settings.load()
    assert settings.photo_folders == ["/photos"]
    settings.photo_folders.append("/more")
    with pytest.raises(SettingsError) as raised:
        settings.save()
    message = str(raised.value)
    assert message == (
        f"The settings cannot be saved: the folder {read_only_config} is not writable "
        "(permission denied); check its permissions or set VISUALLENS_CONFIG_DIR to a folder "
        "you own."
    )
    assert saved(settings_file)["photo_folders"] == ["/photos"]  # the file is untouched
    assert [p.name for p in read_only_config.iterdir()] == ["settings.json"]


def test_the_cli_says_why_it_cannot_remember_a_folder(
    settings_file: Path, read_only_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from visuallens_app.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["index", str(empty), "--encoder", "embedded"])
    err = capsys.readouterr().err
    assert code == 0  # the folder was indexed; only remembering it failed
    assert f"visuallens: The settings cannot be saved: the folder {read_only_config}" in err
    assert "Traceback" not in err


def test_the_library_named_by_the_environment_wins_over_the_settings_one(
    library_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`visuallens-app --library DIR` sets VISUALLENS_LIBRARY; settings naming a library of
    their own used to win, so the window opened the settings' library instead."""
    own = tmp_path / "own-library"
    Settings(library_dir=str(own)).save()
    settings = Settings.load()
    assert settings.library_path == library_dir  # the environment's, as asked
    assert settings.apps_library == own  # the settings still name their own
    assert not settings.is_apps_library(library_dir)
    assert settings.is_apps_library(own)
    monkeypatch.delenv("VISUALLENS_LIBRARY")
    assert Settings.load().library_path == own


def test_one_library_spelled_two_ways_is_the_apps_library(
    library_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own-library"
    own.mkdir()
    link = tmp_path / "link-to-library"
    link.symlink_to(own)
    settings = Settings(library_dir=str(own))
    assert settings.is_apps_library(f"{own}{os.sep}")
    assert settings.is_apps_library(link)
    monkeypatch.chdir(tmp_path)
    assert settings.is_apps_library(Path("own-library"))
    assert not settings.is_apps_library(tmp_path / "another")
    # No library in the settings: the app's is the user data dir, not the environment's.
    assert not Settings().is_apps_library(library_dir)
