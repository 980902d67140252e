"""Offline downloads: one short probe of the Hub, then one sentence, never a minute of retries.

The Hub's address is pointed (HF_ENDPOINT) at a port on this machine that nobody listens on,
which is what "no network" looks like to a client: the connection is refused. The same probe is
shown to succeed against a port that does listen, directly and through a proxy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from visuallens_app.hub import HubUnreachableError, hub_unreachable_reason


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield int(s.getsockname()[1])


@pytest.fixture
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Downloads allowed (HF_HUB_OFFLINE unset) but the Hub unreachable; an empty cache."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("VISUALLENS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("VISUALLENS_LIBRARY", str(tmp_path / "library"))
    return dict(os.environ)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visuallens_app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_download_clip_offline_is_one_sentence_without_retries(no_network: dict[str, str]) -> None:
    out = _cli("models", "download-clip", env=no_network)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert lines == [lines[0]], out.stderr  # no "Retrying in 8s", no logger lines
    assert "cannot be reached" in lines[0]
    assert "CLIP ViT-B-32 (laion2b_s34b_b79k) weights" in lines[0]
    assert "--encoder clip:" in lines[0]  # the terminal's way round it
    assert "Error" not in lines[0]  # no exception class names


def test_encoder_clip_offline_says_so_before_any_download(
    no_network: dict[str, str], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    out = _cli("index", str(photos), "--encoder", "clip", env=no_network)
    assert out.returncode != 0
    assert "Retrying" not in out.stderr
    assert "cannot be reached" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_download_vlm_offline_is_one_sentence(no_network: dict[str, str]) -> None:
    from visuallens_app.vlm.loading import download_vlm

    with pytest.raises(HubUnreachableError) as err:
        download_vlm("HuggingFaceTB/SmolVLM-256M-Instruct")
    assert "cannot be reached" in str(err.value)
    assert "--vlm" in str(err.value)
    assert err.value.gui_message.startswith("No network:")
    assert "--" not in err.value.gui_message  # the window names no command-line flags


def test_the_probe_succeeds_when_the_hub_answers(
    listening_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening_port}")
    assert hub_unreachable_reason() is None
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert hub_unreachable_reason() is not None


def test_the_probe_goes_through_the_configured_proxy(
    listening_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("NO_PROXY", "no_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.invalid")  # not resolvable itself
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listening_port}")
    assert hub_unreachable_reason() is None
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{_closed_port()}")
    reason = hub_unreachable_reason()
    assert reason is not None
    assert "proxy" in reason
