"""Indexing throughput, re-scan cost and indexing memory, each against its baseline in the same run.

    .venv/bin/python -m benchmarks.bench_index [--photos 64] [--rescan-files 10000]
        [--memory 2000,20000] [--skip throughput,rescan,memory]

1. Throughput on 12 MP JPEGs with the ViT-B-32 architecture (random weights: the compute is the
   same as with real ones) through ``index_folders``, against
   - the naive baseline: full PIL decode + open_clip's own preprocess + batched encode, one process;
   - the model-only limit: encode of pre-decoded, pre-resized 224 px tensors.
   The embedded encoder's throughput through ``index_folders`` is reported too.
2. Re-scan of an unchanged library of N files (a full ``index_folders`` run that finds nothing to
   do) against a bare ``os.scandir`` walk of the same tree.
3. Peak RSS of an indexing run over small and large libraries (subprocesses, so each peak is its
   own); a tiny random CLIP keeps the model cost out so the indexer's own memory is what shows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.samples import SAMPLES, sample_photo

# Before open_clip loads torch: devices sets the OpenMP wait policy the app runs with (issue 16).
from visuallens_app import devices  # noqa: F401

RESULTS = Path(__file__).parent / "results"


def make_12mp_jpegs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bases = [sample_photo(s).resize((4000, 3000), Image.Resampling.BILINEAR) for s in SAMPLES]
    paths = []
    for i in range(n):
        path = folder / f"IMG_{i:04d}.jpg"
        # Every file differs (its own content hash), like a real camera roll.
        image = bases[i % len(bases)].rotate(i % 7, fillcolor=(i % 255, 40, 90))
        image.save(path, quality=92)
        paths.append(path)
    return paths


def _vit_b32() -> tuple[object, object]:
    """One random ViT-B-32 and open_clip's own eval preprocess, shared by every contender."""
    import open_clip
    import torch

    from visuallens_app.devices import configure_torch_threads
    from visuallens_app.models.clip import ClipEncoder

    configure_torch_threads()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    encoder = ClipEncoder(
        model, tokenizer, encoder_id="clip:ViT-B-32:random-bench", arch="ViT-B-32", device="cpu"
    )
    return encoder, preprocess


def _naive(paths: list[Path], model: object, preprocess: object, batch: int = 32) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            tensors = [preprocess(Image.open(p).convert("RGB")) for p in paths[i : i + batch]]  # type: ignore[operator]
            model.encode_image(torch.stack(tensors))  # type: ignore[attr-defined]
    return len(paths) / (time.perf_counter() - start)


def _model_only(n: int, model: object, batch: int = 32) -> float:
    import torch

    tensors = torch.randn(batch, 3, 224, 224)
    rounds = max(1, n // batch)
    with torch.inference_mode():
        model.encode_image(tensors)  # type: ignore[attr-defined]  # warm-up
        start = time.perf_counter()
        for _ in range(rounds):
            model.encode_image(tensors)  # type: ignore[attr-defined]
    return rounds * batch / (time.perf_counter() - start)


def _index_rate(folder: Path, encoder: object, library: Path) -> float:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore

    with PhotoStore(library) as store:
        start = time.perf_counter()
        report = run_to_end(index_folders(store, encoder, [folder]))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
    assert not report.failed, report.failed
    return report.indexed / elapsed


def bench_throughput(n: int, work: Path) -> dict[str, float]:
    from visuallens_app.models.embedded import EmbeddedEncoder

    paths = make_12mp_jpegs(work / "12mp", n)
    encoder, preprocess = _vit_b32()
    model = encoder._model  # type: ignore[attr-defined]
    _model_only(32, model)  # warm caches and threads before anything is timed
    out = {
        "naive_img_s": _naive(paths, model, preprocess),
        "model_only_img_s": _model_only(n, model),
        "indexer_img_s": _index_rate(work / "12mp", encoder, work / "lib-clip"),
    }
    embedded = EmbeddedEncoder()
    embedded.encode_images([sample_photo("coffee")])  # warm-up
    out["embedded_indexer_img_s"] = _index_rate(work / "12mp", embedded, work / "lib-embedded")
    out["speedup_vs_naive"] = out["indexer_img_s"] / out["naive_img_s"]
    out["share_of_model_limit"] = out["indexer_img_s"] / out["model_only_img_s"]
    return out


def _tiny_jpeg_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    sample_photo("coffee").resize((64, 48)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def make_tree(folder: Path, n: int, per_dir: int = 250) -> None:
    data = _tiny_jpeg_bytes()
    for i in range(n):
        sub = folder / f"{2000 + i // per_dir // 12:04d}" / f"{i // per_dir:03d}"
        if i % per_dir == 0:
            sub.mkdir(parents=True, exist_ok=True)
        # A distinct trailing byte per file: distinct content hashes, as in a real library.
        (sub / f"IMG_{i:06d}.jpg").write_bytes(data + i.to_bytes(4, "little"))


def _bare_walk(root: Path) -> int:
    count = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def bench_rescan(n: int, work: Path) -> dict[str, float]:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.clip import ClipEncoder

    tree = work / "tree"
    make_tree(tree, n)
    encoder = ClipEncoder.random(model_cfg=TINY_CLIP)
    library = work / "lib-rescan"
    with PhotoStore(library) as store:
        first = run_to_end(index_folders(store, encoder, [tree]))
    assert first.indexed == n, first
    walk_s: list[float] = []
    rescan_s: list[float] = []
    walk_cpu: list[float] = []
    rescan_cpu: list[float] = []
    # Interleaved rounds, best of each: both read the same warm page cache, and the machine is
    # shared, so CPU time (user + system of this process) is reported beside the wall time.
    for _ in range(15):
        start, cpu = time.perf_counter(), time.process_time()
        assert _bare_walk(tree) == n
        walk_s.append(time.perf_counter() - start)
        walk_cpu.append(time.process_time() - cpu)
        with PhotoStore(library) as store:
            start, cpu = time.perf_counter(), time.process_time()
            again = run_to_end(index_folders(store, encoder, [tree]))
            rescan_s.append(time.perf_counter() - start)
            rescan_cpu.append(time.process_time() - cpu)
        assert again.unchanged == n, again
        assert again.indexed == 0, again
    return {
        "files": n,
        "bare_scandir_s": min(walk_s),
        "rescan_s": min(rescan_s),
        "rescan_over_walk": min(rescan_s) / min(walk_s),
        "bare_scandir_cpu_s": min(walk_cpu),
        "rescan_cpu_s": min(rescan_cpu),
        "rescan_over_walk_cpu": min(rescan_cpu) / min(walk_cpu),
    }


TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _memory_child(n: int, work: Path) -> None:
    """Run in a subprocess: index n small photos, print peak RSS in MiB."""
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.clip import ClipEncoder

    tree = work / f"mem-{n}"
    make_tree(tree, n)
    encoder = ClipEncoder.random(model_cfg=TINY_CLIP)
    baseline = _peak_rss_mib()
    with PhotoStore(work / f"lib-mem-{n}") as store:
        report = run_to_end(index_folders(store, encoder, [tree]))
    assert report.indexed == n
    peak = _peak_rss_mib()
    print(json.dumps({"n": n, "rss_before_mib": baseline, "peak_rss_mib": peak}))


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage: Linux keeps ru_maxrss across exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memory(sizes: list[int], work: Path) -> dict[str, object]:
    runs = []
    for n in sizes:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_index",
                "--memory-child",
                str(n),
                "--work",
                str(work),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "runs": runs,
        "peak_ratio_large_over_small": runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--rescan-files", type=int, default=10_000)
    parser.add_argument("--memory", default="2000,20000")
    parser.add_argument("--skip", default="")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault(
        "VISUALLENS_CACHE_DIR", str(Path(tempfile.gettempdir()) / "vl-bench-cache")
    )
    if args.memory_child:
        _memory_child(args.memory_child, args.work)
        return
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="vl-bench-") as tmp:
        work = Path(tmp)
        if "throughput" not in skip:
            results["throughput"] = bench_throughput(args.photos, work)
            print(json.dumps(results["throughput"], indent=2))
        if "rescan" not in skip:
            results["rescan"] = bench_rescan(args.rescan_files, work)
            print(json.dumps(results["rescan"], indent=2))
        if "memory" not in skip:
            sizes = [int(s) for s in args.memory.split(",")]
            results["memory"] = bench_memory(sizes, work)
            print(json.dumps(results["memory"], indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
