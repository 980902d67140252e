"""A command loads only what it uses: no model for a re-index with nothing new, only the text side
of an encoder for a text query (issue 13). Observed from outside: which modules a fresh process
imported, and which of a model's parameters hold weights."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visuallens_app.errors import ModelUnavailableError
from visuallens_app.models.clip import (
    _DEFAULT_CFG,
    DEFAULT_ARCH,
    DEFAULT_PRETRAINED,
    ClipEncoder,
)
from visuallens_app.models.embedded import EmbeddedEncoder

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

# Runs the CLI in a fresh interpreter and reports, on its last stderr line, which of the heavy
# modules that process ended up importing.
_RUN_CLI = """
import json, sys
from visuallens_app.cli import main
code = main(sys.argv[1:])
heavy = ["torch", "torchvision", "transformers", "open_clip", "efficientnet_lite_pytorch"]
print(json.dumps({"code": code, "imported": [m for m in heavy if m in sys.modules]}),
      file=sys.stderr)
"""


def _cli(*args: str, library: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *args, "--library", str(library)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out, json.loads(out.stderr.strip().splitlines()[-1])


def test_reindex_of_an_unchanged_folder_loads_no_model_and_a_text_query_no_image_model(
    library_dir: Path, photo_dir: Path
) -> None:
    out, seen = _cli("index", str(photo_dir), "--json", library=library_dir)
    assert json.loads(out.stdout)["indexed"] == 5
    assert "efficientnet_lite_pytorch" in seen["imported"]  # it did need the image model

    out, seen = _cli("index", str(photo_dir), "--json", library=library_dir)
    report = json.loads(out.stdout)
    assert (report["indexed"], report["unchanged"]) == (0, 5)
    assert seen["imported"] == []  # not even torch

    out, seen = _cli("search", "a cup of coffee", "-k", "2", "--json", library=library_dir)
    assert Path(json.loads(out.stdout)[0]["path"]).name == "coffee.jpg"
    assert seen["imported"] == ["torch"]  # the text model on torch; no image model, no transformers
    first = json.loads(out.stdout)

    # The same text again: its embedding comes from the library, no model at all.
    out, seen = _cli("search", "a cup of coffee", "-k", "2", "--json", library=library_dir)
    assert json.loads(out.stdout) == first
    assert seen["imported"] == []


def test_cached_query_vectors_belong_to_their_encoder(library_dir: Path) -> None:
    from visuallens_app.library.store import QUERY_CACHE_ROWS, PhotoStore

    with PhotoStore(library_dir) as store:
        vector = np.linspace(-1, 1, 8, dtype=np.float32)
        store.remember_query_vector("encoder-a", "a cat", vector)
        np.testing.assert_array_equal(store.query_vector("encoder-a", "a cat"), vector)
        assert store.query_vector("encoder-b", "a cat") is None  # another encoder's space
        assert store.query_vector("encoder-a", "a dog") is None
        for i in range(QUERY_CACHE_ROWS + 5):
            store.remember_query_vector("encoder-a", f"text {i}", vector)
        (rows,) = store.db.execute("SELECT count(*) FROM query_vectors").fetchone()
        assert rows == QUERY_CACHE_ROWS  # bounded, the oldest go first
        assert store.query_vector("encoder-a", "a cat") is None


def test_embedded_text_side_alone_gives_the_vectors_of_the_whole_encoder(tmp_path: Path) -> None:
    lazy = EmbeddedEncoder(cache_dir=tmp_path)
    assert lazy.loaded_parts == frozenset()
    assert lazy.dim == 384  # known without loading anything
    texts = ["a cup of coffee", "an astronaut"]
    vectors = lazy.encode_texts(texts)
    assert lazy.loaded_parts == {"text"}

    whole = EmbeddedEncoder(cache_dir=tmp_path)
    whole.load()
    assert whole.loaded_parts == {"text", "image"}
    np.testing.assert_allclose(vectors, whole.encode_texts(texts), atol=1e-6)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_clip_checkpoint_text_query_reads_only_the_text_tower(
    tmp_path: Path, library_dir: Path, sample_images: dict[str, Image.Image], suffix: str
) -> None:
    import torch
    from safetensors.torch import save_file

    reference = ClipEncoder.random(model_cfg=TINY_CLIP, seed=3)
    state = {k: v.contiguous() for k, v in reference._model.state_dict().items()}
    checkpoint = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(checkpoint))
    else:
        torch.save(state, checkpoint)

    # A tiny CLIP is not a named architecture: register its config the way open_clip reads one.
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS["tiny-test"] = json.loads(json.dumps(TINY_CLIP))
    try:
        assert "tiny-test" in open_clip.list_models()
        lazy = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
        assert lazy.loaded_towers == frozenset()  # nothing built yet
        texts = ["a cat", "a cup of coffee"]
        got = lazy.encode_texts(texts)
        assert lazy.loaded_towers == {"text"}
        visual = list(lazy._model.visual.parameters())
        assert visual
        assert all(p.is_meta for p in visual)  # no image weight in memory at all
        np.testing.assert_allclose(got, reference.encode_texts(texts), atol=1e-6)

        images = [sample_images["chelsea"], sample_images["coffee"]]
        np.testing.assert_allclose(
            lazy.encode_images(images), reference.encode_images(images), atol=1e-6
        )
        assert lazy.loaded_towers == {"text", "image"}
    finally:
        _MODEL_CONFIGS.pop("tiny-test", None)


def test_a_checkpoint_of_another_architecture_is_one_sentence(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from visuallens_app.errors import ModelUnavailableError

    reference = ClipEncoder.random(model_cfg=TINY_CLIP, seed=3)
    state = {k: v.contiguous() for k, v in reference._model.state_dict().items()}
    checkpoint = tmp_path / "tiny.safetensors"
    save_file(state, str(checkpoint))
    lazy = ClipEncoder.from_checkpoint(checkpoint, device="cpu")  # ViT-B-32 expected
    with pytest.raises(ModelUnavailableError) as err:
        lazy.encode_texts(["a cat"])
    assert "\n" not in str(err.value)
    assert "tiny.safetensors" in str(err.value)


def test_the_default_clip_entry_matches_open_clip() -> None:
    from open_clip.pretrained import get_pretrained_cfg

    assert dict(get_pretrained_cfg(DEFAULT_ARCH, DEFAULT_PRETRAINED)) == _DEFAULT_CFG


@pytest.mark.parametrize("threshold", [50_000, 0], ids=["exact", "ivf"])
def test_a_loaded_index_is_mapped_from_its_file_and_still_takes_changes(
    tmp_path: Path, threshold: int
) -> None:
    from visuallens_app.index import VectorIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2_000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10, 2_010, dtype=np.int64)
    VectorIndex.build(ids, vectors, fingerprint="v1", exact_threshold=threshold).save(
        tmp_path, "photos"
    )
    (index_file,) = tmp_path.glob("photos*.faiss")
    maps_before = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    assert str(index_file) not in maps_before

    loaded = VectorIndex.load(tmp_path, "photos", expected_fingerprint="v1")
    assert loaded is not None
    if Path("/proc/self/maps").exists():  # the file's pages are mapped, not read into the heap
        assert str(index_file) in Path("/proc/self/maps").read_text()
    query = vectors[5]
    assert loaded.search(query, 1)[0][0][0] == 15
    on_disk = index_file.read_bytes()

    loaded.add(np.array([5_000], dtype=np.int64), -query[None, :], fingerprint="v2")
    assert loaded.remove([15], fingerprint="v3") == 1
    top = [pid for pid, _ in loaded.search(-query, 1)[0]]
    assert top == [5_000]
    assert 15 not in [pid for pid, _ in loaded.search(query, 5)[0]]
    assert index_file.read_bytes() == on_disk  # changing the index never writes through the map


def test_rescan_snapshot_is_never_trusted_after_the_library_changed(
    library_dir: Path, photo_dir: Path
) -> None:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore

    tiny = ClipEncoder.random(model_cfg=TINY_CLIP)

    def index() -> tuple[int, int, int]:
        with PhotoStore(library_dir) as store:
            report = run_to_end(index_folders(store, tiny, [photo_dir]))
        return report.indexed, report.unchanged, report.removed

    assert index() == (5, 0, 0)
    assert index() == (0, 5, 0)
    assert list((library_dir / "scan-cache").iterdir())  # the re-scan kept its snapshot
    assert index() == (0, 5, 0)  # ...and trusts it while nothing changed

    cat = photo_dir / "chelsea.jpg"
    data = cat.read_bytes()
    cat.unlink()
    assert index() == (0, 4, 1)
    cat.write_bytes(data)  # back, with a new mtime: indexed again, not "unchanged" from before
    assert index() == (1, 4, 0)
    os.utime(cat, ns=(cat.stat().st_atime_ns, cat.stat().st_mtime_ns + 10**9))
    assert index() == (1, 4, 0)  # a touched file is read again
    assert index() == (0, 5, 0)


def test_onnx_runtime_classifier_gives_the_vectors_of_pytorch(
    tmp_path: Path, sample_images: dict[str, Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    images = list(sample_images.values())
    monkeypatch.setenv("VISUALLENS_RUNTIME", "torch")
    eager = EmbeddedEncoder(cache_dir=tmp_path)
    assert eager.image_runtime == "torch"
    monkeypatch.delenv("VISUALLENS_RUNTIME")
    fast = EmbeddedEncoder(cache_dir=tmp_path)
    assert fast.image_runtime == "onnxruntime"
    assert list(tmp_path.rglob("*.onnx"))  # exported once, reused by the next start
    cosines = (eager.encode_images(images) * fast.encode_images(images)).sum(axis=1)
    assert cosines.min() >= 0.999


def test_pytorch_runs_the_classifier_when_asked(
    tmp_path: Path, sample_images: dict[str, Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISUALLENS_RUNTIME", "torch")
    encoder = EmbeddedEncoder(cache_dir=tmp_path)
    assert encoder.encode_images([sample_images["coffee"]]).shape == (1, 384)
    assert encoder.image_runtime == "torch"
    assert not list(tmp_path.rglob("*.onnx"))


def test_a_clip_tag_looked_up_once_is_known_later_without_importing_open_clip(
    library_dir: Path,
) -> None:
    lookup = (
        "import json, sys\n"
        "from visuallens_app.models import clip\n"
        "clip._check_arch_and_tag('ViT-B-32-256', 'datacomp_s34b_b86k')\n"
        "cfg = clip._pretrained_cfg('ViT-B-32-256', 'datacomp_s34b_b86k')\n"
        "print(json.dumps({'hub': cfg['hf_hub'], 'open_clip': 'open_clip' in sys.modules}))\n"
    )

    def run() -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", lookup],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            check=True,
        )
        return dict(json.loads(out.stdout))

    first = run()
    assert first["open_clip"] is True
    second = run()
    assert second == {"hub": first["hub"], "open_clip": False}
    assert "DataComp" in str(second["hub"])


def test_class_names_are_torchvisions_without_importing_torchvision() -> None:
    probe = (
        "import json, sys\n"
        "from visuallens_app.models.embedded import imagenet_class_names\n"
        "names = imagenet_class_names('wordnet')\n"
        "print(json.dumps({'names': names, 'torchvision': 'torchvision' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out)
    assert seen["torchvision"] is False
    from torchvision.models import EfficientNet_B0_Weights

    assert seen["names"] == list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


# -- a cold CLIP text query without open_clip (clip_text.py) -------------------------------------

# Texts that exercise the tokenizer's cleaning (ftfy, HTML entities, case, white space), its
# byte-level BPE (accents, emoji, CJK), numbers split digit by digit, and truncation at the
# tiny model's 16 positions.
_AWKWARD_TEXTS = [
    "a cat",
    "A CUP of Coffee   on a saucer",
    "",
    "  \t the Café's crème brûlée &amp; l&#39;été  ",
    "rocket 3-2-1 launch in 2024!!!",
    "東京の夜景 🌃 and a dog 🐕",
    "it's what you'll see, isn't it? we're done",
    "a very long caption about a red bicycle leaning on a wall " * 5,
]

# Encodes _AWKWARD_TEXTS with a CLIP checkpoint in a fresh interpreter; prints the vectors and
# whether open_clip or torch were imported.
_COLD_TEXT_QUERY = """
import json, sys
from visuallens_app.models.clip import ClipEncoder
encoder = ClipEncoder.from_checkpoint(sys.argv[1], arch="tiny-test", device="cpu")
vectors = encoder.encode_texts(json.loads(sys.argv[2]))
print(json.dumps({"vectors": vectors.tolist(), "dim": encoder.dim,
                  "imported": [m for m in ("open_clip", "torch") if m in sys.modules]}))
"""


def _tiny_checkpoint(folder: Path, suffix: str, seed: int, cfg: dict[str, object]) -> ClipEncoder:
    """A tiny random CLIP saved as ``folder/tiny{suffix}``; returns the in-memory reference."""
    import torch
    from safetensors.torch import save_file

    reference = ClipEncoder.random(model_cfg=cfg, seed=seed)
    state = {k: v.contiguous() for k, v in reference._model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(folder / f"tiny{suffix}"))
    else:
        torch.save(state, folder / f"tiny{suffix}")
    return reference


def _cold_text_query(checkpoint: Path, texts: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _COLD_TEXT_QUERY, str(checkpoint), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@contextlib.contextmanager
def _tiny_arch(cfg: dict[str, object]) -> Iterator[None]:
    """Register ``cfg`` as open_clip architecture "tiny-test", the way open_clip reads one."""
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS["tiny-test"] = json.loads(json.dumps(cfg))
    try:
        yield
    finally:
        _MODEL_CONFIGS.pop("tiny-test", None)


def test_the_ported_clip_tokenizer_gives_open_clips_token_ids() -> None:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    from visuallens_app.models.clip_text import ClipTokenizer

    for context in (77, 16):
        ours = ClipTokenizer(Path(default_bpe()), context)
        theirs = SimpleTokenizer(context_length=context)
        np.testing.assert_array_equal(ours(_AWKWARD_TEXTS), theirs(_AWKWARD_TEXTS).numpy())
    assert ours("a cat")[0, 0] == theirs.sot_token_id  # a lone string is one row too


def _through_open_clip(checkpoint: Path, texts: list[str], cfg: dict[str, object]) -> object:
    """``texts`` encoded in this process by an encoder that builds its open_clip model."""
    with _tiny_arch(cfg):
        encoder = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
        vectors = encoder.encode_texts(texts)
        assert encoder._model is not None  # open_clip's path, not the cache
    return vectors


@pytest.mark.parametrize(
    ("suffix", "quick_gelu"),
    [(".safetensors", False), (".bin", False), (".safetensors", True)],
    ids=["safetensors", "bin", "quick-gelu"],
)
def test_a_cold_clip_text_query_imports_neither_open_clip_nor_torch(
    tmp_path: Path, library_dir: Path, suffix: str, quick_gelu: bool
) -> None:
    cfg = {**TINY_CLIP, "quick_gelu": True} if quick_gelu else TINY_CLIP
    reference = _tiny_checkpoint(tmp_path, suffix, seed=5, cfg=cfg)
    checkpoint = tmp_path / f"tiny{suffix}"
    expected = reference.encode_texts(_AWKWARD_TEXTS)
    first = _through_open_clip(checkpoint, _AWKWARD_TEXTS, cfg)  # keeps the text side
    np.testing.assert_allclose(first, expected, atol=1e-6)

    cold = _cold_text_query(checkpoint, _AWKWARD_TEXTS)
    assert cold["imported"] == []
    assert cold["dim"] == 32
    np.testing.assert_allclose(np.array(cold["vectors"]), expected, atol=1e-5)

    (entry,) = (library_dir.parent / "cache" / "encoders" / "clip-text").iterdir()
    copied = list(entry.glob("*.safetensors"))
    # A safetensors checkpoint is read in place; a pickled one gets its text weights copied.
    assert bool(copied) == (suffix == ".bin")


def test_a_replaced_checkpoint_or_a_damaged_cache_never_gives_stale_vectors(
    tmp_path: Path, library_dir: Path
) -> None:
    texts = _AWKWARD_TEXTS[:4]
    _tiny_checkpoint(tmp_path, ".bin", seed=5, cfg=TINY_CLIP)
    checkpoint = tmp_path / "tiny.bin"
    _through_open_clip(checkpoint, texts, TINY_CLIP)
    before = _cold_text_query(checkpoint, texts)
    assert before["imported"] == []

    # Other weights in the same file: the old entry does not answer for them.
    replaced = _tiny_checkpoint(tmp_path, ".bin", seed=6, cfg=TINY_CLIP)
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))
    expected = replaced.encode_texts(texts)
    assert np.abs(np.array(before["vectors"]) - expected).max() > 0.1
    with pytest.raises(ModelUnavailableError):  # no entry: it needs open_clip (and the arch)
        _cold_text_query_in_process(checkpoint, texts)
    np.testing.assert_allclose(
        _through_open_clip(checkpoint, texts, TINY_CLIP), expected, atol=1e-6
    )
    after = _cold_text_query(checkpoint, texts)
    assert after["imported"] == []
    np.testing.assert_allclose(np.array(after["vectors"]), expected, atol=1e-5)

    # A damaged entry is passed over, and open_clip's next load writes it anew.
    cache = library_dir.parent / "cache" / "encoders" / "clip-text"
    for config in cache.glob("*/text-tower.json"):
        config.write_text("{not json", encoding="utf-8")
    np.testing.assert_allclose(
        _through_open_clip(checkpoint, texts, TINY_CLIP), expected, atol=1e-6
    )
    repaired = _cold_text_query(checkpoint, texts)
    assert repaired["imported"] == []
    np.testing.assert_allclose(np.array(repaired["vectors"]), expected, atol=1e-5)

    # Truncated weights (a disk that filled up, a copy cut short): the query is answered by
    # open_clip instead of failing, and the entry is written anew for the next one.
    for weights in cache.glob("*/text-tower.safetensors"):
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with _tiny_arch(TINY_CLIP):
        answered = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
        np.testing.assert_allclose(answered.encode_texts(texts), expected, atol=1e-6)
    rewritten = _cold_text_query(checkpoint, texts)
    assert rewritten["imported"] == []
    np.testing.assert_allclose(np.array(rewritten["vectors"]), expected, atol=1e-5)


def _cold_text_query_in_process(checkpoint: Path, texts: list[str]) -> object:
    """An encoder of the unregistered "tiny-test" arch: only a cache entry can answer it."""
    return ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu").encode_texts(
        texts
    )


def test_an_encoder_answering_from_the_text_cache_still_encodes_images(
    tmp_path: Path, library_dir: Path, sample_images: dict[str, Image.Image]
) -> None:
    reference = _tiny_checkpoint(tmp_path, ".safetensors", seed=7, cfg=TINY_CLIP)
    checkpoint = tmp_path / "tiny.safetensors"
    with _tiny_arch(TINY_CLIP):
        ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu").encode_texts(["x"])
        lazy = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
        texts = ["a cat", "a cup of coffee"]
        np.testing.assert_allclose(
            lazy.encode_texts(texts), reference.encode_texts(texts), atol=1e-5
        )
        assert lazy.loaded_towers == {"text"}
        assert lazy._model is None  # answered without building an open_clip model
        images = [sample_images["chelsea"], sample_images["coffee"]]
        np.testing.assert_allclose(
            lazy.encode_images(images), reference.encode_images(images), atol=1e-6
        )
        assert lazy.loaded_towers == {"text", "image"}


# -- indexing new photos without open_clip (clip_image.py) ---------------------------------------

# Indexes a folder with a CLIP checkpoint in a fresh interpreter, then encodes its photos; prints
# the vectors and which of open_clip's imports that process ended up with.
_COLD_INDEX = """
import json, sys
from pathlib import Path
from PIL import Image
from visuallens_app.jobs import run_to_end
from visuallens_app.library.indexer import index_folders
from visuallens_app.library.store import PhotoStore
from visuallens_app.models.clip import ClipEncoder
encoder = ClipEncoder.from_checkpoint(sys.argv[1], arch="tiny-test", device="cpu")
photos = Path(sys.argv[2])
with PhotoStore(Path(sys.argv[3])) as store:
    report = run_to_end(index_folders(store, encoder, [photos]))
files = sorted(photos.glob("*.jpg"))
vectors = encoder.encode_images([Image.open(f) for f in files])
heavy = ("open_clip", "timm", "torchvision", "transformers")
print(json.dumps({"indexed": report.indexed, "vectors": vectors.tolist(), "dim": encoder.dim,
                  "loaded": sorted(encoder.loaded_towers),
                  "imported": [m for m in heavy if m in sys.modules]}))
"""


def _cold_index(checkpoint: Path, photos: Path, library: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _COLD_INDEX, str(checkpoint), str(photos), str(library)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _photo_vectors(library: Path, encoder_id: str) -> dict[str, np.ndarray]:
    """File name -> the vector the library stored for it."""
    from visuallens_app.library.store import PhotoStore

    with PhotoStore(library) as store:
        ids, vectors = store.vectors(encoder_id)
        records = store.photos_by_id([int(i) for i in ids])
    return {Path(records[int(i)].path).name: v for i, v in zip(ids, vectors, strict=True)}


def _min_cosine(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def _images_through_open_clip(checkpoint: Path, photos: Path, cfg: dict[str, object]) -> object:
    """The folder's photos encoded in this process by open_clip's image tower."""
    with _tiny_arch(cfg):
        encoder = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
        vectors = encoder.encode_images([Image.open(f) for f in sorted(photos.glob("*.jpg"))])
        assert encoder._model is not None  # open_clip's path, not the cache
    return vectors


def _image_cache(library_dir: Path) -> Path:
    return library_dir.parent / "cache" / "encoders" / "clip-image"


@pytest.mark.parametrize(
    ("suffix", "quick_gelu"),
    [(".safetensors", False), (".bin", False), (".safetensors", True)],
    ids=["safetensors", "bin", "quick-gelu"],
)
def test_a_cold_clip_index_imports_neither_open_clip_nor_timm(
    tmp_path: Path, library_dir: Path, photo_dir: Path, suffix: str, quick_gelu: bool
) -> None:
    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore

    cfg = {**TINY_CLIP, "quick_gelu": True} if quick_gelu else TINY_CLIP
    reference = _tiny_checkpoint(tmp_path, suffix, seed=5, cfg=cfg)
    checkpoint = tmp_path / f"tiny{suffix}"
    files = sorted(photo_dir.glob("*.jpg"))
    expected = reference.encode_images([Image.open(f) for f in files])

    # open_clip indexes the folder once, and keeps the image side.
    warm_library = tmp_path / "warm"
    with _tiny_arch(cfg):
        encoder = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
        with PhotoStore(warm_library) as store:
            assert run_to_end(index_folders(store, encoder, [photo_dir])).indexed == 5
        assert encoder._model is not None
    (entry,) = _image_cache(library_dir).iterdir()
    copied = list(entry.glob("*.safetensors"))
    # A safetensors checkpoint is read in place; a pickled one gets its image weights copied.
    assert bool(copied) == (suffix == ".bin")

    # A fresh process, where "tiny-test" is no open_clip architecture: only the entry can answer.
    cold_library = tmp_path / "cold"
    cold = _cold_index(checkpoint, photo_dir, cold_library)
    assert cold["imported"] == []
    assert cold["indexed"] == 5
    assert cold["dim"] == 32
    assert cold["loaded"] == ["image"]
    assert _min_cosine(cold["vectors"], expected) >= 0.999
    warm = _photo_vectors(warm_library, encoder.id)
    stored = _photo_vectors(cold_library, encoder.id)
    assert sorted(stored) == sorted(warm) == [f.name for f in files]
    assert _min_cosine([stored[n] for n in warm], list(warm.values())) >= 0.999


def _cold_images_in_process(checkpoint: Path, photos: Path) -> object:
    """An encoder of the unregistered "tiny-test" arch: only a cache entry can answer it."""
    encoder = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test", device="cpu")
    return encoder.encode_images([Image.open(f) for f in sorted(photos.glob("*.jpg"))])


def test_a_replaced_checkpoint_or_a_damaged_image_cache_never_gives_vectors(
    tmp_path: Path, library_dir: Path, photo_dir: Path
) -> None:
    from safetensors.torch import load_file, save_file

    _tiny_checkpoint(tmp_path, ".bin", seed=5, cfg=TINY_CLIP)
    checkpoint = tmp_path / "tiny.bin"
    _images_through_open_clip(checkpoint, photo_dir, TINY_CLIP)
    before = _cold_index(checkpoint, photo_dir, tmp_path / "before")
    assert before["imported"] == []

    # Other weights in the same file: the old entry does not answer for them.
    replaced = _tiny_checkpoint(tmp_path, ".bin", seed=6, cfg=TINY_CLIP)
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))
    expected = replaced.encode_images([Image.open(f) for f in sorted(photo_dir.glob("*.jpg"))])
    assert _min_cosine(before["vectors"], expected) < 0.9
    with pytest.raises(ModelUnavailableError):  # no entry: it needs open_clip (and the arch)
        _cold_images_in_process(checkpoint, photo_dir)
    answered = _images_through_open_clip(checkpoint, photo_dir, TINY_CLIP)
    assert _min_cosine(answered, expected) >= 0.999
    after = _cold_index(checkpoint, photo_dir, tmp_path / "after")
    assert after["imported"] == []
    assert _min_cosine(after["vectors"], expected) >= 0.999

    entry = ClipEncoder.from_checkpoint(checkpoint, arch="tiny-test")._image_side_dir()
    assert entry is not None
    assert entry.parent == _image_cache(library_dir)
    assert (entry / "image-tower.json").is_file()
    weights = entry / "image-tower.safetensors"
    good = weights.read_bytes()
    wrong_shape = {
        k: v[..., :-1].contiguous() if k == "visual.proj" else v
        for k, v in load_file(weights).items()
    }
    damages: dict[str, Callable[[], object]] = {
        "bad json": lambda: (entry / "image-tower.json").write_text("{not json", encoding="utf-8"),
        "truncated weights": lambda: weights.write_bytes(good[: len(good) // 2]),
        "wrong shapes": lambda: save_file(wrong_shape, str(weights)),
    }
    for name, damage in damages.items():
        damage()
        # Without open_clip's architecture nothing can answer: an error, never vectors.
        with pytest.raises(ModelUnavailableError):
            _cold_images_in_process(checkpoint, photo_dir)
        # open_clip answers, and its load writes the entry anew for the next process.
        answered = _images_through_open_clip(checkpoint, photo_dir, TINY_CLIP)
        assert _min_cosine(answered, expected) >= 0.999, name
        rewritten = _cold_index(checkpoint, photo_dir, tmp_path / name.replace(" ", "-"))
        assert rewritten["imported"] == [], name
        assert _min_cosine(rewritten["vectors"], expected) >= 0.999, name


def test_an_image_tower_the_plain_forward_does_not_cover_is_not_cached(
    tmp_path: Path, library_dir: Path, photo_dir: Path
) -> None:
    # LayerScale in the vision blocks: the plain forward has no such step, so open_clip keeps it.
    vision = {**TINY_CLIP["vision_cfg"], "ls_init_value": 0.5}  # type: ignore[dict-item]
    cfg = {**TINY_CLIP, "vision_cfg": vision}
    reference = _tiny_checkpoint(tmp_path, ".safetensors", seed=5, cfg=cfg)
    checkpoint = tmp_path / "tiny.safetensors"
    files = sorted(photo_dir.glob("*.jpg"))
    vectors = _images_through_open_clip(checkpoint, photo_dir, cfg)
    expected = reference.encode_images([Image.open(f) for f in files])
    assert _min_cosine(vectors, expected) >= 0.999
    assert not _image_cache(library_dir).exists() or not list(_image_cache(library_dir).iterdir())
    with pytest.raises(ModelUnavailableError):  # still needs open_clip's architecture
        _cold_images_in_process(checkpoint, photo_dir)
