"""Indexing on a local Ray cluster (``ray.init(num_cpus=2)``) over real sample photos: the same
library as the local indexer, a bad file reported the same way, a killed job resumed."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from visuallens_app.jobs import CancelToken, run_to_end
from visuallens_app.library.indexer import BATCH_SIZE, IndexReport, index_folders
from visuallens_app.library.store import PhotoStore
from visuallens_app.models.base import Encoder

ray = pytest.importorskip("ray", reason="the scale extra is not installed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A two-CPU Ray cluster on this machine, for the whole module; yields its address."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 2**20,
    )
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    from visuallens_app.models.embedded import EmbeddedEncoder

    return EmbeddedEncoder()


def _embedder(store: PhotoStore, encoder: Encoder):
    from visuallens_app.library.ray_indexer import RayEmbedder

    return RayEmbedder(
        address=None,
        encoder_name="embedded",
        device="cpu",
        encoder_id=encoder.id,
        input_size=encoder.input_size,
        thumbnails=store.thumbnails,
    )


def _index(library: Path, encoder: Encoder, root: Path, *, on_ray: bool, cancel=None):
    with PhotoStore(library) as store:
        embed = _embedder(store, encoder) if on_ray else None
        report: IndexReport = run_to_end(
            index_folders(store, encoder, [root], embed=embed, cancel=cancel)
        )
        return report


def _vectors_by_name(library: Path, encoder: Encoder) -> dict[str, np.ndarray]:
    with PhotoStore(library) as store:
        ids, vectors = store.vectors(encoder.id)
        records = store.photos_by_id(ids.tolist())
        return {records[int(i)].path.name: v for i, v in zip(ids, vectors, strict=True)}


def test_ray_indexes_like_the_local_indexer_and_reports_a_bad_file_the_same(
    cluster: str, photo_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a photo")
    local = _index(tmp_path / "local", encoder, photo_dir, on_ray=False)
    on_ray = _index(tmp_path / "ray", encoder, photo_dir, on_ray=True)
    assert on_ray.indexed == local.indexed == 5
    assert [Path(p).name for p, _ in on_ray.failed] == ["broken.jpg"]
    assert on_ray.failed == local.failed

    a = _vectors_by_name(tmp_path / "local", encoder)
    b = _vectors_by_name(tmp_path / "ray", encoder)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
    with PhotoStore(tmp_path / "ray") as store, PhotoStore(tmp_path / "local") as local_store:
        photos = store.list_photos()
        for photo in photos:  # the grid shows the very same thumbnails
            made_on_ray = store.thumbnails.path_for(photo.content_hash).read_bytes()
            made_here = local_store.thumbnails.path_for(photo.content_hash).read_bytes()
            assert made_on_ray == made_here
        cat = next(p for p in photos if p.path.name == "chelsea.jpg")
        assert (cat.width, cat.height) == (451, 300)
        # The classifier's confidence and document signals, which the lens weighs, too.
        signals = []
        for library in (store, local_store):
            names = {p.id: p.path.name for p in library.list_photos()}
            ids, values = library.photo_signals(encoder.id)
            signals.append({names[int(i)]: row for i, row in zip(ids, values, strict=True)})
        assert signals[0].keys() == signals[1].keys() == a.keys()
        for name, row in signals[0].items():
            assert not np.isnan(row).any(), name
            np.testing.assert_allclose(row, signals[1][name], atol=1e-5, err_msg=name)
    again = _index(tmp_path / "ray", encoder, photo_dir, on_ray=True)
    assert (again.indexed, again.unchanged) == (0, 5)  # the broken file is not read again


def _many_photos(folder: Path, photo_dir: Path, n: int) -> None:
    """``n`` distinct photos (mirrored, rotated, cropped samples), so each has its own vector."""
    folder.mkdir()
    sources = sorted(photo_dir.glob("*.jpg"))
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as image:
            variant = image.rotate(90 * (i // len(sources) % 4), expand=True)
            if i // (4 * len(sources)) % 2:
                variant = ImageOps.mirror(variant)
            variant = variant.crop((i % 7, 0, variant.width, variant.height))
            variant.save(folder / f"photo-{i:03d}.jpg", quality=85)


def test_a_cancelled_ray_job_keeps_its_batches_and_resumes_without_duplicates(
    cluster: str, photo_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    folder = tmp_path / "many"
    _many_photos(folder, photo_dir, BATCH_SIZE + 8)
    library = tmp_path / "lib"
    cancel = CancelToken()
    with PhotoStore(library) as store:
        job = index_folders(
            store, encoder, [folder], embed=_embedder(store, encoder), cancel=cancel
        )
        try:
            while True:
                progress = next(job)
                if progress.stage == "index" and progress.done >= 4:
                    cancel.cancel()  # Ctrl-C or the window's Cancel, after the first batch
        except StopIteration as stop:
            first: IndexReport = stop.value
    assert first.cancelled
    kept = first.indexed
    assert 4 <= kept < BATCH_SIZE + 8  # the batches written before the cancel, not all
    second = _index(library, encoder, folder, on_ray=True)
    assert (second.indexed, second.unchanged) == (BATCH_SIZE + 8 - kept, kept)
    with sqlite3.connect(library / "library.sqlite") as db:
        paths = [row[0] for row in db.execute("SELECT path FROM photos")]
        vectors = db.execute("SELECT count(*) FROM vectors").fetchone()[0]
    assert len(paths) == len(set(paths)) == BATCH_SIZE + 8
    assert vectors == BATCH_SIZE + 8


def test_a_killed_ray_job_resumes_without_duplicates(
    cluster: str, photo_dir: Path, tmp_path: Path, library_dir: Path
) -> None:
    folder = tmp_path / "many"
    _many_photos(folder, photo_dir, 3 * BATCH_SIZE)
    command = [sys.executable, "-m", "visuallens_app.cli", "index", str(folder), "--json"]
    command += ["--encoder", "embedded", "--ray", cluster, "--library", str(library_dir)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    database = library_dir / "library.sqlite"
    deadline = time.monotonic() + 240
    committed = 0
    while time.monotonic() < deadline and driver.poll() is None and committed == 0:
        time.sleep(0.2)
        if database.exists():
            with sqlite3.connect(database, timeout=5) as db, suppress(sqlite3.OperationalError):
                # (no such table yet while the driver creates the library)
                committed = db.execute("SELECT count(*) FROM photos").fetchone()[0]
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    assert committed > 0, "the driver wrote nothing before it was killed"

    out = subprocess.run(command, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    with sqlite3.connect(database) as db:
        paths = [row[0] for row in db.execute("SELECT path FROM photos")]
    assert len(paths) == len(set(paths)) == 3 * BATCH_SIZE
    assert resumed["indexed"] + resumed["unchanged"] == 3 * BATCH_SIZE
    assert resumed["unchanged"] >= committed
    assert resumed["indexed"] > 0  # the kill interrupted real work, which the rerun finished
