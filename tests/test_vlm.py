"""The VLM runtime on tiny random LLaVA, Qwen2-VL and Idefics3 models, loaded the users' way.

No pretrained VLM weights exist offline, so these prove mechanics on three families with three
different image layouts (a patch grid, a merged dynamic grid, tiles plus a global view): loading,
prompts, streaming, scores, internals, steering hooks and attention maps. Never answer quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visuallens_app.errors import Cancelled, ModelUnavailableError
from visuallens_app.jobs import CancelToken, Progress
from visuallens_app.vlm import attention, generation, hooks, layers, prompts, scoring
from visuallens_app.vlm.loading import load_vlm

#: Expected image-token layouts for an 80 x 60 photo: (tokens, views as (rows, cols, global)).
LAYOUTS = {
    "llava": (16, [(4, 4, False)]),  # 32 px crop, 8 px patches
    "qwen2_vl": (12, [(3, 4, False)]),  # 48 x 64 px -> 6 x 8 patches, merged 2 x 2
    "idefics3": (20, [(2, 2, False)] * 4 + [(2, 2, True)]),  # 2 x 2 tiles + the global view
}


@pytest.fixture
def photo(sample_images: dict[str, Image.Image]) -> Image.Image:
    """A real photo (the cat), 4:3, small enough for the tiny processors."""
    return sample_images["chelsea"].resize((80, 60))


def _drain(job: Any) -> tuple[list[Any], Any]:
    seen = []
    while True:
        try:
            seen.append(next(job))
        except StopIteration as stop:
            return seen, stop.value


def test_loads_each_family_and_says_what_it_loaded(tiny_vlm: Any, vlm_family: str) -> None:
    assert tiny_vlm.family == vlm_family
    assert tiny_vlm.num_layers == 2
    assert tiny_vlm.hidden_size == 32
    assert tiny_vlm.device == "cpu"
    described = tiny_vlm.describe()
    assert vlm_family in described
    assert "on cpu, float32" in described
    assert not tiny_vlm.model.training


def test_streamed_tokens_build_the_final_answer(tiny_vlm: Any, photo: Image.Image) -> None:
    updates, answer = _drain(generation.stream(tiny_vlm, photo, "Describe.", max_new_tokens=6))
    assert isinstance(updates[0], Progress)
    assert updates[0].unit == "tokens"
    pieces = [u for u in updates if isinstance(u, generation.TokenPiece)]
    assert 1 <= len(pieces) <= 6
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert answer.stopped in ("end", "length")
    assert answer.token_ids == tuple(p.token_id for p in pieces)[: len(answer.token_ids)]
    assert pieces[-1].text.strip().startswith(answer.text) or answer.text == ""
    # Greedy: the same question gives the same answer, also in a batch.
    (batched,) = generation.generate_batch(tiny_vlm, [photo], ["Describe."], max_new_tokens=6)
    assert batched.token_ids == answer.token_ids


def test_cancel_stops_generation_between_tokens(tiny_vlm: Any, photo: Image.Image) -> None:
    token = CancelToken()
    job = generation.stream(tiny_vlm, photo, "Describe.", max_new_tokens=200, cancel=token)
    received = []

    def consume() -> None:
        for update in job:
            if isinstance(update, generation.TokenPiece):
                received.append(update)
                token.cancel()

    with pytest.raises(Cancelled):
        consume()
    assert 1 <= len(received) < 200


def test_left_padding_keeps_each_rows_next_token(tiny_vlm: Any, photo: Image.Image) -> None:
    import torch

    short, long = "Describe.", "Is the cat to the left or to the right of the cup? Answer."
    batch = prompts.encode(tiny_vlm, [short, long], [[photo], [photo]])
    assert batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"][0, 0] == 0  # the shorter prompt is padded on the left
    with torch.inference_mode():
        together = tiny_vlm.model(**batch).logits[:, -1]
    for row, text in enumerate((short, long)):
        alone = scoring.next_token_logits(tiny_vlm, photo, text)
        torch.testing.assert_close(together[row].float(), alone, atol=1e-4, rtol=1e-4)


def test_first_token_probabilities_are_the_full_vocabulary_softmax(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    import torch

    ids = scoring.option_token_ids(tiny_vlm, ["A", "B", "C", "D"])
    probabilities = scoring.first_token_probabilities(tiny_vlm, photo, "Answer A-D.", ids)
    expected = torch.softmax(scoring.next_token_logits(tiny_vlm, photo, "Answer A-D."), -1)[ids]
    assert probabilities == pytest.approx(expected.tolist(), abs=1e-7)
    assert 0 < sum(probabilities) < 1


def test_response_logprobs_cover_every_token_and_agree_with_the_first_token_score(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    response = "A cat sits on a red chair. 猫が椅子の上に座っている。"
    scores = scoring.response_logprobs(tiny_vlm, photo, "Describe.", response)
    assert "".join(scores.tokens.pieces()) == response
    assert len(scores.logprobs) == len(scores.tokens) > 5
    assert all(value <= 0 for value in scores.logprobs)
    # Teacher forcing's first token is scored by the same distribution as a first answer token.
    first = scoring.first_token_probabilities(
        tiny_vlm, photo, "Describe.", [scores.tokens.token_ids[0]]
    )[0]
    assert scores.logprobs[0] == pytest.approx(math.log(first), abs=1e-4)


def test_decoder_layers_and_the_language_model_path(tiny_vlm: Any) -> None:
    import re

    found = layers.decoder_layers(tiny_vlm.model)
    assert len(found) == 2
    path = layers.decoder_layer_path(tiny_vlm.model)
    assert dict(tiny_vlm.model.named_modules())[path] is found
    pattern = re.compile(layers.lora_target_regex(tiny_vlm.model))
    names = [name for name, _ in tiny_vlm.model.named_modules()]
    targeted = [name for name in names if pattern.fullmatch(name)]
    assert len(targeted) == 4  # q_proj and v_proj of 2 language-model layers
    assert all(name.startswith(path + ".") for name in targeted)
    # CLIP's and SigLIP's towers name their projections q_proj too; they are left out.
    if tiny_vlm.family != "qwen2_vl":  # its tower has one fused qkv
        assert [n for n in names if n.endswith("q_proj") and not n.startswith(path)]


def test_image_positions_and_their_layout_on_the_photo(
    tiny_vlm: Any, vlm_family: str, photo: Image.Image
) -> None:
    inputs = prompts.encode(tiny_vlm, ["Describe."], [[photo]])
    mask = layers.image_mask(tiny_vlm, inputs["input_ids"])
    count, layout = LAYOUTS[vlm_family]
    assert int(mask.sum()) == count
    views = attention.image_views(tiny_vlm, inputs, photo.size)
    assert [(v.rows, v.cols, v.is_global) for v in views] == layout
    assert sum(len(v.positions) for v in views) == count


def test_hidden_states_per_layer_and_on_text_alone(tiny_vlm: Any, photo: Image.Image) -> None:
    inputs = prompts.encode(tiny_vlm, ["Describe."], [[photo]])
    states = layers.hidden_states(tiny_vlm, inputs, [0, 1])
    assert states[1].shape == (*inputs["input_ids"].shape, 32)
    assert hooks.hook_count(tiny_vlm.model) == 0  # the recording hooks are gone
    text, ids, mask = layers.text_hidden_states(tiny_vlm, ["The cat is on the table", "A dog"], [1])
    assert text[1].shape == (2, ids.shape[1], 32)
    assert mask[1].sum() < mask[0].sum()  # the shorter sentence is padded on the right
    with pytest.raises(ValueError, match=r"layers 0\.\.1"):
        layers.hidden_states(tiny_vlm, inputs, [2])


def test_steering_alpha_zero_is_bitwise_identical_and_alpha_changes_the_logits(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    import torch

    inputs = prompts.encode(tiny_vlm, ["Describe."], [[photo]])
    vector = torch.randn(32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        base = tiny_vlm.model(**inputs).logits
        with hooks.add_to_layer(tiny_vlm.model, hooks.Steering(1, vector, 0.0)):
            zero = tiny_vlm.model(**inputs).logits
        with hooks.add_to_layer(tiny_vlm.model, hooks.Steering(1, vector, 8.0)):
            assert hooks.hook_count(tiny_vlm.model) == 1
            steered = tiny_vlm.model(**inputs).logits
        nowhere = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
        with hooks.add_to_layer(tiny_vlm.model, hooks.Steering(0, vector, 8.0, mask=nowhere)):
            masked_out = tiny_vlm.model(**inputs).logits
    assert torch.equal(base, zero)
    assert not torch.allclose(base, steered)
    assert torch.equal(base, masked_out)
    assert hooks.hook_count(tiny_vlm.model) == 0


def test_steering_is_seen_by_every_later_reader_of_the_layer(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    """prepend=True: a hook registered before the steering one still reads steered values."""
    import torch

    inputs = prompts.encode(tiny_vlm, ["Describe."], [[photo]])
    image = layers.image_mask(tiny_vlm, inputs["input_ids"])
    vector = torch.ones(32)
    with layers.capture_layers(tiny_vlm.model, [1]) as plain:
        tiny_vlm.model(**inputs)
    with (
        layers.capture_layers(tiny_vlm.model, [1]) as seen,
        hooks.add_to_layer(tiny_vlm.model, hooks.Steering(1, vector, 2.0, mask=image)),
    ):
        tiny_vlm.model(**inputs)
    shift = (seen[1] - plain[1])[0]
    torch.testing.assert_close(shift[image[0]], torch.full_like(shift[image[0]], 2.0))
    assert float(shift[~image[0]].abs().max()) == 0.0


def test_hooks_are_removed_after_an_exception_and_a_cancelled_stream(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    import torch

    class BoomError(Exception):
        pass

    with (
        pytest.raises(BoomError),
        hooks.add_to_layer(tiny_vlm.model, hooks.Steering(1, torch.ones(32), 1.0)),
    ):
        raise BoomError
    assert hooks.hook_count(tiny_vlm.model) == 0
    token = CancelToken()
    steerings = [hooks.Steering(0, torch.ones(32), 1.0, during="generation")]

    def steer_and_cancel() -> None:
        with hooks.steered(tiny_vlm.model, steerings):
            for update in generation.stream(tiny_vlm, photo, "Describe.", cancel=token):
                if isinstance(update, generation.TokenPiece):
                    token.cancel()

    with pytest.raises(Cancelled):
        steer_and_cancel()
    assert hooks.hook_count(tiny_vlm.model) == 0


def test_a_wrong_sized_vector_or_layer_is_refused(tiny_vlm: Any, photo: Image.Image) -> None:
    import torch

    inputs = prompts.encode(tiny_vlm, ["Describe."], [[photo]])
    with (
        pytest.raises(ValueError, match=r"layers 0\.\.1"),
        hooks.add_to_layer(tiny_vlm.model, hooks.Steering(5, torch.ones(32), 1.0)),
    ):
        pass
    with (
        pytest.raises(ValueError, match="size 7"),
        hooks.add_to_layer(tiny_vlm.model, hooks.Steering(0, torch.ones(7), 1.0)),
    ):
        tiny_vlm.model(**inputs)
    assert hooks.hook_count(tiny_vlm.model) == 0


def test_attention_maps_land_on_the_image_grid(
    tiny_vlm: Any, vlm_family: str, photo: Image.Image
) -> None:
    import numpy as np

    before = tiny_vlm.model.config._attn_implementation
    maps = attention.response_attention(tiny_vlm, photo, "Describe.", "A cat on a chair.")
    count, layout = LAYOUTS[vlm_family]
    assert maps.weights.shape == (len(maps.tokens), count)
    assert (maps.weights >= 0).all()
    assert (maps.weights.sum(axis=1) <= 1 + 1e-5).all()  # a share of the token's attention
    rows, cols, _ = layout[0]
    assert maps.grid(0, 0).shape == (rows, cols)
    heat = maps.heatmap(0)
    assert heat.shape == (60, 80)
    assert float(heat.max()) == pytest.approx(1.0)
    if vlm_family == "llava":  # a square centre crop of a 4:3 photo: the margins are unseen
        assert float(np.abs(heat[:, :5]).max()) == 0.0
    assert tiny_vlm.model.config._attn_implementation == before


def test_captioner_writes_short_captions_and_names_its_model(
    tiny_vlm_dirs: dict[str, Path], photo: Image.Image
) -> None:
    from visuallens_app.vlm.captions import MAX_CAPTION_WORDS, VlmCaptioner

    vlm = load_vlm(tiny_vlm_dirs["idefics3"], device="cpu")
    captioner = VlmCaptioner(vlm, max_new_tokens=12)
    captions = captioner.caption([photo, photo.rotate(90, expand=True)])
    assert len(captions) == 2
    assert all(len(c.split()) <= MAX_CAPTION_WORDS for c in captions)
    again = VlmCaptioner(load_vlm(tiny_vlm_dirs["idefics3"], device="cpu"), max_new_tokens=12)
    assert again.id == captioner.id
    assert VlmCaptioner(vlm, prompt="What is this?", max_new_tokens=12).id != captioner.id
    other = VlmCaptioner(load_vlm(tiny_vlm_dirs["llava"], device="cpu"), max_new_tokens=12)
    assert other.id != captioner.id


# -- what a user can get wrong: one sentence each ------------------------------------------------


def _one_sentence(err: pytest.ExceptionInfo[ModelUnavailableError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def test_a_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(tmp_path / "nowhere", device="cpu")
    assert "does not exist" in _one_sentence(err)


def test_a_text_only_model_is_one_sentence(tmp_path: Path) -> None:
    import tiny_vlms

    folder = tiny_vlms.build_text_only(tmp_path / "llama")
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
    assert "text-only model (llama)" in _one_sentence(err)


def test_a_corrupt_config_is_one_sentence(tiny_vlm_dirs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(tiny_vlm_dirs["llava"], tmp_path / "broken")
    (folder / "config.json").write_text('{"model_type": "llava", "text_con', encoding="utf-8")
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
    assert "config.json cannot be read" in _one_sentence(err)
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
    assert "JSON list" in _one_sentence(err)


def test_pickled_weights_and_missing_shards_are_refused(
    tiny_vlm_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = shutil.copytree(tiny_vlm_dirs["llava"], tmp_path / "pickled")
    weights = folder / "model.safetensors"
    weights.rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
    assert "pickled weights" in _one_sentence(err)
    (folder / "pytorch_model.bin").unlink()
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
    assert "download is incomplete" in _one_sentence(err)


def test_a_hub_name_not_on_this_machine_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm("HuggingFaceTB/SmolVLM-256M-Instruct", device="cpu")
    assert "visuallens models download-vlm" in _one_sentence(err)


def test_an_unusable_device_is_one_sentence(tiny_vlm_dirs: dict[str, Path]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(tiny_vlm_dirs["llava"], device="cuda")
    assert "--device cpu" in _one_sentence(err)


# -- the CLI -----------------------------------------------------------------------------------


def test_models_list_shows_the_configured_vlm_and_download_offline_is_one_sentence(
    tiny_vlm_dirs: dict[str, Path],
    library_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from visuallens_app.cli import main
    from visuallens_app.settings import Settings

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    Settings(vlm=str(tiny_vlm_dirs["qwen2_vl"])).save()
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["configured_vlm"]["tldr"] == str(tiny_vlm_dirs["qwen2_vl"])
    (row,) = listed["vlms"]
    assert row["where"] == str(tiny_vlm_dirs["qwen2_vl"])
    assert row["bytes"] > 10_000
    assert main(["models", "list"]) == 0
    assert "Vision-language models:\n  qwen2_vl" in capsys.readouterr().out
    assert main(["models", "download-vlm"]) == 1  # the test session is offline
    err = capsys.readouterr().err.strip()
    assert err == (
        "visuallens: Cannot download HuggingFaceTB/SmolVLM-256M-Instruct: downloads are "
        "switched off here (HF_HUB_OFFLINE is set)."
    )


def test_a_model_too_big_for_the_free_memory_is_one_sentence(
    tiny_vlm_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = shutil.copytree(tiny_vlm_dirs["llava"], tmp_path / "huge")
    with open(folder / "model.safetensors", "r+b") as weights:
        weights.truncate(2**40)  # a sparse terabyte: its size says 1 TB, the disk holds nothing
    with pytest.raises(ModelUnavailableError) as err:
        load_vlm(folder, device="cpu")
    message = _one_sentence(err)
    assert "needs about 1024.0 GB on cpu" in message
    assert "choose a smaller model" in message
