"""VectorIndex: exact and approximate search, and the on-disk cache that must never serve stale or
damaged data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from visuallens_app.errors import Cancelled
from visuallens_app.index import VectorIndex, cache_files, recall_at_k
from visuallens_app.jobs import CancelToken, run_to_end

BIG = 2**40  # photo ids well past 32 bits, to prove they are not truncated


def unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int, seed: int = 0) -> NDArray[np.float32]:
    return unit(np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32))


def sparse_ids(n: int, seed: int = 0) -> NDArray[np.int64]:
    """Non-contiguous, shuffled, large ids, like rowids after deletions (plus an offset)."""
    rng = np.random.default_rng(seed)
    return (BIG + rng.choice(10 * n, size=n, replace=False) * 7).astype(np.int64)


def clustered(
    n: int, dim: int, *, clusters: int = 300, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``n`` vectors and 200 held-out queries from one clustered mixture (like photo embeddings).

    The noise lies mostly along directions shared by all clusters, so neighbouring clusters
    overlap and the approximate index has real work to do.
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    basis = unit(rng.standard_normal((8, dim), dtype=np.float32))

    def draw(m: int) -> NDArray[np.float32]:
        labels = rng.integers(0, clusters, m)
        shared = rng.standard_normal((m, 8), dtype=np.float32) / np.sqrt(8) @ basis
        iso = rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        return unit(centres[labels] + 0.9 * shared + 0.3 * iso)

    return draw(n), draw(200)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------- exact search


def test_exact_search_finds_true_neighbours_with_cosine_scores() -> None:
    vectors = random_unit(500, 32)
    ids = sparse_ids(500)
    index = VectorIndex.build(ids, vectors, fingerprint="v1")
    queries = random_unit(5, 32, seed=1)

    results = index.search(queries, 10)

    assert index.kind == "exact"
    assert len(index) == 500
    assert index.dim == 32
    for query, hits in zip(queries, results, strict=True):
        cosines = vectors @ query
        best = np.argsort(-cosines)[:10]
        assert [photo_id for photo_id, _ in hits] == ids[best].tolist()
        np.testing.assert_allclose([s for _, s in hits], cosines[best], rtol=1e-5, atol=1e-5)


def test_single_query_vector_and_unnormalised_query_give_cosines() -> None:
    vectors = random_unit(50, 16)
    ids = sparse_ids(50)
    index = VectorIndex.build(ids, vectors, fingerprint="v1")

    [hits] = index.search(vectors[3] * 7.0, 1)

    assert hits[0][0] == ids[3]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)


def test_exclude_drops_ids_and_still_fills_k() -> None:
    vectors = random_unit(200, 16)
    ids = sparse_ids(200)
    index = VectorIndex.build(ids, vectors, fingerprint="v1")
    own, runner_up = index.search(vectors[0], 2)[0]

    [hits] = index.search(vectors[0], 5, exclude={own[0], runner_up[0]})

    returned = [photo_id for photo_id, _ in hits]
    assert own[0] == ids[0]
    assert own[0] not in returned
    assert runner_up[0] not in returned
    assert len(returned) == 5


def test_k_larger_than_index_returns_everything_best_first() -> None:
    vectors = random_unit(7, 8)
    ids = sparse_ids(7)
    index = VectorIndex.build(ids, vectors, fingerprint="v1")

    [hits] = index.search(vectors[0], 100)

    assert sorted(photo_id for photo_id, _ in hits) == sorted(ids.tolist())
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True)
    assert index.search(vectors[0], 0) == [[]]


def test_empty_index_returns_empty_lists() -> None:
    index = VectorIndex.build(
        np.empty(0, dtype=np.int64), np.empty((0, 8), dtype=np.float32), fingerprint="empty"
    )

    assert len(index) == 0
    assert index.search(random_unit(3, 8), 10) == [[], [], []]


def test_rejects_duplicate_or_negative_ids() -> None:
    vectors = random_unit(3, 8)
    with pytest.raises(ValueError, match="unique"):
        VectorIndex.build(np.array([1, 2, 1]), vectors, fingerprint="v1")
    with pytest.raises(ValueError, match="non-negative"):
        VectorIndex.build(np.array([1, 2, -1]), vectors, fingerprint="v1")


def test_add_inserts_and_replaces_and_remove_deletes() -> None:
    vectors = random_unit(100, 16)
    ids = np.arange(100, dtype=np.int64) + BIG
    index = VectorIndex.build(ids[:90], vectors[:90], fingerprint="v1")

    index.add(ids[85:], vectors[85:], fingerprint="v2")  # 85-89 replaced, 90-99 new
    assert len(index) == 100
    assert index.search(vectors[95], 1)[0][0][0] == ids[95]
    moved = random_unit(1, 16, seed=9)
    index.add(ids[:1], moved, fingerprint="v3")
    assert index.search(moved[0], 1)[0][0] == (ids[0], pytest.approx(1.0, abs=1e-5))

    assert index.remove([int(ids[95]), 12345], fingerprint="v4") == 1
    assert len(index) == 99
    assert index.search(vectors[95], 1)[0][0][0] != ids[95]
    assert index.fingerprint == "v4"


# ------------------------------------------------------------------------- approximate search


def test_approximate_index_reaches_recall_target_on_clustered_vectors() -> None:
    vectors, queries = clustered(60_000, 64)
    ids = sparse_ids(60_000)
    exact = VectorIndex.build(ids, vectors, fingerprint="v1")
    approx = VectorIndex.build(ids, vectors, fingerprint="v1", exact_threshold=10_000)

    recall = recall_at_k(approx.search(queries, 10), exact.search(queries, 10), 10)

    assert approx.kind == "ivf"
    assert approx.nprobe is not None
    assert approx.nlist is not None
    assert approx.nprobe < approx.nlist  # it really is approximate
    assert recall >= 0.95


def test_recall_at_k_counts_shared_ids() -> None:
    exact = [[(1, 0.9), (2, 0.8)], [(3, 0.9), (4, 0.5)], []]
    approx = [[(2, 0.8), (1, 0.9)], [(3, 0.9), (5, 0.4)], []]

    assert recall_at_k(approx, exact, 2) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- the disk cache


@pytest.mark.parametrize("threshold", [50_000, 0], ids=["exact", "ivf"])
def test_save_load_roundtrip(tmp_path: Path, threshold: int) -> None:
    vectors, queries = clustered(3_000, 32, clusters=30)
    ids = sparse_ids(3_000)
    index = VectorIndex.build(ids, vectors, fingerprint="v1", exact_threshold=threshold)
    index.save(tmp_path, "photos")

    loaded = VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1")

    assert loaded is not None
    assert (loaded.kind, len(loaded), loaded.dim) == (index.kind, 3_000, 32)
    assert loaded.nprobe == index.nprobe
    assert loaded.search(queries, 10) == index.search(queries, 10)
    manifest = json.loads((tmp_path / "photos.json").read_text())
    assert manifest["fingerprint"] == "v1"
    assert manifest["count"] == 3_000
    assert manifest["kind"] == index.kind


def test_resave_replaces_the_previous_file(tmp_path: Path) -> None:
    index = VectorIndex.build(sparse_ids(20), random_unit(20, 8), fingerprint="v1")
    index.save(tmp_path, "photos")
    index.remove([int(sparse_ids(20)[0])], fingerprint="v2")
    index.save(tmp_path, "photos")

    files = files_in(tmp_path)
    assert len(files) == 2  # the manifest and one index file: no leftovers
    loaded = VectorIndex.load(tmp_path, "photos", expected_fingerprint="v2")
    assert loaded is not None
    assert len(loaded) == 19


class FetchCounter:
    """A store stand-in that counts how often the index had to be rebuilt from it."""

    def __init__(self, n: int = 300, dim: int = 16) -> None:
        self.ids = sparse_ids(n)
        self.vectors = random_unit(n, dim)
        self.calls = 0

    def __call__(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        self.calls += 1
        return self.ids, self.vectors


def test_load_or_build_uses_a_consistent_cache(tmp_path: Path) -> None:
    store = FetchCounter()
    first = VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    second = VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)

    assert store.calls == 1
    assert len(second) == len(first) == 300
    assert second.search(store.vectors[:3], 5) == first.search(store.vectors[:3], 5)


def test_deleted_index_file_is_rebuilt(tmp_path: Path) -> None:
    store = FetchCounter()
    VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    next(tmp_path.glob("photos.*.faiss")).unlink()

    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1") is None
    rebuilt = VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    assert store.calls == 2
    assert len(rebuilt) == 300
    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1") is not None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_byte", "empty"])
def test_damaged_index_file_is_rebuilt(tmp_path: Path, damage: str) -> None:
    store = FetchCounter()
    VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    path = next(tmp_path.glob("photos.*.faiss"))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    elif damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF  # same size, bit rot in the vectors
    else:
        data = bytearray()
    path.write_bytes(bytes(data))

    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1") is None
    rebuilt = VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    assert store.calls == 2
    assert rebuilt.search(store.vectors[0], 1)[0][0][0] == store.ids[0]


@pytest.mark.parametrize("manifest", ["", "{not json", "[]", '{"format_version": 1}'])
def test_damaged_manifest_is_rebuilt(tmp_path: Path, manifest: str) -> None:
    store = FetchCounter()
    VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    (tmp_path / "photos.json").write_text(manifest)

    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1") is None
    VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    assert store.calls == 2


def test_manifest_cannot_point_outside_the_folder(tmp_path: Path) -> None:
    store = FetchCounter()
    VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)
    manifest = json.loads((tmp_path / "photos.json").read_text())
    manifest["index_file"] = "../elsewhere.faiss"
    (tmp_path / "photos.json").write_text(json.dumps(manifest))

    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1") is None


def test_fingerprint_mismatch_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    store = FetchCounter()
    VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)

    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v2") is None
    index = VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v2", fetch=store)
    assert store.calls == 2
    assert index.fingerprint == "v2"
    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v2") is not None


def test_what_a_killed_save_left_behind_is_cleaned_when_the_index_is_next_loaded(
    tmp_path: Path,
) -> None:
    index = VectorIndex.build(sparse_ids(20), random_unit(20, 8), fingerprint="v1")
    index.save(tmp_path, "photos")
    live = files_in(tmp_path)
    # What kill -9 at each moment of a save leaves: a half-written index file, a half-written
    # manifest, and the previous index file (killed after the manifest, before the clean-up).
    leftovers = [
        "photos.0123456789abcdef.faiss.tmp",
        "photos.json.0123456789abcdef.tmp",
        "photos.fedcba9876543210.faiss",
    ]
    hour_ago = time.time() - 3600
    for name in leftovers:
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (hour_ago, hour_ago))
    saving_now = tmp_path / "photos.1111111111111111.faiss.tmp"  # another process, mid-save
    saving_now.write_bytes(b"partial")
    (tmp_path / "other.json.0123456789abcdef.tmp").write_bytes(b"not ours")
    os.utime(tmp_path / "other.json.0123456789abcdef.tmp", (hour_ago, hour_ago))

    loaded = VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1")

    assert loaded is not None
    assert len(loaded) == 20
    assert files_in(tmp_path) == sorted([*live, saving_now.name, "other.json.0123456789abcdef.tmp"])


def test_crash_before_the_manifest_keeps_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = VectorIndex.build(sparse_ids(30), random_unit(30, 8), fingerprint="v1")
    old.save(tmp_path, "photos")
    new = VectorIndex.build(sparse_ids(40, seed=1), random_unit(40, 8), fingerprint="v2")

    def crash(path: Path, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache_files, "write_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        new.save(tmp_path, "photos")

    loaded = VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1")
    assert loaded is not None
    assert len(loaded) == 30
    assert VectorIndex.load(tmp_path, "photos", expected_fingerprint="v2") is None
    assert len(files_in(tmp_path)) == 2  # the half-saved file was cleaned up


def test_failed_save_still_returns_a_working_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(path: Path, data: bytes) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(cache_files, "write_atomic", crash)
    store = FetchCounter()

    index = VectorIndex.load_or_build(tmp_path, "photos", fingerprint="v1", fetch=store)

    assert len(index) == 300
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_a_folder_faiss_cannot_write_into_is_said_once_and_the_index_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unwritable = Path("/sys/kernel")  # sysfs refuses new files even to root
    ids, vectors = sparse_ids(20), random_unit(20, 8)

    with caplog.at_level("WARNING", logger="visuallens_app.index"):
        for fingerprint in ("v1", "v2"):  # the library changed: rebuilt, and not saved again
            index = VectorIndex.load_or_build(
                unwritable, "photos", fingerprint=fingerprint, fetch=lambda: (ids, vectors)
            )
            assert index.search(vectors[3:4], 1)[0][0][0] == ids[3]

    assert [r.getMessage() for r in caplog.records] == [
        "The search index could not be saved in /sys/kernel (Permission denied); searches work "
        "without it, and it is rebuilt next time."
    ]


def test_empty_index_roundtrip(tmp_path: Path) -> None:
    empty = VectorIndex.build(
        np.empty(0, dtype=np.int64), np.empty((0, 8), dtype=np.float32), fingerprint="none"
    )
    empty.save(tmp_path, "photos")

    loaded = VectorIndex.load(tmp_path, "photos", expected_fingerprint="none")

    assert loaded is not None
    assert len(loaded) == 0
    assert loaded.search(random_unit(1, 8), 3) == [[]]


def test_missing_folder_loads_as_none(tmp_path: Path) -> None:
    assert VectorIndex.load(tmp_path / "nowhere", "photos", expected_fingerprint="v1") is None


def test_importing_the_package_does_not_import_faiss() -> None:
    code = "import sys, visuallens_app.index; print('faiss' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_build_job_reports_progress_and_can_be_cancelled() -> None:
    vectors, _ = clustered(3_000, 16, clusters=30)
    ids = sparse_ids(3_000)

    stages = {
        p.stage for p in VectorIndex.build_job(ids, vectors, fingerprint="v1", exact_threshold=0)
    }
    assert {"training", "indexing", "calibrating"} <= stages

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_to_end(VectorIndex.build_job(ids, vectors, fingerprint="v1", cancel=token))
