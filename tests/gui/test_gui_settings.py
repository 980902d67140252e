"""Settings persist, the window comes back where it was, and errors never become tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from visuallens_app.settings import Settings


def test_settings_dialog_saves_and_applies(
    qtbot, make_window, library_copy, tmp_path: Path
) -> None:
    from visuallens_app.gui.panels.settings import SettingsDialog

    _library, photos = library_copy
    other = tmp_path / "more-photos"
    other.mkdir()
    window = make_window([photos])
    dialog = SettingsDialog(window.session, window)
    qtbot.addWidget(dialog)
    assert "embedded encoder" in dialog.encoder_reason.text()  # which model is active, and why
    dialog.retrieval.setValue(32)
    dialog.device.setCurrentText("cpu")
    dialog.add_folder_path(str(other))
    with qtbot.waitSignal(window.session.encoder_ready, timeout=60_000):
        dialog.accept()  # the device changed: the model reloads
    saved = Settings.load()
    assert saved.retrieval_size == 32
    assert saved.device == "cpu"
    assert saved.photo_folders == [str(photos), str(other)]
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=30_000)


def test_clip_download_failure_is_one_sentence(qtbot, make_window, monkeypatch) -> None:
    from visuallens_app.errors import ModelUnavailableError
    from visuallens_app.gui.panels.settings import SettingsDialog
    from visuallens_app.models import registry

    def offline(*_args, **_kwargs):
        raise ModelUnavailableError("Cannot download the CLIP weights: this computer is offline.")

    monkeypatch.setattr(registry, "download_clip_weights", offline)
    window = make_window([])
    dialog = SettingsDialog(window.session, window)
    qtbot.addWidget(dialog)
    dialog.download.click()
    qtbot.waitUntil(lambda: "offline" in dialog.download_status.text(), timeout=10_000)
    assert dialog.download.isEnabled()
    assert not dialog.download_bar.isVisible()


def test_window_geometry_is_restored(qtbot, make_window) -> None:
    from visuallens_app.gui.main_window import GEOMETRY_KEY, MainWindow, window_state
    from visuallens_app.gui.session import LibrarySession

    window = make_window([])
    window.resize(900, 560)
    window.move(40, 30)
    qtbot.waitUntil(lambda: window.height() == 560, timeout=5000)
    window.close()
    assert window_state().value(GEOMETRY_KEY)  # GUI state lives in QSettings...
    assert not hasattr(Settings.load(), "window_geometry")  # ...not in the core settings
    session = LibrarySession(Settings.load(), watch=False)  # as the next start of the app
    again = MainWindow(session)
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    # The offscreen screen is small, so Qt may narrow a restored window to fit; the height and
    # the departure from the default 1280 x 820 show that the saved geometry was applied.
    assert again.height() == 560
    assert again.width() < 1280
    again.close()
    assert session.shutdown()


def test_unexpected_errors_are_logged_and_shown_briefly(
    qtbot, make_window, library_dir: Path
) -> None:
    from visuallens_app.gui.app import install_excepthook, log_file, setup_logging

    window = make_window([])
    setup_logging()
    previous = sys.excepthook
    install_excepthook(window.show_error)
    try:
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = previous
    assert window.banner.isVisible()
    assert "ZeroDivisionError" in window.banner.text and "Traceback" not in window.banner.text  # noqa: PT018
    assert "boom" in log_file().read_text(encoding="utf-8")


def test_the_app_module_does_not_import_torch() -> None:
    code = (
        "import sys, visuallens_app.gui.app, visuallens_app.gui.main_window;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_window_geometry_from_a_version_1_file_moves_into_qsettings(
    qtbot, make_window, library_dir: Path
) -> None:
    import json

    from PySide6.QtCore import QByteArray

    from visuallens_app.gui.main_window import GEOMETRY_KEY, MainWindow, window_state
    from visuallens_app.gui.session import LibrarySession
    from visuallens_app.settings import config_dir

    window = make_window([])
    window.resize(900, 560)
    qtbot.waitUntil(lambda: window.height() == 560, timeout=5000)
    old_geometry = bytes(window.saveGeometry().toBase64().data()).decode("ascii")
    window.close()
    window_state().clear()  # as before the upgrade: QSettings knew nothing yet
    window_state().sync()
    path = config_dir() / "settings.json"
    v1 = json.loads(path.read_text(encoding="utf-8"))
    del v1["schema_version"]
    v1["window_geometry"] = old_geometry
    path.write_text(json.dumps(v1), encoding="utf-8")

    session = LibrarySession(Settings.load(), watch=False)  # the upgraded app starts
    again = MainWindow(session)
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    assert again.height() == 560
    assert window_state().value(GEOMETRY_KEY) == QByteArray.fromBase64(old_geometry.encode())
    again.close()
    assert session.shutdown()


def test_a_settings_file_that_cannot_be_saved_is_one_sentence_in_the_banner(
    qtbot, make_window, monkeypatch, tmp_path: Path
) -> None:
    from visuallens_app.errors import SettingsError

    sentence = "The settings cannot be saved: the folder /cfg is not writable (permission denied)."

    def read_only(_self, _path=None):
        raise SettingsError(sentence)

    window = make_window([])
    monkeypatch.setattr(Settings, "save", read_only)
    folder = tmp_path / "more-photos"
    folder.mkdir()
    window.session.add_folder(folder)
    qtbot.waitUntil(window.banner.isVisible, timeout=5000)
    assert window.banner.text == sentence
    qtbot.waitUntil(lambda: not window.session.indexing, timeout=30_000)


def test_clip_download_with_no_network_says_so_at_once_in_window_words(
    qtbot, make_window, monkeypatch, tmp_path: Path
) -> None:
    """No fake download: the real one, against a Hub address where nothing listens."""
    import socket

    from visuallens_app.gui.panels.settings import SettingsDialog

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    window = make_window([])
    window.session.settings.encoder = "auto"  # as a new user has it: CLIP is not here
    with qtbot.waitSignal(window.session.encoder_ready, timeout=60_000):
        window.session.load_encoder()
    dialog = SettingsDialog(window.session, window)
    qtbot.addWidget(dialog)
    reason = dialog.encoder_reason.text()
    assert "`" not in reason  # no Markdown in a label
    assert "Download CLIP weights" in reason  # the button, not the CLI command
    dialog.download.click()
    qtbot.waitUntil(dialog.download.isEnabled, timeout=10_000)
    status = dialog.download_status.text()
    assert status.startswith("No network:"), status
    assert "--" not in status  # no command-line flag
    assert "Error" not in status  # no exception class name
