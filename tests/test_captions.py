"""Photo captions: a tiny random captioning model loaded the users' way, cached in the library.

No real captioning weights exist offline, so the model here is a randomly initialised
ViT encoder + BERT decoder (hidden 32, 2 layers) with a word-level tokenizer: these tests prove
loading, the 30-word cap, the store cache, and that captions reach recommendations and the
re-ranker's prompt, not that the captions describe the photos.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visuallens_app.errors import ModelUnavailableError
from visuallens_app.jobs import CancelToken, Progress, run_to_end
from visuallens_app.lens.aspects import (
    MAX_CAPTION_WORDS,
    Captioner,
    TransformersCaptioner,
    caption_photos,
    history_captions,
)
from visuallens_app.lens.catalog import CatalogItem, load_default_catalog
from visuallens_app.lens.history import History
from visuallens_app.lens.rerank import RerankResult, build_prompt, rerank_result

_WORDS = (
    "a the an cat kitten coffee cup saucer espresso astronaut suit rocket launch pad motorcycle "
    "red blue white black sitting standing on with near of in at table flag sky road"
)


def _save_tiny_captioner(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        BertConfig,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        [_WORDS], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[CLS]",
        eos_token="[SEP]",
    )
    encoder = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    decoder = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        is_decoder=True,
        add_cross_attention=True,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = tokenizer.bos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
    # Random weights could stop at once; a floor past the 30-word cap exercises the cap too.
    model.generation_config.min_new_tokens = 40
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-captioner")
    _save_tiny_captioner(folder)
    return folder


class CountingCaptioner:
    """Delegates to a real captioner and counts the images it was asked to caption."""

    def __init__(self, inner: Captioner) -> None:
        self.inner = inner
        self.images = 0

    @property
    def id(self) -> str:
        return self.inner.id

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        self.images += len(images)
        return self.inner.caption(images)


@pytest.fixture
def embedded() -> Any:
    from visuallens_app.models.registry import load_encoder

    return load_encoder("embedded", device="cpu").encoder


def _index(library: Path, photos: Path, encoder: Any) -> None:
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore

    with PhotoStore(library) as store:
        run_to_end(index_folders(store, encoder, [photos]))


def test_tiny_model_captions_a_real_photo_in_at_most_30_words(
    tiny_captioner_dir: Path, sample_images: dict[str, Image.Image]
) -> None:
    captioner = TransformersCaptioner(tiny_captioner_dir)
    assert isinstance(captioner, Captioner)
    captions = captioner.caption([sample_images["chelsea"], sample_images["coffee"]])
    assert len(captions) == 2
    for caption in captions:
        words = caption.split()
        assert 0 < len(words) <= MAX_CAPTION_WORDS
        assert set(words) <= set(_WORDS.split())  # decoded words, no special tokens
    # Same folder, same weights: the same cache key in the next session.
    assert TransformersCaptioner(tiny_captioner_dir).id == captioner.id


@pytest.mark.parametrize("broken", ["missing", "empty", "bad-config"])
def test_a_bad_model_folder_is_one_sentence(tmp_path: Path, broken: str) -> None:
    folder = tmp_path / "model"
    if broken != "missing":
        folder.mkdir()
    if broken == "bad-config":
        (folder / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ModelUnavailableError) as err:
        TransformersCaptioner(folder).caption([Image.new("RGB", (8, 8))])
    message = str(err.value)
    assert str(folder) in message
    assert "\n" not in message
    assert message.count(". ") == 0
    assert message.endswith(".")


def test_captions_are_cached_in_the_store(
    tiny_captioner_dir: Path, photo_dir: Path, library_dir: Path, embedded: Any
) -> None:
    from visuallens_app.library.store import PhotoStore

    _index(library_dir, photo_dir, embedded)
    captioner = CountingCaptioner(TransformersCaptioner(tiny_captioner_dir))
    with PhotoStore(library_dir) as store:
        history = History.from_store(store, embedded.id)
        first = history_captions(history, [0, 2], captioner, db=store.db)
        assert sorted(first) == [0, 2]
        assert captioner.images == 2
    with PhotoStore(library_dir) as store:  # a later session
        again = history_captions(history, [0, 2], captioner, db=store.db)
        assert again == first
        assert captioner.images == 2  # served from the store: the model did not run
        # The long job captions only the photos that are still missing.
        progress: list[Progress] = []
        job = caption_photos(store, captioner, cancel=CancelToken())
        while True:
            try:
                progress.append(next(job))
            except StopIteration as stop:
                captioned = stop.value
                break
        assert captioned == len(history) - 2
        assert captioner.images == len(history)
        assert progress[-1].done == progress[-1].total == len(history) - 2
        assert run_to_end(caption_photos(store, captioner)) == 0


def test_cancelled_caption_job_keeps_nothing_half_done(
    tiny_captioner_dir: Path, photo_dir: Path, library_dir: Path, embedded: Any
) -> None:
    from visuallens_app.errors import Cancelled
    from visuallens_app.library.store import PhotoStore

    _index(library_dir, photo_dir, embedded)
    captioner = CountingCaptioner(TransformersCaptioner(tiny_captioner_dir))
    cancel = CancelToken()
    with PhotoStore(library_dir) as store:
        job = caption_photos(store, captioner, cancel=cancel, batch_size=2)
        next(job)
        cancel.cancel()
        with pytest.raises(Cancelled):
            next(job)
        assert captioner.images == 0


def test_recommend_with_a_captioner_captions_the_retrieved_photos_only(
    tiny_captioner_dir: Path, photo_dir: Path, library_dir: Path, embedded: Any
) -> None:
    from visuallens_app.lens.pipeline import Recommender
    from visuallens_app.library.store import PhotoStore

    _index(library_dir, photo_dir, embedded)
    catalog = load_default_catalog()
    captioner = CountingCaptioner(TransformersCaptioner(tiny_captioner_dir))
    with PhotoStore(library_dir) as store:
        recommender = Recommender(store, embedded)
        plain = recommender.recommend("coffee shop", catalog, k=3)
        assert plain.captions == ()
        result = recommender.recommend("coffee shop", catalog, k=3, captioner=captioner)
        assert [i for i, _ in result.captions] == list(result.retrieved)
        assert all(0 < len(c.split()) <= MAX_CAPTION_WORDS for _, c in result.captions)
        assert captioner.images == len(result.retrieved)
        assert result.caption_of(result.retrieved[0]) == result.captions[0][1]
        # The ranking itself does not depend on captions.
        assert [r.item.id for r in result.recommendations] == [
            r.item.id for r in plain.recommendations
        ]
        recommender.recommend("coffee shop", catalog, k=3, captioner=captioner)
        assert captioner.images == len(result.retrieved)  # cached


class RecordingReranker:
    """Reverses the order it is given and remembers the prompt inputs."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def rerank(
        self,
        grid: Image.Image,
        question: str,
        candidates: Sequence[CatalogItem],
        *,
        tile_aspects: Any = None,
        captions: Any = None,
        profile_aspects: Sequence[str] = (),
        tiles: int = 0,
    ) -> RerankResult:
        self.calls.append({"captions": captions, "tiles": tiles, "question": question})
        n = len(candidates)
        return RerankResult(tuple(reversed(range(n))), tuple(float(i) for i in range(n)))


def test_reranker_gets_captions_keyed_by_tile_number(
    tiny_captioner_dir: Path, photo_dir: Path, library_dir: Path, embedded: Any
) -> None:
    from visuallens_app.lens.pipeline import Recommender
    from visuallens_app.library.store import PhotoStore

    _index(library_dir, photo_dir, embedded)
    catalog = load_default_catalog()
    (photo_dir / "coffee.jpg").unlink()  # an unreadable photo takes no tile and no number
    captioner = TransformersCaptioner(tiny_captioner_dir)
    with PhotoStore(library_dir) as store:
        recommender = Recommender(store, embedded)
        result = recommender.recommend("coffee shop", catalog, k=5, captioner=captioner)
        paths = recommender.history().paths
    reranker = RecordingReranker()
    reranked = rerank_result(reranker, result, paths, "recommend a coffee shop")
    call = reranker.calls[0]
    readable = [i for i in result.retrieved if paths[i].exists()]
    assert call["tiles"] == len(readable)
    assert call["captions"] == {t: result.caption_of(i) for t, i in enumerate(readable, 1)}
    assert [r.item.id for r in reranked.recommendations] == [
        r.item.id for r in reversed(result.recommendations)
    ]
    prompt = build_prompt("recommend a coffee shop", [], captions=call["captions"])
    assert f"1: {call['captions'][1]}" in prompt


def test_cli_recommend_explains_with_captions_and_without(
    tiny_captioner_dir: Path,
    photo_dir: Path,
    library_dir: Path,
    embedded: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from visuallens_app.cli import main

    _index(library_dir, photo_dir, embedded)
    # The whole library in the background job first; recommend then reads the store.
    assert main(["caption", "--json", "--captioner", str(tiny_captioner_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == {"captioned": 5}
    base = ["recommend", "--category", "coffee shop", "-k", "2", "--encoder", "embedded"]
    assert main([*base, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert all("captions" not in row for row in plain)

    assert main([*base, "--json", "--captioner", str(tiny_captioner_dir)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["captions"]
    assert all(0 < len(c.split()) <= MAX_CAPTION_WORDS for c in rows[0]["captions"].values())

    assert main([*base, "--explain", "--captioner", str(tiny_captioner_dir)]) == 0
    text = capsys.readouterr().out
    caption = next(iter(rows[0]["captions"].values()))
    assert f'"{caption}"' in text

    assert main([*base, "--captioner", str(library_dir / "nowhere")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("visuallens: No captioning model at")
    assert main(["caption", "--json", "--captioner", str(tiny_captioner_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == {"captioned": 0}


def test_cli_rerank_model_prompt_carries_the_captions(
    tiny_captioner_dir: Path,
    photo_dir: Path,
    library_dir: Path,
    embedded: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from test_rerank import _save_tiny_llava

    from visuallens_app.cli import main

    vlm = library_dir.parent / "tiny-llava"
    vlm.mkdir()
    _save_tiny_llava(vlm)
    _index(library_dir, photo_dir, embedded)
    args = ["recommend", "--category", "coffee shop", "-k", "3", "--encoder", "embedded"]
    args += ["--device", "cpu", "--explain", "--rerank-model", str(vlm)]
    assert main([*args, "--captioner", str(tiny_captioner_dir)]) == 0
    out = capsys.readouterr().out
    assert "Re-ranked by the vision-language model (with " in out
    assert len([line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]) == 3
    assert main([*args, "--no-captions"]) == 0
    assert "Re-ranked by the vision-language model." in capsys.readouterr().out
