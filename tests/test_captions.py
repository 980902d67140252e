"""Photo captions: a tiny random VLM loaded the users' way, its captions cached in the library.

No real vision-language weights exist offline, so the model here is the shared fixture's tiny
random Idefics3 (tests/tiny_vlms.py): these tests prove the 30-word cap, the store cache, and
that captions reach recommendations and the re-ranker's prompt, not that they describe the photos.
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
    caption_photos,
    history_captions,
)
from visuallens_app.lens.catalog import CatalogItem, load_default_catalog
from visuallens_app.lens.history import History
from visuallens_app.lens.rerank import RerankResult, build_prompt, rerank_result
from visuallens_app.vlm.captions import VlmCaptioner
from visuallens_app.vlm.loading import load_vlm


@pytest.fixture(scope="module")
def tiny_captioner_dir(tiny_vlm_dirs: dict[str, Path]) -> Path:
    """The tiny Idefics3 (SmolVLM's family) of the shared fixture."""
    return tiny_vlm_dirs["idefics3"]


def _captioner(folder: Path, *, max_new_tokens: int = 12) -> VlmCaptioner:
    vlm = load_vlm(folder, device="cpu")
    # Random weights could stop at once; a floor keeps every caption non-empty.
    vlm.model.generation_config.min_new_tokens = min(4, max_new_tokens)
    return VlmCaptioner(vlm, max_new_tokens=max_new_tokens)


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
    captioner = _captioner(tiny_captioner_dir, max_new_tokens=60)
    assert isinstance(captioner, Captioner)
    # A random model rarely writes words; make this one say " cat" at every step, 60 times.
    tokenizer = captioner.vlm.tokenizer
    (cat,) = tokenizer.encode(" cat", add_special_tokens=False)

    def always_cat(_module: Any, _args: Any, logits: Any) -> Any:
        logits[..., cat] += 1000.0
        return logits

    head = captioner.vlm.model.get_output_embeddings()
    handle = head.register_forward_hook(always_cat)
    try:
        captions = captioner.caption([sample_images["chelsea"], sample_images["coffee"]])
    finally:
        handle.remove()
    assert len(captions) == 2
    assert captions == [" ".join(["cat"] * MAX_CAPTION_WORDS)] * 2  # cut at the 30-word cap
    plain = captioner.caption([sample_images["chelsea"]])[0]
    assert 0 < len(plain.split()) <= MAX_CAPTION_WORDS
    assert not any(special in plain for special in tokenizer.all_special_tokens)
    # Same folder, same weights: the same cache key in the next session.
    assert _captioner(tiny_captioner_dir, max_new_tokens=60).id == captioner.id


@pytest.mark.parametrize("broken", ["missing", "empty", "bad-config"])
def test_a_bad_model_folder_is_one_sentence(tmp_path: Path, broken: str) -> None:
    folder = tmp_path / "model"
    if broken != "missing":
        folder.mkdir()
    if broken == "bad-config":
        (folder / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
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
    captioner = CountingCaptioner(_captioner(tiny_captioner_dir))
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
    captioner = CountingCaptioner(_captioner(tiny_captioner_dir))
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
    captioner = CountingCaptioner(_captioner(tiny_captioner_dir))
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
    captioner = _captioner(tiny_captioner_dir)
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
    vlm = ["--vlm", str(tiny_captioner_dir), "--device", "cpu"]
    assert main(["caption", "--json", *vlm]) == 0
    assert json.loads(capsys.readouterr().out) == {"captioned": 5}
    base = ["recommend", "--category", "coffee shop", "-k", "2", "--encoder", "embedded"]
    assert main([*base, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert all("captions" not in row for row in plain)

    assert main([*base, "--json", *vlm]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["captions"]
    assert all(0 < len(c.split()) <= MAX_CAPTION_WORDS for c in rows[0]["captions"].values())

    assert main([*base, "--explain", "--captioner", str(tiny_captioner_dir)]) == 0  # older name
    text = capsys.readouterr().out
    caption = next(iter(rows[0]["captions"].values()))
    assert f'"{caption}"' in text

    assert main([*base, "--vlm", str(library_dir / "nowhere")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("visuallens: No vision-language model at")
    assert err[-1].endswith("`visuallens models download-vlm NAME`.")
    assert main(["caption", "--json", *vlm]) == 0
    assert json.loads(capsys.readouterr().out) == {"captioned": 0}


def test_cli_rerank_prompt_carries_the_captions(
    tiny_captioner_dir: Path,
    photo_dir: Path,
    library_dir: Path,
    embedded: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from visuallens_app.cli import main

    _index(library_dir, photo_dir, embedded)
    args = ["recommend", "--category", "coffee shop", "-k", "3", "--encoder", "embedded"]
    args += ["--device", "cpu", "--explain", "--rerank", "--vlm", str(tiny_captioner_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Re-ranked by the vision-language model (with " in out
    assert len([line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]) == 3
    assert main([*args, "--no-captions"]) == 0
    assert "Re-ranked by the vision-language model." in capsys.readouterr().out
