"""The MLLM re-ranker, on a tiny randomly initialised LLaVA saved and loaded the users' way.

No real vision-language weights exist offline, so these tests prove the mechanics (loading,
prompt, grid size, tag tokens, first-token probabilities), not recommendation quality.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visuallens_app.errors import ModelUnavailableError
from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.grid import build_grid
from visuallens_app.lens.rerank import MLLMReranker, build_prompt, candidate_tag

IMAGE_SIDE = 32

_CORPUS = [
    "USER: ASSISTANT: The image is a grid of photos from the user's own photo history",
    "each numbered in its top-left corner . Aspects the user cares about : Photos :",
    "Question : recommend a restaurant Candidates : Answer with the tag of the candidate",
    "this user would like most ramen noodle neon spicy dome balcony quiet garden sushi bar",
    "pizza oven terrace cosy dim candle view harbour cafe < > I 1 2 3 4 5 6 7 8 9 0 , ; .",
]


def _save_tiny_llava(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    # Digits split one by one, as in Llama's tokenizer: "<I12>" -> "<", "I", "1", "2", ">".
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    raw.train_from_iterator(
        _CORPUS,
        trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "<s>", "</s>", "<image>"]),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIDE,
        patch_size=8,
        projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIDE},
            crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llava")
    _save_tiny_llava(folder)
    return folder


@pytest.fixture(scope="module")
def reranker(tiny_vlm: Path) -> MLLMReranker:
    return MLLMReranker(tiny_vlm, device="cpu")


def _candidates(n: int) -> list[CatalogItem]:
    words = ["ramen", "sushi", "pizza", "cafe", "garden", "harbour", "neon", "quiet"]
    return [
        CatalogItem(
            id=f"c{i}",
            name=f"{words[i % len(words)]} bar",
            category="restaurant",
            description=f"a {words[(i + 3) % len(words)]} restaurant with a terrace",
        )
        for i in range(n)
    ]


def _grid() -> Image.Image:
    photos = [Image.new("RGB", (120, 80), (30 * i % 255, 90, 200 - 10 * i)) for i in range(12)]
    return build_grid(photos)


def _rank(reranker: MLLMReranker, candidates: list[CatalogItem]) -> Any:
    return reranker.rerank(
        _grid(),
        "recommend a restaurant",
        candidates,
        tile_aspects={1: ["ramen", "neon"], 2: ["spicy"]},
        captions={1: "a noodle bar at night"},
        profile_aspects=["ramen", "spicy"],
        tiles=12,
    )


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_missing_model_folder_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as info:
        MLLMReranker(tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message
    assert "\n" not in message
    assert message.count(". ") == 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match=r"config\.json"):
        MLLMReranker(tmp_path / "empty")


def test_prompt_has_question_tiles_and_tagged_candidates() -> None:
    long = CatalogItem("x", "Long", "restaurant", "word " * 200)
    prompt = build_prompt(
        "recommend a restaurant",
        [*_candidates(2), long],
        tile_aspects={3: ["dome", "balcony"]},
        captions={1: "a bowl of ramen", 3: "a domed hall"},
        profile_aspects=["ramen"],
        tiles=3,
    )
    assert "Question: recommend a restaurant" in prompt
    assert "1: a bowl of ramen" in prompt
    assert "3: a domed hall; aspects: dome, balcony" in prompt
    assert "<I1> ramen bar:" in prompt
    assert "<I3> Long:" in prompt
    assert max(len(line) for line in prompt.splitlines()) < 320  # long description truncated
    assert candidate_tag(42) == "<I42>"


def test_ranking_is_a_permutation_of_first_token_tag_probabilities(
    reranker: MLLMReranker, tiny_vlm: Path
) -> None:
    before = _folder_digest(tiny_vlm)
    candidates = _candidates(30)
    result = _rank(reranker, candidates)
    assert sorted(result.order) == list(range(30))
    assert len(result.probabilities) == 30
    assert 0 < sum(result.probabilities) <= 1 + 1e-6
    assert all(p > 0 for p in result.probabilities)
    ordered = [result.probabilities[i] for i in result.order]
    assert ordered == sorted(ordered, reverse=True)
    # Each tag is one dedicated token, distinct from every other.
    ids = reranker.tag_ids(30)
    assert len(set(ids)) == 30
    assert reranker.tokenizer.convert_ids_to_tokens(ids[11]) == "<I12>"
    ranked = result.ranked(candidates)
    assert ranked[0][0] is candidates[result.order[0]]
    # Tags live in memory only: the user's model folder is untouched.
    assert _folder_digest(tiny_vlm) == before


def test_grid_is_fed_at_the_processors_image_size(reranker: MLLMReranker) -> None:
    seen: list[tuple[int, ...]] = []
    tower = next(m for name, m in reranker.model.named_modules() if name.endswith("vision_tower"))
    handle = tower.register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append(
            tuple((args or (kwargs["pixel_values"],))[0].shape)
        ),
        with_kwargs=True,
    )
    try:
        _rank(reranker, _candidates(5))
    finally:
        handle.remove()
    assert reranker.image_side == IMAGE_SIDE
    assert seen == [(1, 3, IMAGE_SIDE, IMAGE_SIDE)]


def test_same_model_and_inputs_give_the_same_ranking(
    reranker: MLLMReranker, tiny_vlm: Path
) -> None:
    import torch

    candidates = _candidates(20)
    first = _rank(reranker, candidates)
    torch.manual_seed(123)  # no randomness at inference: a different seed changes nothing
    again = _rank(reranker, candidates)
    assert first == again
    # Two fresh loads (same tags added) agree exactly: the tag rows' start is not random.
    one = _rank(MLLMReranker(tiny_vlm, device="cpu"), candidates)
    two = _rank(MLLMReranker(tiny_vlm, device="cpu"), candidates)
    assert one == two
    assert len(set(one.probabilities)) == len(candidates)  # every tag has its own probability


def test_biasing_one_tag_logit_moves_that_candidate_to_rank_one(tiny_vlm: Path) -> None:
    """Proves the ranking reads the first output token's tag probabilities and nothing else."""
    import torch

    local = MLLMReranker(tiny_vlm, device="cpu")
    candidates = _candidates(25)
    baseline = _rank(local, candidates)
    head = local.model.get_output_embeddings()
    hidden: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: hidden.append(args[0][0, -1].clone()))
    try:
        _rank(local, candidates)
    finally:
        handle.remove()
    last = hidden[-1]
    for logit, target in ((20.0, baseline.order[-1]), (30.0, baseline.order[12])):
        tag_id = local.tag_ids(len(candidates))[target]
        with torch.no_grad():
            # logit(tag) = row . h, so this row gives the tag exactly `logit` at this prompt's
            # last position; the second target outbids the first.
            head.weight[tag_id] = last * (logit / float(last @ last))
        biased = _rank(local, candidates)
        assert biased.order[0] == target
        assert biased.probabilities[target] > 0.5
        others = [i for i in biased.order if i != target]
        assert others == [i for i in baseline.order if i != target]  # the rest keep their order
        baseline = biased


def test_more_than_one_hundred_candidates_are_refused(reranker: MLLMReranker) -> None:
    with pytest.raises(ValueError, match="at most 100"):
        _rank(reranker, _candidates(101))
    assert _rank(reranker, []).order == ()


def test_the_models_chat_template_is_used_when_it_has_one(tiny_vlm: Path) -> None:
    from visuallens_app.lens.rerank import _chat_text

    local = MLLMReranker(tiny_vlm, device="cpu")
    assert _chat_text(local.processor, "hi").startswith("USER: <image>\nhi")
    local.processor.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}{% if add_generation_prompt %} [assistant]{% endif %}"
    )
    text = _chat_text(local.processor, "recommend a restaurant")
    assert text == "[user] <image> recommend a restaurant [assistant]"
    result = _rank(local, _candidates(6))
    assert sorted(result.order) == list(range(6))
