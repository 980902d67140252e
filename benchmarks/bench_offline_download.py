"""Offline CLIP download: the app's answer vs huggingface_hub's own retries, in one run.

Run: ``.venv/bin/python -m benchmarks.bench_offline_download``. Prints a table and writes
``benchmarks/results/offline_download.json``.

"No network" is a Hub address on this machine where nothing listens (``HF_ENDPOINT``), so the
connection is refused at once, as it is when a machine has no route. Baseline: what the app did
before issue 11 item 3, ``hf_hub_download`` of the CLIP weights file (and then its .bin
fallback), which retries each failed request with back-off. Measured: the app's
``download_clip_weights``, which probes the Hub once and answers with one sentence. open_clip is
imported before either is timed, so the ratio is about waiting, not imports.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "offline_download.json"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-offline-"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    os.environ["HF_HOME"] = str(work / "hf")
    os.environ["HF_HUB_CACHE"] = str(work / "hf" / "hub")

    import open_clip  # noqa: F401 - imported before timing, for both sides
    from huggingface_hub import hf_hub_download

    from visuallens_app.errors import ModelUnavailableError
    from visuallens_app.models.clip import DEFAULT_ARCH, DEFAULT_PRETRAINED, _hf_candidates
    from visuallens_app.models.clip import _pretrained_cfg as cfg
    from visuallens_app.models.registry import download_clip_weights

    repo_id, names = _hf_candidates(cfg(DEFAULT_ARCH, DEFAULT_PRETRAINED)["hf_hub"])
    start = time.perf_counter()
    for name in names:  # as the old code did: the safetensors file, then the .bin
        try:
            hf_hub_download(repo_id, name, cache_dir=os.environ["HF_HUB_CACHE"])
        except Exception:  # every failure is the expected outcome here
            continue
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    try:
        download_clip_weights(DEFAULT_ARCH, DEFAULT_PRETRAINED)
        sentence = ""
    except ModelUnavailableError as err:
        sentence = str(err)
    measured = time.perf_counter() - start

    rows = {
        "baseline_hf_hub_download_s": round(baseline, 3),
        "app_download_clip_weights_s": round(measured, 3),
        "ratio": round(baseline / max(measured, 1e-6), 1),
        "sentence": sentence,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
    }
    print(f"{'what':<42}{'seconds':>10}")
    print(f"{'huggingface_hub, retries (before)':<42}{baseline:>10.2f}")
    print(f"{'visuallens: one probe, one sentence':<42}{measured:>10.3f}")
    print(f"ratio {rows['ratio']}x; the sentence: {sentence}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if sentence else 1


if __name__ == "__main__":
    sys.exit(main())
