"""The same behaviour from every vector store: FAISS in the library, and Qdrant (in-process mode,
the same client API as a server). Then the server-only promises: a server that is down is one
sentence and loses nothing, and one emptied or left behind is filled again from the library."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from visuallens_app.errors import LibraryError
from visuallens_app.index.stores import (
    StoreTarget,
    VectorStore,
    VectorStoreUnavailableError,
    check_spec,
    open_vector_store,
)

pytest.importorskip("qdrant_client", reason="the scale extra is not installed")

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(ids: NDArray[np.int64], vectors: NDArray[np.float32], q: NDArray[np.float32], k):
    scores = vectors @ (q / np.linalg.norm(q))
    order = np.argsort(-scores)[:k]
    return [int(ids[i]) for i in order]


@pytest.fixture(params=["faiss", "qdrant"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "faiss" if request.param == "faiss" else f"local:{tmp_path / 'qdrant'}"


def _target(tmp_path: Path, library: str = "lib-a", encoder: str = "enc-1") -> StoreTarget:
    return StoreTarget(library, encoder, tmp_path / library / "index", f"photos-{encoder}")


class Library:
    """What the SQLite store would hand a vector store: ids, vectors, a fingerprint."""

    def __init__(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        self.ids, self.vectors, self.generation, self.reads = ids, vectors, 0, 0

    def fetch(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        self.reads += 1
        return self.ids.copy(), self.vectors.copy()

    @property
    def fingerprint(self) -> str:
        return f"gen-{self.generation}"

    def open(self, spec: str, target: StoreTarget) -> VectorStore:
        return open_vector_store(spec, target, fingerprint=self.fingerprint, fetch=self.fetch)


def _library(seed: int = 0, n: int = 300) -> Library:
    rng = np.random.default_rng(seed)
    return Library(
        rng.permutation(np.arange(1000, 1000 + 2 * n))[:n].astype(np.int64), _unit(rng, n)
    )


def test_search_ranks_like_brute_force_and_leaves_out_what_is_excluded(
    spec: str, tmp_path: Path
) -> None:
    lib = _library()
    store = lib.open(spec, _target(tmp_path))
    assert len(store) == 300
    assert store.dim == DIM
    queries = _unit(np.random.default_rng(7), 5)
    for q, hits in zip(queries, store.search(queries, 10), strict=True):
        assert [pid for pid, _ in hits] == _brute_force(lib.ids, lib.vectors, q, 10)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)
    own = int(lib.ids[5])
    best = store.search(lib.vectors[5], 3)[0]
    assert best[0][0] == own
    assert best[0][1] == pytest.approx(1.0, abs=1e-4)
    without = store.search(lib.vectors[5], 3, exclude={own})[0]
    assert own not in [pid for pid, _ in without]
    assert len(without) == 3
    assert len(store.search(lib.vectors[5], 1000)[0]) == 300  # k beyond the count: all of them


def test_an_unchanged_library_opens_without_reading_its_vectors_again(
    spec: str, tmp_path: Path
) -> None:
    lib = _library()
    lib.open(spec, _target(tmp_path))
    assert lib.reads == 1
    again = lib.open(spec, _target(tmp_path))
    assert lib.reads == 1
    assert len(again) == 300


def test_a_changed_library_is_what_the_store_serves_after_reopening(
    spec: str, tmp_path: Path
) -> None:
    lib = _library()
    lib.open(spec, _target(tmp_path))
    rng = np.random.default_rng(3)
    removed = set(lib.ids[:50].tolist())
    lib.ids = np.concatenate([lib.ids[50:], np.arange(5000, 5020, dtype=np.int64)])
    lib.vectors = np.concatenate([lib.vectors[50:], _unit(rng, 20)])
    changed = int(lib.ids[0])
    lib.vectors[0] = _unit(rng, 1)[0]  # the same photo id with new content
    lib.generation += 1
    store = lib.open(spec, _target(tmp_path))
    assert len(store) == 270
    assert store.fingerprint == "gen-1"
    everything = {pid for pid, _ in store.search(lib.vectors[0], 1000)[0]}
    assert everything == set(lib.ids.tolist())
    assert not everything & removed
    assert store.search(lib.vectors[0], 1)[0][0][0] == changed
    assert store.search(lib.vectors[-1], 1)[0][0][0] == 5019


def test_add_replaces_and_remove_ignores_unknown_ids(spec: str, tmp_path: Path) -> None:
    lib = _library()
    store = lib.open(spec, _target(tmp_path))
    fresh = _unit(np.random.default_rng(11), 2)
    store.add(np.array([7, int(lib.ids[0])], np.int64), fresh, fingerprint="gen-add")
    assert len(store) == 301
    assert store.fingerprint == "gen-add"
    assert store.search(fresh[0], 1)[0][0][0] == 7
    assert store.search(fresh[1], 1)[0][0][0] == int(lib.ids[0])
    assert store.remove([7, 123456789], fingerprint="gen-rm") == 1
    assert len(store) == 300
    assert 7 not in {pid for pid, _ in store.search(fresh[0], 1000)[0]}


def test_libraries_and_encoders_sharing_a_store_never_mix(spec: str, tmp_path: Path) -> None:
    a = _library(seed=1)
    b = _library(seed=2)  # overlapping photo ids, other vectors
    c = _library(seed=3)
    store_a = a.open(spec, _target(tmp_path, "lib-a", "enc-1"))
    store_b = b.open(spec, _target(tmp_path, "lib-b", "enc-1"))
    store_c = c.open(spec, _target(tmp_path, "lib-a", "enc-2"))
    for store, lib in ((store_a, a), (store_b, b), (store_c, c)):
        assert len(store) == 300
        hits = store.search(lib.vectors[9], 1000)[0]
        assert {pid for pid, _ in hits} == set(lib.ids.tolist())
        assert hits[0] == (int(lib.ids[9]), pytest.approx(1.0, abs=1e-4))


def test_searches_from_other_threads_agree(spec: str, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    lib = _library()
    store = lib.open(spec, _target(tmp_path))  # opened on this thread, searched on others (GUI)
    with ThreadPoolExecutor(max_workers=3) as pool:
        found = list(pool.map(lambda i: store.search(lib.vectors[i], 1)[0][0][0], range(12)))
    assert found == [int(i) for i in lib.ids[:12]]


# -- the server store ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_that_is_down_is_one_sentence(tmp_path: Path) -> None:
    lib = _library()
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(VectorStoreUnavailableError) as caught:
        lib.open(url, _target(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert url in message
    assert "safe in the library" in message


def test_an_emptied_server_is_filled_again_from_the_library(tmp_path: Path) -> None:
    from visuallens_app.index.qdrant_store import client_for, data_collection

    spec = f"local:{tmp_path / 'qdrant'}"
    lib = _library()
    lib.open(spec, _target(tmp_path))
    client_for(spec).delete_collection(data_collection(DIM))  # a server re-created empty
    store = lib.open(spec, _target(tmp_path))  # same fingerprint: the count gives it away
    assert lib.reads == 2
    assert len(store) == 300
    assert store.search(lib.vectors[4], 1)[0][0][0] == int(lib.ids[4])


def test_what_is_not_a_vector_store_is_named(tmp_path: Path) -> None:
    assert check_spec("faiss") is None
    assert check_spec("http://nas.local:6333") is None
    assert check_spec(f"local:{tmp_path / 'q'}") is None
    for bad in ("ftp://x", "http://", "local:", "qdrant"):
        assert check_spec(bad) is not None
    with pytest.raises(LibraryError, match="not a vector store"):
        _library().open("milvus://x", _target(tmp_path / "missing"))


# -- as a user meets it -----------------------------------------------------------------------


def _visuallens(*args: str, library: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visuallens_app.cli", *args, "--library", str(library)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )


def test_indexing_while_the_server_is_down_loses_nothing_and_search_refills_it(
    library_dir: Path, photo_dir: Path, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    out = _visuallens(
        "index",
        str(photo_dir),
        "--encoder",
        "embedded",
        "--vector-store",
        down,
        "--json",
        library=library_dir,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["indexed"] == 5
    assert "not reachable" in report["vector_store_unavailable"]
    assert "Traceback" not in out.stderr

    out = _visuallens(
        "search",
        "a cat",
        "--encoder",
        "embedded",
        "--vector-store",
        down,
        "--json",
        library=library_dir,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert "not reachable" in out.stderr

    back = f"local:{tmp_path / 'qdrant'}"  # the server is back, empty: filled from the library
    out = _visuallens(
        "search",
        "a cat",
        "--encoder",
        "embedded",
        "--vector-store",
        back,
        "--json",
        library=library_dir,
    )
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 5
    assert Path(hits[0]["path"]).name == "chelsea.jpg"

    out = _visuallens("search", "cat", "--vector-store", "ftp://nas", library=library_dir)
    assert out.returncode == 1
    assert "is not a vector store" in out.stderr


def test_searches_agree_between_faiss_and_the_server_store(
    library_dir: Path, photo_dir: Path, tmp_path: Path
) -> None:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.search import PhotoSearch
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.embedded import EmbeddedEncoder

    encoder = EmbeddedEncoder()
    with PhotoStore(library_dir) as store:
        run_to_end(index_folders(store, encoder, [photo_dir]))
        faiss = PhotoSearch(store, encoder, vector_store="faiss")
        qdrant = PhotoSearch(store, encoder, vector_store=f"local:{tmp_path / 'q'}")
        for text in ("a cat", "a cup of coffee", "a rocket"):
            a = [(h.photo.path.name, h.score) for h in faiss.text(text, k=5)]
            b = [(h.photo.path.name, h.score) for h in qdrant.text(text, k=5)]
            assert [n for n, _ in a] == [n for n, _ in b]
            np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-4)
        similar = [h.photo.path.name for h in qdrant.similar(photo_dir / "chelsea.jpg", k=4)]
        assert "chelsea.jpg" not in similar
        assert len(similar) == 4


def test_the_vector_store_setting_is_checked_like_the_others(library_dir: Path) -> None:
    from visuallens_app.settings import Settings, config_dir

    path = config_dir() / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"vector_store": "ftp://nas"}), encoding="utf-8")
    settings = Settings.load()
    assert settings.vector_store == "faiss"
    assert len(settings.warnings) == 1
    assert "vector_store" in settings.warnings[0]
    assert "ftp://nas" in settings.warnings[0]
    path.write_text(json.dumps({"vector_store": "http://nas.local:6333"}), encoding="utf-8")
    settings = Settings.load()
    assert settings.vector_store == "http://nas.local:6333"
    assert settings.warnings == ()
