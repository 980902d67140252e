"""Indexing on Ray against the local indexer, same photos, same run; and the single writer's limit.

    .venv/bin/python -m benchmarks.bench_ray_index [--photos 96] [--workers 2]

1. Import and start-up costs: ``import ray``, ``import ray.data``, a local ``ray.init``.
2. photos/s of a whole ``index_folders`` run over the same ~1.9 MP JPEGs (distinct files):
   the local thread-pool indexer, then ``RayEmbedder`` on a local cluster of this machine's CPUs
   (cluster start-up excluded, reported apart).
3. What each photo costs, measured apart: decode (JPEG draft mode + thumbnail), encode (the
   embedded encoder on 224 px images), the one store writer (``write_batch`` of 32 photos with
   384-d vectors, in one transaction), and the driver's handling of a worker's result (open the
   JPEG thumbnail, store its bytes) — the numbers behind the 10M-photo estimate.
Writes benchmarks/results/ray_index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import ImageOps

from benchmarks.samples import SAMPLES, decoded_photos, sample_photo

RESULTS = Path(__file__).parent / "results" / "ray_index.json"


def import_costs() -> dict[str, float]:
    """Seconds for ``import ray`` and ``import ray.data`` in a fresh interpreter."""
    code = (
        "import time; t=time.perf_counter(); import ray; a=time.perf_counter()-t; "
        "import ray.data; b=time.perf_counter()-t-a; print(a, b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    a, b = (float(x) for x in out.stdout.split())
    return {"import_ray_s": round(a, 2), "import_ray_data_s": round(b, 2)}


def make_photos(folder: Path, n: int) -> None:
    """``n`` distinct ~1.9 MP JPEGs (each sample upscaled, rotated, mirrored, cropped)."""
    folder.mkdir(parents=True)
    bases = [sample_photo(name) for name in SAMPLES]
    for i in range(n):
        base = bases[i % len(bases)]
        scale = 1600 / max(base.size)
        image = base.resize((round(base.width * scale), round(base.height * scale)))
        image = image.rotate(90 * (i // len(bases) % 4), expand=True)
        if i // (4 * len(bases)) % 2:
            image = ImageOps.mirror(image)
        image = image.crop((i % 11, 0, image.width, image.height))
        image.save(folder / f"photo-{i:04d}.jpg", quality=90)


def index_rate(folder: Path, library: Path, encoder: object, embed: object | None) -> float:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore

    with PhotoStore(library) as store:
        if embed is not None:
            embed.thumbnails = store.thumbnails  # type: ignore[attr-defined]
        start = time.perf_counter()
        report = run_to_end(index_folders(store, encoder, [folder], embed=embed))  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
    assert report.indexed == len(list(folder.iterdir())), report
    return report.indexed / seconds


def per_photo_costs(folder: Path, encoder: object, work: Path) -> dict[str, float]:
    """ms per photo of decode, encode and the store writer, each measured alone."""
    from visuallens_app.library.decode import decode_photo
    from visuallens_app.library.store import NewPhoto, PhotoStore

    files = sorted(folder.iterdir())[:32]
    start = time.perf_counter()
    for path in files:
        decode_photo(path, target=224)
    decode_ms = (time.perf_counter() - start) * 1000 / len(files)

    # What the driver does per photo a Ray worker sends back: open its JPEG thumbnail, store it.
    import io

    from PIL import Image

    from visuallens_app.library.thumbnails import ThumbnailCache, encode

    jpegs = [encode(decode_photo(path, target=224).thumbnail) for path in files]
    cache = ThumbnailCache(work / "thumbs")
    start = time.perf_counter()
    for i, jpeg in enumerate(jpegs):
        Image.open(io.BytesIO(jpeg)).load()
        cache.save_encoded(f"{i:032x}", jpeg)
    thumb_ms = (time.perf_counter() - start) * 1000 / len(jpegs)
    jpeg_kib = sum(map(len, jpegs)) / len(jpegs) / 1024

    images = decoded_photos(64)
    encoder.encode_images(images[:4])  # type: ignore[attr-defined]  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), 32):
        encoder.encode_images(images[i : i + 32])  # type: ignore[attr-defined]
    encode_ms = (time.perf_counter() - start) * 1000 / len(images)

    rng = np.random.default_rng(0)
    root = work / "writer-root"
    root.mkdir()
    batches, size = 100, 32
    with PhotoStore(work / "writer-lib") as store:
        store.add_roots([root])
        start = time.perf_counter()
        for b in range(batches):
            photos = [
                NewPhoto(
                    path=root / f"{b:04d}" / f"p{i}.jpg",
                    root=root,
                    size=1,
                    mtime_ns=1,
                    content_hash=f"{b:06d}{i:06d}",
                    width=1600,
                    height=1067,
                    format="JPEG",
                    taken_at=None,
                    gps=None,
                    camera=None,
                    orientation=1,
                )
                for i in range(size)
            ]
            vectors = {p.content_hash: rng.standard_normal(384).astype(np.float32) for p in photos}
            store.write_batch(photos, vectors, "bench-encoder")
        write_ms = (time.perf_counter() - start) * 1000 / (batches * size)
    return {
        "decode_ms_per_photo": round(decode_ms, 2),
        "encode_ms_per_photo": round(encode_ms, 2),
        "store_write_ms_per_photo": round(write_ms, 3),
        "driver_thumbnail_ms_per_photo": round(thumb_ms, 2),
        "thumbnail_jpeg_kib": round(jpeg_kib, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--workers", type=int, default=0, help="Ray actors; default: CPUs")
    args = parser.parse_args(argv)
    from visuallens_app.library.ray_indexer import RayEmbedder
    from visuallens_app.models.embedded import EmbeddedEncoder

    result: dict[str, object] = {"machine": platform.platform(), "cpus": os.cpu_count()}
    result.update(import_costs())
    print(json.dumps(result), flush=True)
    encoder = EmbeddedEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_photos(work / "photos", args.photos)
        result["local_photos_per_s"] = round(
            index_rate(work / "photos", work / "local", encoder, None), 2
        )
        print(json.dumps(result), flush=True)

        import ray

        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
        result["ray_init_s"] = round(time.perf_counter() - start, 2)
        embed = RayEmbedder(
            address=None,
            encoder_name="embedded",
            device="cpu",
            encoder_id=encoder.id,
            input_size=encoder.input_size,
            workers=args.workers or None,
        )
        try:
            result["ray_photos_per_s"] = round(
                index_rate(work / "photos", work / "ray", encoder, embed), 2
            )
        finally:
            ray.shutdown()
        result["ray_over_local"] = round(
            float(result["ray_photos_per_s"]) / float(result["local_photos_per_s"]),
            3,  # type: ignore[arg-type]
        )
        print(json.dumps(result), flush=True)
        result.update(per_photo_costs(work / "photos", encoder, work))
    print(json.dumps(result, indent=2))
    writer = 1000 / float(result["store_write_ms_per_photo"])  # type: ignore[arg-type]
    print(f"the single store writer alone sustains ~{writer:,.0f} photos/s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
