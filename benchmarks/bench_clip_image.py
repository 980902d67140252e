"""Would a cached CLIP image tower pay? A fresh process encoding new photos, four ways.

    .venv/bin/python -m benchmarks.bench_clip_image [--arch ViT-B-32] [--photos 40] [--rounds 5]

Indexing new photos with ``--encoder clip:...`` spends most of a short run importing open_clip
(it imports torchvision, timm and transformers) before the first photo is encoded (issue 13). The
text side already avoids it (``clip_text.py``); this measures whether the image side could, with
one random-weight checkpoint (safetensors, as a pretrained download is) for every row:

- ``open_clip``: ``ClipEncoder.from_checkpoint(...).encode_images`` as the indexer runs it now;
- ``export``: ``torch.export`` of ``model.visual`` (batch dimension dynamic), saved once with
  ``torch.export.save``; the fresh process only ``torch.export.load``s it;
- ``torchscript``: ``torch.jit.trace`` of ``model.visual``, ``torch.jit.save`` / ``load``
  (deprecated by torch in favour of ``torch.export``; here for comparison);
- ``plain torch``: a ViT forward written with ``torch.nn.functional`` over the checkpoint's own
  tensors (nothing cached but the code): what a hand-written tower, like the text side's numpy
  one, would cost; a lower bound, only for open_clip's plain ``VisionTransformer``;
- ``product``: ``ClipEncoder.from_checkpoint(...).encode_images`` with its cached image side
  (``clip_image.py``), written once before the rounds; the ``open_clip`` row passes the cache by.

Each fresh process decodes nothing (the same ``--photos`` decoded 224-px images are handed to
all), preprocesses them the way ``ClipEncoder`` does, encodes them in batches of 32 and reports
its phases; rounds are interleaved (the order rotates), and medians are reported with their
saving against open_clip and the smallest cosine to open_clip's vectors. For scale the same
rounds time ``import torch``, ``import open_clip`` and a ``visuallens index`` of ``--photos``
new 1.5 MP JPEGs with ``--encoder clip:<checkpoint>``, with the cached image side
(``visuallens index``) and with an empty cache (``visuallens index, first``: open_clip loads the
tower and the entry is written). Results go to
``benchmarks/results/clip_image.json``.
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
WAYS = ("open_clip", "export", "torchscript", "plain torch", "product")
SCALE = ("import torch", "import open_clip", "visuallens index", "visuallens index, first")
_HEAVY = ("open_clip", "timm", "torchvision", "transformers", "sympy", "torch._dynamo")
#: The trace of a ViT-B-32 is made with this batch; the export's batch dimension is dynamic.
_EXAMPLE_BATCH = 2


# -- the fresh process ---------------------------------------------------------------------------


def _pixels(images: list[Any], size: int, mean: Any, std: Any) -> Any:
    """``ClipEncoder._pixels`` for centre-cropped ("shortest") bicubic preprocessing."""
    import numpy as np
    import torch
    from PIL import Image

    batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        batch[i] = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))
    std_arr = np.asarray(std, dtype=np.float32) * 255.0
    scale = torch.from_numpy(1.0 / std_arr).view(1, 3, 1, 1)
    shift = torch.from_numpy(-np.asarray(mean, dtype=np.float32) * 255.0 / std_arr).view(1, 3, 1, 1)
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    return tensor.mul_(scale).add_(shift).contiguous()


def _plain_vit(checkpoint: Path) -> Any:
    """open_clip's ``VisionTransformer.forward`` (class token, pre-norm blocks, ``tok`` pooling,
    matrix projection) in ``torch.nn.functional``, over ``checkpoint``'s ``visual.*`` tensors."""
    import torch
    from safetensors import safe_open
    from torch.nn import functional as nnf

    with safe_open(str(checkpoint), framework="pt") as handle:
        w = {k[7:]: handle.get_tensor(k) for k in handle.keys() if k.startswith("visual.")}  # noqa: SIM118 (not iterable)
    layers = len({k.split(".")[2] for k in w if k.startswith("transformer.resblocks.")})
    width = int(w["class_embedding"].shape[0])
    heads = width // 64  # open_clip's default head width
    patch = int(w["conv1.weight"].shape[-1])

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = nnf.conv2d(x, w["conv1.weight"], stride=patch)
        n = x.shape[0]
        x = x.reshape(n, width, -1).permute(0, 2, 1)
        x = torch.cat([w["class_embedding"].expand(n, 1, width), x], dim=1)
        x = nnf.layer_norm(
            x + w["positional_embedding"], (width,), w["ln_pre.weight"], w["ln_pre.bias"]
        )
        for i in range(layers):
            p = f"transformer.resblocks.{i}."
            h = nnf.layer_norm(x, (width,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
            qkv = nnf.linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"])
            q, k, v = qkv.reshape(n, -1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            a = nnf.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, -1, width)
            x = x + nnf.linear(a, w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"])
            h = nnf.layer_norm(x, (width,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
            h = nnf.gelu(nnf.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
            x = x + nnf.linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
        x = nnf.layer_norm(x, (width,), w["ln_post.weight"], w["ln_post.bias"])
        pooled: torch.Tensor = x[:, 0] @ w["proj"]
        return pooled

    return forward


def child(way: str, work: Path, arch: str) -> None:
    """One fresh process: load ``way``'s image tower, encode the decoded photos, report."""
    start = time.perf_counter()
    import numpy as np
    from PIL import Image

    with np.load(work / "decoded.npz") as arrays:
        images = [Image.fromarray(arrays[f"arr_{i}"]) for i in range(len(arrays.files))]
    import torch

    imported_torch = time.perf_counter()
    pre = json.loads((work / "preprocess.json").read_text(encoding="utf-8"))
    checkpoint = work / "clip.safetensors"
    if way in ("open_clip", "product"):
        from visuallens_app.models.clip import ClipEncoder

        encoder = ClipEncoder.from_checkpoint(checkpoint, arch=arch, device="cpu")
        if way == "open_clip":
            encoder._image_side_looked = True  # as before the cache: open_clip's tower
            encoder._ready("image")
        else:
            encoder.load(text=False)
            assert encoder._model is None, "the cached image side was not used"
        loaded = time.perf_counter()
        vectors = encoder.encode_images(images)
    else:
        from visuallens_app.devices import configure_torch_threads
        from visuallens_app.models.base import l2_normalise

        configure_torch_threads()
        if way == "export":
            tower = torch.export.load(str(work / "visual.pt2")).module()
        elif way == "torchscript":
            tower = torch.jit.load(str(work / "visual.jit"))  # type: ignore[no-untyped-call]
        else:
            tower = _plain_vit(checkpoint)
        loaded = time.perf_counter()
        with torch.inference_mode():
            parts = [
                tower(_pixels(images[i : i + 32], pre["size"], pre["mean"], pre["std"]))
                for i in range(0, len(images), 32)
            ]
        vectors = l2_normalise(torch.cat(parts).numpy())
    done = time.perf_counter()
    np.save(work / f"vectors-{way.replace(' ', '_')}.npy", vectors)
    report = {
        "import_torch_s": imported_torch - start,
        "load_s": loaded - imported_torch,
        "encode_s": done - loaded,
        "imported": [m for m in _HEAVY if m in sys.modules],
    }
    print(json.dumps(report))


# -- the parent ----------------------------------------------------------------------------------


def _prepare(work: Path, arch: str, photos: int) -> dict[str, Any]:
    """The checkpoint, the cached towers, the decoded photos and the JPEG folder in ``work``."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from benchmarks.bench_rclip import make_photos
    from benchmarks.samples import decoded_photos
    from visuallens_app.models.clip import ClipEncoder

    reference = ClipEncoder.random(arch, seed=0)
    model = reference._model
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(work / "clip.safetensors")
    )
    pre = {
        "size": reference._size,
        "mean": list(model.visual.preprocess_cfg["mean"]),
        "std": list(model.visual.preprocess_cfg["std"]),
    }
    (work / "preprocess.json").write_text(json.dumps(pre), encoding="utf-8")
    images = decoded_photos(photos)
    np.savez(work / "decoded.npz", *[np.asarray(image) for image in images])
    make_photos(work / "photos", photos, 1.5)

    visual = model.visual.eval()
    example = torch.randn(_EXAMPLE_BATCH, 3, reference._size, reference._size)
    once: dict[str, Any] = {}
    start = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(visual, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(work / "visual.pt2"))
    once["export_and_save_s"] = time.perf_counter() - start
    once["export_bytes"] = (work / "visual.pt2").stat().st_size
    start = time.perf_counter()
    with torch.inference_mode():
        traced = torch.jit.trace(visual, example, check_trace=False)  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(work / "visual.jit"))
    once["torchscript_trace_and_save_s"] = time.perf_counter() - start
    once["torchscript_bytes"] = (work / "visual.jit").stat().st_size
    once["checkpoint_bytes"] = (work / "clip.safetensors").stat().st_size
    start = time.perf_counter()
    product = ClipEncoder.from_checkpoint(work / "clip.safetensors", arch=arch, device="cpu")
    product.encode_images(images[:1])  # open_clip's tower, then the cached image side is kept
    once["product_open_clip_and_cache_s"] = time.perf_counter() - start
    entries = list((work / "cache" / "encoders" / "clip-image").glob("*/image-tower.json"))
    assert entries, "no cached image side was written"
    once["product_cache_bytes"] = sum(f.stat().st_size for f in entries[0].parent.iterdir())
    return once


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.arch)
        return

    work = Path(tempfile.mkdtemp(prefix="vl-clip-image-"))
    root = Path(__file__).parent.parent
    env = {
        **os.environ,
        "VISUALLENS_CACHE_DIR": str(work / "cache"),
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    os.environ["VISUALLENS_CACHE_DIR"] = env["VISUALLENS_CACHE_DIR"]
    once = _prepare(work, args.arch, args.photos)
    print(f"one-time: {json.dumps(once)}", file=sys.stderr)

    commands: dict[str, list[str]] = {
        way: [
            sys.executable,
            "-m",
            "benchmarks.bench_clip_image",
            "--child",
            way,
            "--work",
            str(work),
            "--arch",
            args.arch,
        ]
        for way in WAYS
    }
    commands["import torch"] = [sys.executable, "-c", "import torch"]
    commands["import open_clip"] = [sys.executable, "-c", "import open_clip"]
    rows = [*commands, "visuallens index", "visuallens index, first"]
    wall: dict[str, list[float]] = {row: [] for row in rows}
    phases: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for r in range(args.rounds):
        shift = r % len(rows)
        for row in rows[shift:] + rows[:shift]:
            if row.startswith("visuallens index"):
                library = work / f"library-{r}"
                run_env = env
                if row == "visuallens index, first":
                    run_env = {**env, "VISUALLENS_CACHE_DIR": str(work / f"cache-{r}")}
                cmd = [
                    sys.executable,
                    "-m",
                    "visuallens_app.cli",
                    "index",
                    str(work / "photos"),
                    "--library",
                    str(library),
                    "--encoder",
                    f"clip:{work / 'clip.safetensors'}",
                ]
                elapsed, _ = _run(cmd, run_env)
                shutil.rmtree(library, ignore_errors=True)
                shutil.rmtree(work / f"cache-{r}", ignore_errors=True)
            else:
                elapsed, out = _run(commands[row], env)
                if row in phases:
                    phases[row].append(json.loads(out.strip().splitlines()[-1]))
            wall[row].append(elapsed)
            print(f"round {r + 1} {row:24s} {elapsed:6.2f} s", file=sys.stderr)

    import numpy as np

    reference = np.load(work / "vectors-open_clip.npy")
    median = {row: statistics.median(v) for row, v in wall.items()}
    summary: dict[str, Any] = {
        "arch": f"{args.arch} random weights",
        "photos": args.photos,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "one_time": once,
        "median_s": median,
        "saved_vs_open_clip_s": {w: median["open_clip"] - median[w] for w in WAYS},
        "open_clip_over_way": {w: median["open_clip"] / median[w] for w in WAYS},
        "median_phases_s": {
            w: {
                key: statistics.median(p[key] for p in phases[w])
                for key in ("import_torch_s", "load_s", "encode_s")
            }
            for w in WAYS
        },
        "imported": {w: phases[w][-1]["imported"] for w in WAYS},
        "min_cosine_to_open_clip": {
            w: float(
                (np.load(work / f"vectors-{w.replace(' ', '_')}.npy") * reference).sum(axis=1).min()
            )
            for w in WAYS
        },
        "all_s": wall,
    }
    print(f"fresh process encoding {args.photos} photos ({args.arch}, medians of {args.rounds}):")
    for w in WAYS:
        p = summary["median_phases_s"][w]
        print(
            f"  {w:12s} {median[w]:6.2f} s  (torch {p['import_torch_s']:.2f}, load "
            f"{p['load_s']:.2f}, encode {p['encode_s']:.2f})  saves "
            f"{summary['saved_vs_open_clip_s'][w]:+6.2f} s  cosine "
            f"{summary['min_cosine_to_open_clip'][w]:.6f}  imports {summary['imported'][w]}"
        )
    for row in SCALE:
        print(f"  {row:24s} {median[row]:6.2f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "clip_image.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
