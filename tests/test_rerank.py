"""The MLLM re-ranker, on tiny randomly initialised VLMs saved and loaded the users' way.

No real vision-language weights exist offline, so these tests prove the mechanics (loading,
prompt, grid size, tag tokens, first-token probabilities), not recommendation quality.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visuallens_app.lens.catalog import CatalogItem
from visuallens_app.lens.grid import build_grid
from visuallens_app.lens.rerank import MLLMReranker, build_prompt, candidate_tag
from visuallens_app.vlm.loading import load_vlm

#: The tiny LLaVA's processor feeds the model 32 x 32 images (tests/tiny_vlms.py).
IMAGE_SIDE = 32


@pytest.fixture(scope="module")
def tiny_vlm(tiny_vlm_dirs: dict[str, Path]) -> Path:
    return tiny_vlm_dirs["llava"]


def _reranker(folder: Path) -> MLLMReranker:
    return MLLMReranker(load_vlm(folder, device="cpu"))


@pytest.fixture(scope="module")
def reranker(tiny_vlm: Path) -> MLLMReranker:
    return _reranker(tiny_vlm)


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
    tiny_vlm_dirs: dict[str, Path], vlm_family: str
) -> None:
    tiny_vlm = tiny_vlm_dirs[vlm_family]
    before = _folder_digest(tiny_vlm)
    reranker = _reranker(tiny_vlm)
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
    assert reranker.vlm.tokenizer.convert_ids_to_tokens(ids[11]) == "<I12>"
    ranked = result.ranked(candidates)
    assert ranked[0][0] is candidates[result.order[0]]
    # Tags live in memory only: the user's model folder is untouched.
    assert _folder_digest(tiny_vlm) == before


def test_grid_is_fed_at_the_processors_image_size(reranker: MLLMReranker) -> None:
    seen: list[tuple[int, ...]] = []
    tower = next(
        m for name, m in reranker.vlm.model.named_modules() if name.endswith("vision_tower")
    )
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
    one = _rank(_reranker(tiny_vlm), candidates)
    two = _rank(_reranker(tiny_vlm), candidates)
    assert one == two
    assert len(set(one.probabilities)) == len(candidates)  # every tag has its own probability


def test_biasing_one_tag_logit_moves_that_candidate_to_rank_one(tiny_vlm: Path) -> None:
    """Proves the ranking reads the first output token's tag probabilities and nothing else."""
    import torch

    local = _reranker(tiny_vlm)
    candidates = _candidates(25)
    baseline = _rank(local, candidates)
    head = local.vlm.model.get_output_embeddings()
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
    from visuallens_app.vlm.prompts import chat_text

    local = _reranker(tiny_vlm)
    assert chat_text(local.vlm.processor, "hi").startswith("USER: <image>\nhi")
    local.vlm.processor.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}{% if add_generation_prompt %} [assistant]{% endif %}"
    )
    text = chat_text(local.vlm.processor, "recommend a restaurant")
    assert text == "[user] <image> recommend a restaurant [assistant]"
    result = _rank(local, _candidates(6))
    assert sorted(result.order) == list(range(6))
