"""Is ONNX Runtime a faster CPU runtime than PyTorch eager for the encoders' image towers?

    .venv/bin/python -m benchmarks.bench_runtime [--images 64] [--rounds 5]

Measured on the two towers the indexer runs: the embedded encoder's EfficientNet-Lite0 (its real
weights, 2 views per photo in micro-batches of 4 rows, channels_last, as ``EmbeddedEncoder``
runs it) and open_clip ViT-B-32 with random weights (batches of 32, as ``ClipEncoder`` runs it).
Each tower is exported once with ``torch.onnx.export`` and run by onnxruntime on as many threads
as torch uses; rounds alternate between the runtimes and the medians are compared. The vectors
must agree (cosine >= 0.999, for the embedded encoder on the final ConSE vectors) or the faster
runtime does not count. onnx and onnxruntime are not dependencies of the app: the benchmark runs
itself in a throwaway venv layered over this one (``benchmarks/peer_env.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _rounds(runs: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each runner, rounds interleaved (machine load hits both alike)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: first-call allocations and thread start
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def _cosine_min(a: Any, b: Any) -> float:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(module: Any, example: Any, path: Path) -> None:
    import torch

    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def bench_embedded(n: int, rounds: int, work: Path, threads: int) -> dict[str, float]:
    import numpy as np
    import torch

    from benchmarks.samples import decoded_photos
    from visuallens_app.models.embedded import EmbeddedEncoder

    encoder = EmbeddedEncoder(cache_dir=work / "cache")
    images = decoded_photos(n)
    classifier = encoder._classifier
    pixels = encoder._pixels(images)  # (2n, 3, 224, 224) channels_last, as encode_images feeds
    onnx_path = work / "efficientnet-lite0.onnx"
    with torch.inference_mode():
        _export(classifier, pixels[:4].contiguous(), onnx_path)
    session = _session(onnx_path, threads)
    rows = 4  # EmbeddedEncoder's CPU micro-batch (_CPU_FORWARD_ROWS)
    contiguous = pixels.contiguous().numpy()

    def torch_eager() -> Any:
        with torch.inference_mode():
            return torch.cat(
                [classifier(pixels[i : i + rows]) for i in range(0, len(pixels), rows)]
            )

    def onnx_rows() -> Any:
        return np.concatenate(
            [
                session.run(None, {"input": contiguous[i : i + rows]})[0]
                for i in range(0, len(contiguous), rows)
            ]
        )

    def onnx_32() -> Any:
        return np.concatenate(
            [
                session.run(None, {"input": contiguous[i : i + 64]})[0]
                for i in range(0, len(contiguous), 64)
            ]
        )

    def conse(logits: Any) -> Any:
        """The embedded encoder's image vectors from classifier logits (encode_images' math)."""
        probs = torch.as_tensor(np.asarray(logits)).float().softmax(dim=-1)
        probs = probs.view(2, n, -1).mean(dim=0)
        weights, classes = probs.topk(10, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        vectors = torch.einsum("nk,nkd->nd", weights, encoder._class_embeddings[classes])
        return vectors.numpy()

    reference = conse(torch_eager())
    cos_rows = _cosine_min(reference, conse(onnx_rows()))
    cos_32 = _cosine_min(reference, conse(onnx_32()))
    times = _rounds({"torch": torch_eager, "onnx_4rows": onnx_rows, "onnx_64rows": onnx_32}, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "photos": n,
        "torch_photos_s": n / med["torch"],
        "onnx_4rows_photos_s": n / med["onnx_4rows"],
        "onnx_64rows_photos_s": n / med["onnx_64rows"],
        "onnx_4rows_over_torch": med["torch"] / med["onnx_4rows"],
        "onnx_64rows_over_torch": med["torch"] / med["onnx_64rows"],
        "cosine_min_4rows": cos_rows,
        "cosine_min_64rows": cos_32,
    }


def bench_clip(n: int, rounds: int, work: Path, threads: int) -> dict[str, float]:
    import numpy as np
    import torch

    from benchmarks.samples import decoded_photos
    from visuallens_app.models.clip import ClipEncoder

    encoder = ClipEncoder.random("ViT-B-32", seed=0, device="cpu")
    model = encoder._model
    pixels = encoder._pixels(decoded_photos(n))
    batch = 32  # ClipEncoder's batch

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model.encode_image(x)

    onnx_path = work / "vit-b-32-visual.onnx"
    # Not under inference_mode: there attention takes a fused fast path the exporter lacks.
    _export(Visual().eval(), pixels[:2], onnx_path)
    session = _session(onnx_path, threads)
    array = pixels.numpy()

    def torch_eager() -> Any:
        with torch.inference_mode():
            return torch.cat(
                [model.encode_image(pixels[i : i + batch]) for i in range(0, n, batch)]
            ).numpy()

    def onnx_run() -> Any:
        return np.concatenate(
            [session.run(None, {"input": array[i : i + batch]})[0] for i in range(0, n, batch)]
        )

    cosine = _cosine_min(torch_eager(), onnx_run())
    times = _rounds({"torch": torch_eager, "onnx": onnx_run}, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "photos": n,
        "torch_photos_s": n / med["torch"],
        "onnx_photos_s": n / med["onnx"],
        "onnx_over_torch": med["torch"] / med["onnx"],
        "cosine_min": cosine,
    }


def child(args: argparse.Namespace) -> None:
    import torch

    from visuallens_app.devices import configure_torch_threads

    threads = configure_torch_threads()
    work = Path(tempfile.mkdtemp(prefix="vl-runtime-"))
    out: dict[str, Any] = {"threads": threads, "torch": torch.__version__}
    if args.only in ("", "embedded"):
        out["embedded_efficientnet_lite0"] = bench_embedded(args.images, args.rounds, work, threads)
    if args.only in ("", "clip"):
        out["clip_vit_b32_random"] = bench_clip(args.images, args.rounds, work, threads)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", choices=("", "embedded", "clip"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from benchmarks.peer_env import layered_venv

    python = layered_venv("onnx", ["onnx", "onnxruntime"], ["onnx", "onnxruntime"])
    done = subprocess.run(
        [str(python), "-m", "benchmarks.bench_runtime", "--child", *sys.argv[1:]],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    if done.returncode != 0:
        sys.exit(done.stderr)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    import os

    results["load_average"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"runtime{'-' + args.only if args.only else ''}.json").write_text(
        json.dumps(results, indent=2) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
