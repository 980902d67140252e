"""Embedded-encoder throughput before and after the issue-16 fix, with the kernel's share shown.

    .venv/bin/python -m benchmarks.bench_throughput [--photos 24] [--rounds 3]
        [--variants shipped,fixed,...] [--skip-index]

Each variant runs in its own process (allocator and OpenMP settings are per process), and the
variants take turns round after round, so load from elsewhere on the machine hits them all
alike; the table gives medians and ratios to ``shipped``. On a loaded machine CPU ms per photo
(user + system) is steadier than photos/s: spinning and page zeroing show in it, others' load
does not. Variants:

- ``shipped``: 32 images x 2 views per forward, glibc's allocator and libgomp's spinning wait
  as they come (the encoder before issue 16);
- ``micro``: the encoder's CPU micro-batches (2 images x 2 views per forward) alone;
- ``micro+alloc``: and ``devices.configure_allocator`` (buffers up to 32 MiB reused);
- ``fixed``: and OpenMP threads that sleep when idle (``devices.prefer_passive_openmp``):
  what the app runs now;
- ``passive``, ``micro+passive``: the OpenMP policy alone, and with micro-batches but glibc's
  allocator as it comes, to tell the three parts of the fix apart;
- ``keep-env``: 32 images per forward with the allocator told by environment variables to
  keep all its memory (issue 16's experiment; costs peak memory, shown for comparison).

Each process measures (1) ``encode_images`` on pre-decoded 224 px photos and (2) a whole
``index_folders`` run over 1.9 MP JPEGs (decode, thumbnails, embed, store), each with user and
system CPU seconds and minor page faults from ``getrusage``, and the process's peak RSS.
Writes ``benchmarks/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.samples import SAMPLES, decoded_photos, sample_photo

RESULTS = Path(__file__).parent / "results" / "throughput.json"
# variant -> (images per forward or None for the encoder's default, allocator, OpenMP wait)
VARIANTS: dict[str, tuple[int | None, str, str]] = {
    "shipped": (32, "glibc", "spin"),
    "micro": (None, "glibc", "spin"),
    "micro+alloc": (None, "app", "spin"),
    "fixed": (None, "app", "passive"),
    "passive": (32, "glibc", "passive"),
    "micro+passive": (None, "glibc", "passive"),
    "keep-env": (32, "keep-env", "spin"),
}
DEFAULT_VARIANTS = tuple(VARIANTS)
# Issue 16's environment: no mmap at all, never trim, grow the heap 512 MiB at a time.
KEEP_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "2000000000",
    "MALLOC_TOP_PAD_": "536870912",
}


def make_jpegs(folder: Path, n: int, size: tuple[int, int] = (1600, 1200)) -> None:
    """``n`` distinct 1.9 MP JPEGs, like a phone's camera roll scaled down."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = [sample_photo(s).resize(size, Image.Resampling.BILINEAR) for s in SAMPLES]
    for i in range(n):
        image = bases[i % len(bases)].rotate(i % 7, fillcolor=(i % 255, 40, 90))
        image.save(folder / f"IMG_{i:04d}.jpg", quality=90)


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _measured(n: int, run: Any) -> dict[str, float]:
    user0, sys0, faults0 = _usage()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    user1, sys1, faults1 = _usage()
    user, system = user1 - user0, sys1 - sys0
    return {
        "photos_per_s": n / wall,
        "user_s": user,
        "sys_s": system,
        "sys_share": system / max(user + system, 1e-9),
        "faults_per_photo": (faults1 - faults0) / n,
    }


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(variant: str, photos: int, work: Path, index: bool) -> None:
    """One variant in this process: print a JSON line of its measurements."""
    batch, allocator, wait = VARIANTS[variant]
    if wait == "spin":
        import torch  # noqa: F401  # loaded first, torch keeps libgomp's default (spinning)
    from visuallens_app import devices

    if allocator != "app":
        devices._allocator_configured[0] = True  # leave glibc as it comes
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.embedded import EmbeddedEncoder

    encoder = EmbeddedEncoder(cache_dir=work / "cache", batch_size=batch)
    images = decoded_photos(photos)
    encoder.encode_images(images[:4])  # warm-up: kernel selection, first allocations
    out: dict[str, Any] = {"variant": variant}
    out["encode"] = _measured(photos, lambda: encoder.encode_images(images))
    if index:
        library = work / f"lib-{variant}-{os.getpid()}"

        def run() -> None:
            with PhotoStore(library) as store:
                report = run_to_end(index_folders(store, encoder, [work / "jpegs"]))
            assert report.indexed == photos, report
            assert not report.failed, report

        out["index"] = _measured(photos, run)
    out["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(out))


def _run_child(variant: str, photos: int, work: Path, index: bool) -> dict[str, Any]:
    env = dict(os.environ)
    if VARIANTS[variant][1] == "keep-env":
        env.update(KEEP_ENV)
    command = [sys.executable, "-m", "benchmarks.bench_throughput", "--child", variant]
    command += ["--photos", str(photos), "--work", str(work)]
    if not index:
        command.append("--skip-index")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median_rows(runs: list[dict[str, Any]], stage: str) -> dict[str, float]:
    keys = runs[0][stage].keys()
    return {k: statistics.median(r[stage][k] for r in runs) for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    index = not args.skip_index
    if args.child:
        _child(args.child, args.photos, args.work, index)
        return {}
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    os.environ.setdefault(
        "VISUALLENS_CACHE_DIR", str(Path(tempfile.gettempdir()) / "vl-bench-cache")
    )
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="vl-bench-throughput-") as tmp:
        work = Path(tmp)
        if index:
            make_jpegs(work / "jpegs", args.photos)
        for _ in range(args.rounds):
            for variant in variants:  # interleaved: each round runs every variant once
                runs[variant].append(_run_child(variant, args.photos, work, index))
    stages = ["encode", "index"] if index else ["encode"]
    results: dict[str, Any] = {
        "photos": args.photos,
        "rounds": args.rounds,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "timing": "median over rounds; each variant its own process, variants interleaved",
        "variants": {
            v: {
                **{s: _median_rows(r, s) for s in stages},
                "peak_rss_mib": statistics.median(x["peak_rss_mib"] for x in r),
            }
            for v, r in runs.items()
        },
        "raw": runs,
    }
    _print_table(results, stages)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS}")
    return results


def _print_table(results: dict[str, Any], stages: list[str]) -> None:
    rows = results["variants"]
    base = rows.get("shipped")
    load = " ".join(f"{x:.1f}" for x in results["load_avg_before"])
    print(
        f"{results['photos']} photos, {results['rounds']} rounds, {results['cpus']} CPUs, "
        f"load average {load} at start"
    )
    for stage in stages:
        print(f"\n{stage}: medians (x = ratio to shipped)")
        print(
            f"  {'variant':<9} {'photos/s':>9} {'x':>6} {'user s':>7} {'sys s':>7} "
            f"{'sys %':>6} {'CPU ms/photo':>13} {'faults/photo':>13} {'peak MiB':>9}"
        )
        for variant, row in rows.items():
            r = row[stage]
            ratio = r["photos_per_s"] / base[stage]["photos_per_s"] if base else float("nan")
            print(
                f"  {variant:<9} {r['photos_per_s']:>9.1f} {ratio:>6.2f} {r['user_s']:>7.2f} "
                f"{r['sys_s']:>7.2f} {100 * r['sys_share']:>6.1f} "
                f"{1000 * (r['user_s'] + r['sys_s']) / results['photos']:>13.0f} "
                f"{r['faults_per_photo']:>13.0f} {row['peak_rss_mib']:>9.0f}"
            )


if __name__ == "__main__":
    main()
