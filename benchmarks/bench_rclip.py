"""visuallens against rclip, the command-line tool a user would pick instead, side by side.

    .venv/bin/python -m benchmarks.bench_rclip [--photos 200] [--megapixels 1.5]
                                               [--library-photos 1000] [--rounds 3]

Both tools run the same random-weight CLIP ViT-B-32-256 (rclip's architecture), offline:
- rclip 3.3 (PyPI, installed by this benchmark into a throwaway venv of its own) reads its
  ONNX towers and tokenizer from ``$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/`` and
  ``tokenizer/`` (rclip ``model_download.py``: an existing file there is never downloaded), so the
  random model's two towers are exported to ONNX there;
- visuallens reads the same weights as open_clip's ``ViT-B-32-256/datacomp_s34b_b86k`` from a
  temporary Hugging Face cache (the hub layout open_clip resolves offline), as
  ``--encoder clip:ViT-B-32-256/datacomp_s34b_b86k``.

Rows, each a fresh process timed from start to exit: index N new photos (rclip indexes inside
a query, so its row includes one query), re-run on the unchanged folder, one text query cold
(a text not asked before), and one query in a larger library. Rounds are interleaved (the
tools alternate who goes first) and the medians and rclip/visuallens ratios are printed and
written to ``benchmarks/results/rclip.json``. The export needs onnx, which the app does not
depend on: it runs in a throwaway venv layered over this one (``benchmarks/peer_env.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ARCH, TAG = "ViT-B-32-256", "datacomp_s34b_b86k"
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
RCLIP_VERSION = "3.3.0"
QUERIES = ["a red bicycle", "a cup of coffee", "a cat on a sofa", "a rocket", "an astronaut"]


def prepare_models(out: Path) -> None:
    """(In the onnx venv.) The random model as rclip's ONNX files and as an HF-cache checkpoint."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from visuallens_app.models.clip import ClipEncoder, _hf_candidates, _pretrained_cfg

    model = ClipEncoder.random(ARCH, seed=0, device="cpu")._model.float().eval()
    rclip_dir = out / "rclip-models" / RCLIP_SUBDIR
    rclip_dir.mkdir(parents=True, exist_ok=True)

    class Tower(torch.nn.Module):
        def __init__(self, image: bool) -> None:
            super().__init__()
            self.model = model  # a submodule, so that its weights export as weights
            self.image = image

        def forward(self, x: Any) -> Any:
            return self.model.encode_image(x) if self.image else self.model.encode_text(x)

    size = model.visual.image_size
    side = int(size[0] if isinstance(size, (tuple, list)) else size)
    for module, example, name in (
        (Tower(image=True), torch.randn(1, 3, side, side), "visual.onnx"),
        (Tower(image=False), open_clip.get_tokenizer(ARCH)(["a photo"]), "textual.onnx"),
    ):
        torch.onnx.export(
            module.eval(),
            (example,),
            str(rclip_dir / name),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (out / "rclip-models" / "tokenizer").mkdir(exist_ok=True)
    shutil.copy(vocab, out / "rclip-models" / "tokenizer" / vocab.name)

    repo_id, names = _hf_candidates(_pretrained_cfg(ARCH, TAG)["hf_hub"])
    repo = out / "hf" / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="ascii")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(snapshot / names[0]))  # open_clip_model.safetensors


def make_photos(folder: Path, n: int, megapixels: float) -> None:
    """``n`` distinct JPEGs of about ``megapixels`` MP from the scikit-image samples."""
    from PIL import Image

    from benchmarks.samples import SAMPLES, sample_photo

    folder.mkdir(parents=True, exist_ok=True)
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    bases = [sample_photo(s).resize((width, height), Image.Resampling.BILINEAR) for s in SAMPLES]
    for i in range(n):
        image = bases[i % len(bases)].copy()
        image.putpixel((i % width, 0), (i % 256, (i // 256) % 256, 7))  # distinct content
        image.save(folder / f"IMG_{i:05d}.jpg", quality=90)


def _timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {done.stderr[-2000:]}")
    return elapsed


class Tools:
    """How each tool is run on a folder, with its own state under ``work``."""

    def __init__(self, work: Path, rclip: Path, env: dict[str, str]) -> None:
        self.work = work
        self.rclip = rclip
        self.env = env

    def rclip_env(self, state: str) -> dict[str, str]:
        datadir = self.work / "rclip-state" / state
        if not datadir.exists():  # the model files, linked into this state's own datadir
            shutil.copytree(self.work / "rclip-models", datadir, copy_function=os.link)
        return {**self.env, "RCLIP_DATADIR": str(datadir)}

    def vl_args(self, state: str) -> list[str]:
        return ["--library", str(self.work / "vl-state" / state), "--encoder", f"clip:{ARCH}/{TAG}"]

    def rclip_index(self, folder: Path, state: str, query: str) -> float:
        cmd = [str(self.rclip), "-f", "-t", "1", query]
        return _timed(cmd, self.rclip_env(state), cwd=folder)

    def rclip_query(self, folder: Path, state: str, query: str) -> float:
        cmd = [str(self.rclip), "-n", "-f", "-t", "1", query]
        return _timed(cmd, self.rclip_env(state), cwd=folder)

    def vl_index(self, folder: Path, state: str) -> float:
        cmd = [
            sys.executable,
            "-m",
            "visuallens_app.cli",
            "index",
            str(folder),
            *self.vl_args(state),
        ]
        return _timed(cmd, self.env)

    def vl_query(self, state: str, query: str) -> float:
        cmd = [sys.executable, "-m", "visuallens_app.cli", "search", query, "-k", "1"]
        return _timed([*cmd, *self.vl_args(state)], self.env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--megapixels", type=float, default=1.5)
    parser.add_argument("--library-photos", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare_models(args.prepare)
        return

    from benchmarks.peer_env import isolated_venv, layered_venv

    root = Path(__file__).parent.parent
    work = Path(tempfile.mkdtemp(prefix="vl-rclip-"))
    onnx_python = layered_venv("onnx", ["onnx", "onnxruntime"], ["onnx", "onnxruntime"])
    rclip_python = isolated_venv("rclip", [f"rclip=={RCLIP_VERSION}"], ["rclip"])
    rclip = rclip_python.parent / "rclip"
    print("Exporting the random model for both tools...", file=sys.stderr)
    subprocess.run(
        [str(onnx_python), "-m", "benchmarks.bench_rclip", "--prepare", str(work)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(work / "hf" / "hub"),
        "HF_HOME": str(work / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VISUALLENS_CONFIG_DIR": str(work / "vl-config"),
        "VISUALLENS_CACHE_DIR": str(work / "vl-cache"),
        "PYTHONPATH": str(root),
    }
    tools = Tools(work, rclip, env)
    print("Making photos...", file=sys.stderr)
    small, large = work / "photos", work / "library"
    make_photos(small, args.photos, args.megapixels)
    make_photos(large, args.library_photos, args.megapixels)
    print("Indexing the larger library once with each tool...", file=sys.stderr)
    build = {
        "rclip": tools.rclip_index(large, "large", "warm"),
        "visuallens": tools.vl_index(large, "large"),
    }

    rows: dict[str, dict[str, list[float]]] = {
        row: {"rclip": [], "visuallens": []}
        for row in ("index_new", "reindex_unchanged", "query_cold", "query_large_library")
    }
    for r in range(args.rounds):
        query = QUERIES[r % len(QUERIES)] + f" {r}"  # never asked before: no cache helps
        order = ["rclip", "visuallens"] if r % 2 == 0 else ["visuallens", "rclip"]
        for tool in order:
            state = f"round{r}"
            print(f"round {r + 1}/{args.rounds}: {tool}", file=sys.stderr)
            if tool == "rclip":
                rows["index_new"][tool].append(tools.rclip_index(small, state, query))
                rows["reindex_unchanged"][tool].append(tools.rclip_index(small, state, query))
                rows["query_cold"][tool].append(tools.rclip_query(small, state, query + "!"))
                rows["query_large_library"][tool].append(tools.rclip_query(large, "large", query))
            else:
                rows["index_new"][tool].append(tools.vl_index(small, state))
                rows["reindex_unchanged"][tool].append(tools.vl_index(small, state))
                rows["query_cold"][tool].append(tools.vl_query(state, query + "!"))
                rows["query_large_library"][tool].append(tools.vl_query("large", query))
    bare = [
        _timed([sys.executable, "-c", "import visuallens_app"], env) for _ in range(args.rounds)
    ]

    summary: dict[str, Any] = {
        "photos": args.photos,
        "megapixels": args.megapixels,
        "library_photos": args.library_photos,
        "rounds": args.rounds,
        "model": f"{ARCH} random weights (both tools)",
        "rclip": RCLIP_VERSION,
        "load_average": os.getloadavg(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "build_large_library_s": build,
        "bare_import_visuallens_s": statistics.median(bare),
        "rows": {},
    }
    for row, times in rows.items():
        med = {tool: statistics.median(t) for tool, t in times.items()}
        summary["rows"][row] = {
            "rclip_s": med["rclip"],
            "visuallens_s": med["visuallens"],
            "rclip_over_visuallens": med["rclip"] / med["visuallens"],
            "all_s": times,
        }
        print(
            f"{row:22s} rclip {med['rclip']:7.2f} s   visuallens {med['visuallens']:7.2f} s   "
            f"rclip/visuallens {med['rclip'] / med['visuallens']:5.2f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rclip.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
