"""The paper's reward model on the tiny random LLaVA, Qwen2-VL and Idefics3 (tests/tiny_vlms.py).

Mechanics only, never quality: the loss falls, the naive baseline reads only the last token, LoRA
stays out of the vision tower, scores survive saving, training survives a cancel, and every bad
input is one sentence.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visuallens_app.errors import Cancelled, VisualLensError
from visuallens_app.jobs import CancelToken, Progress, run_to_end
from visuallens_app.tldr import reward as reward_module
from visuallens_app.tldr.detector import TokenDetector
from visuallens_app.tldr.reward import LoraSettings, RewardModel, load_detector
from visuallens_app.tldr.training import (
    DataWarning,
    EpochFinished,
    TrainingConfig,
    TrainingDataError,
    batch_loss,
    load_examples,
    token_labels,
    train_reward_model,
)
from visuallens_app.vlm import load_vlm
from visuallens_app.vlm.layers import decoder_layer_path

#: (sample photo, caption, bad words): what the perturbation engine would write, by hand.
CAPTIONS = [
    ("chelsea", "A cat is sitting on a red chair.", ["red"]),
    ("chelsea", "A cat is sitting on the floor.", []),
    ("coffee", "A cup of coffee on the table.", []),
    ("coffee", "Three cups of coffee on the table.", ["Three", "cups"]),
    ("astronaut", "A man in a white space suit holds a flag.", []),
    ("astronaut", "A man in a green space suit holds a flag.", ["green"]),
    ("rocket", "A rocket on the launch pad.", []),
    ("motorcycle_left", "A black dog parked near the road.", ["dog"]),
]


def words(text: str) -> list[dict[str, Any]]:
    return [
        {"text": m.group(), "start": m.start(), "end": m.end()}
        for m in re.finditer(r"\w+|[^\w\s]", text)
    ]


def record(image: str, text: str, bad: list[str]) -> dict[str, Any]:
    tokens = words(text)
    return {
        "text": text,
        "tokens": tokens,
        "labels": [0 if t["text"] in bad else 1 for t in tokens],
        "category": "visual attribute",
        "source": image,
        "image": f"{image}.jpg",
    }


@pytest.fixture
def labelled(tmp_path: Path, sample_images: dict[str, Image.Image]) -> Path:
    """Eight labelled captions about real photos, as DATA.jsonl next to their JPEGs."""
    for name, image in sample_images.items():
        image.resize((96, 72)).save(tmp_path / f"{name}.jpg", quality=90)
    data = tmp_path / "data.jsonl"
    lines = [json.dumps(record(*caption)) for caption in CAPTIONS]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def run(job: Any, *, cancel_after: int | None = None, cancel: CancelToken | None = None) -> Any:
    """Drive a job; cancel it once ``cancel_after`` steps are done. Returns (result, partials)."""
    partials = []
    while True:
        try:
            item = next(job)
        except StopIteration as stop:
            return stop.value, partials
        if isinstance(item, Progress):
            if cancel_after is not None and cancel is not None and item.done >= cancel_after:
                cancel.cancel()
        else:
            partials.append(item)


def test_modules_import_without_torch() -> None:
    code = (
        "import sys; import visuallens_app.tldr.reward, visuallens_app.tldr.training, "
        "visuallens_app.cli.tldr_train; assert 'torch' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_word_labels_reach_model_tokens_by_overlap() -> None:
    # "a red cat" with "red" bad: " re" and "d" overlap it, " cat" does not.
    offsets = [(0, 1), (1, 4), (4, 5), (5, 9)]
    assert token_labels(offsets, [(2, 5)]) == [1, 0, 0, 1]
    assert token_labels(offsets, []) == [1, 1, 1, 1]


def test_training_loss_falls(tiny_vlm: Any, labelled: Path, tmp_path: Path) -> None:
    config = TrainingConfig(epochs=5, batch_size=4, lr=5e-2, warmup_steps=1)
    result, partials = run(train_reward_model(tiny_vlm, labelled, tmp_path / "out", config))
    epochs = [p for p in partials if isinstance(p, EpochFinished)]
    assert [p.epoch for p in epochs] == [1, 2, 3, 4, 5]
    assert result.steps == 10
    assert result.epoch_losses[-1] < 0.8 * result.epoch_losses[0]
    saved = json.loads((tmp_path / "out" / "reward.json").read_text())
    assert saved["base_model"]["fingerprint"] == tiny_vlm.fingerprint
    assert saved["naive"] is False
    assert saved["lora"] is None
    assert len(saved["data_hash"]) == 32
    assert saved["metrics"]["final_loss"] == pytest.approx(result.epoch_losses[-1])
    assert (tmp_path / "out" / "head.safetensors").is_file()


def test_scores_batched_equal_one_at_a_time(
    tiny_vlm: Any, sample_images: dict[str, Image.Image]
) -> None:
    import torch

    reward = RewardModel(tiny_vlm, heatmaps=True)
    assert isinstance(reward, TokenDetector)
    torch.manual_seed(0)
    with torch.no_grad():
        reward.head.weight.normal_()
    items = [(sample_images[name], "", text) for name, text, _ in CAPTIONS[:3]] + [
        (sample_images["rocket"], "What is this?", "Кошка сидит на стуле.")
    ]
    batched = reward.score_many(items, batch_size=4)
    for (image, prompt, text), scores in zip(items, batched, strict=True):
        alone = reward.score(image, prompt, text)
        assert [t.p_good for t in scores.tokens] == pytest.approx(
            [t.p_good for t in alone.tokens], abs=1e-5
        )
        assert "".join(text[t.start : t.end] for t in scores.tokens) == text
        assert all(t.checked and 0 <= (t.p_good or 0) <= 1 for t in scores.tokens)
        assert sorted(scores.heatmaps) == list(range(len(scores.tokens)))
        heatmap = scores.heatmaps[0]
        assert heatmap.shape == (image.height, image.width)
        assert heatmap.min() >= 0
        assert heatmap.max() <= 1


def test_naive_variant_reads_the_last_token_only(
    tiny_vlm_dirs: dict[str, Path], labelled: Path
) -> None:
    import torch

    vlm = load_vlm(tiny_vlm_dirs["llava"], device="cpu")
    reward = RewardModel(vlm)
    torch.manual_seed(0)
    with torch.no_grad():
        reward.head.weight.normal_()
    examples, _ = load_examples(labelled)
    example = examples[0]  # "A cat is sitting on a red chair." with "red" bad
    flipped = type(example)(**{**_fields(example), "bad_spans": ((2, 5), *example.bad_spans)})
    image = Image.open(example.image).convert("RGB")
    with torch.no_grad():
        naive = [batch_loss(reward, [e], [image], naive=True) for e in (example, flipped)]
        full = [batch_loss(reward, [e], [image], naive=False) for e in (example, flipped)]
        last = reward.forward([image], [reward.prompt], [example.text]).logits[0][-1]
    assert naive[0].tokens == naive[1].tokens == 1
    assert float(naive[0].loss) == float(naive[1].loss)  # "cat" flipped: the last token is blind
    assert float(full[0].loss) != float(full[1].loss)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(last[None], torch.zeros(1))
    assert float(naive[0].loss) == pytest.approx(float(expected))  # labelled bad: "red" is


def _fields(example: Any) -> dict[str, Any]:
    return {name: getattr(example, name) for name in example.__slots__}


def test_lora_never_touches_the_vision_tower(tiny_vlm: Any, labelled: Path, tmp_path: Path) -> None:
    import torch

    vision = reward_module.vision_tower_path(tiny_vlm.model)
    projector = reward_module.projector_path(tiny_vlm.model)
    assert vision
    assert projector
    before = {
        n: p.detach().clone()
        for n, p in tiny_vlm.model.named_parameters()
        if n.startswith(vision + ".")
    }
    config = TrainingConfig(epochs=1, batch_size=4, lr=5e-2, lora=LoraSettings(4, 8, 0.0))
    run_to_end(train_reward_model(tiny_vlm, labelled, tmp_path / "out", config))
    adapted = [
        name
        for name, module in tiny_vlm.model.named_modules()
        if hasattr(module, "lora_A") and len(module.lora_A) > 0
    ]
    decoder = decoder_layer_path(tiny_vlm.model)
    assert any(name.startswith(projector + ".") for name in adapted)
    assert any(name.startswith(decoder + ".") for name in adapted)
    # Qwen2-VL's merger (the projector) lives inside `visual`; nothing else of the tower does.
    assert all(name.startswith((decoder + ".", projector + ".")) for name in adapted)
    after = dict(tiny_vlm.model.named_parameters())
    tower = [n for n in before if not n.startswith(projector + ".")]
    assert tower
    assert all(torch.equal(before[n], after[n]) for n in tower)
    lora_b = [p for n, p in after.items() if "lora_B" in n]
    assert any(float(p.abs().sum()) > 0 for p in lora_b)  # it trained
    adapter = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert not [
        t
        for t in adapter["target_modules"]
        if t.startswith(vision + ".") and not t.startswith(projector + ".")
    ]


def test_saved_and_reloaded_scores_are_identical(
    tiny_vlm_dirs: dict[str, Path], sample_images: dict[str, Image.Image], tmp_path: Path
) -> None:
    import torch

    vlm = load_vlm(tiny_vlm_dirs["qwen2_vl"], device="cpu")
    reward = RewardModel(vlm, prompt="Describe.")
    reward.add_lora(LoraSettings(4, 8, 0.1))
    torch.manual_seed(0)
    with torch.no_grad():
        reward.head.weight.normal_()
        for name, parameter in vlm.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    items = [(sample_images["chelsea"], "", "A cat is sitting on a red chair.")]
    items.append((sample_images["coffee"], "", "A cup of coffee on the table."))
    expected = [[t.p_good for t in s.tokens] for s in reward.score_many(items)]
    reward.save(tmp_path / "reward", {"data_hash": "abc"})
    assert (tmp_path / "reward" / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = load_detector(tmp_path / "reward")  # the base model named in the metadata
    assert reloaded.vlm is not vlm
    assert reloaded.prompt == "Describe."
    assert reloaded.lora == LoraSettings(4, 8, 0.1)
    assert reloaded.metadata["data_hash"] == "abc"
    got = [[t.p_good for t in s.tokens] for s in reloaded.score_many(items)]
    assert got == expected
    assert reloaded.score(*items[0]).warnings == ()


def test_cancel_and_resume_end_where_an_uninterrupted_run_ends(
    tiny_vlm_dirs: dict[str, Path], labelled: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    folder = tiny_vlm_dirs["llava"]
    config = TrainingConfig(epochs=2, batch_size=4, lr=2e-2, lora=LoraSettings(4, 8, 0.1))
    cancel = CancelToken()
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        run(
            train_reward_model(
                load_vlm(folder, device="cpu"), labelled, out, config, cancel=cancel
            ),
            cancel_after=3,
            cancel=cancel,
        )
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3  # mid-epoch 2: saved when cancelled, nothing lost
    assert not (out / "reward.json").exists()
    resumed, partials = run(
        train_reward_model(load_vlm(folder, device="cpu"), labelled, out, config)
    )
    assert resumed.resumed_from == 3
    assert resumed.steps == 4
    assert [p.epoch for p in partials if isinstance(p, EpochFinished)] == [2]
    straight, _ = run(
        train_reward_model(load_vlm(folder, device="cpu"), labelled, tmp_path / "straight", config)
    )
    assert resumed.epoch_losses == pytest.approx(straight.epoch_losses, rel=1e-4)
    a = load_file(str(out / "head.safetensors"))
    b = load_file(str(tmp_path / "straight" / "head.safetensors"))
    assert all(float((a[k] - b[k]).abs().max()) < 1e-5 for k in a)
    # Another run's checkpoint is refused, not silently mixed in.
    other = TrainingConfig(epochs=2, batch_size=2, lr=2e-2, lora=LoraSettings(4, 8, 0.1))
    with pytest.raises(TrainingDataError, match="other settings"):
        run(train_reward_model(load_vlm(folder, device="cpu"), labelled, out, other))


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and ". " not in message.rstrip(".")


def test_bad_input_is_one_sentence_each(
    tiny_vlm_dirs: dict[str, Path],
    labelled: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample_images: dict[str, Image.Image],
) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = labelled.read_text().splitlines()[0]
    bad_lines = [
        "{not json",
        json.dumps({"tokens": [], "labels": [], "image": "chelsea.jpg"}),
        json.dumps({**json.loads(good), "labels": [1]}),
        json.dumps({**json.loads(good), "labels": [2] * len(json.loads(good)["tokens"])}),
        json.dumps({**json.loads(good), "image": "broken.jpg"}),
        json.dumps({**json.loads(good), "image": "missing.jpg"}),
        json.dumps({k: v for k, v in json.loads(good).items() if k != "image"}),
        "[1, 2]",
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join([good, *bad_lines]) + "\n", encoding="utf-8")
    examples, warnings = load_examples(data)
    assert len(examples) == 1
    assert len(warnings) == len(bad_lines)
    assert all(one_sentence(w) for w in warnings), warnings
    assert "Line 6" in warnings[4]
    assert "broken.jpg" in warnings[4]

    vlm = load_vlm(tiny_vlm_dirs["llava"], device="cpu")
    config = TrainingConfig(epochs=1, batch_size=2)
    result, partials = run(train_reward_model(vlm, data, tmp_path / "out", config))
    assert [p.message for p in partials if isinstance(p, DataWarning)] == warnings
    assert result.metrics["records"] == 1
    assert result.metrics["skipped_lines"] == len(bad_lines)

    errors: list[BaseException] = []
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{not json\n", encoding="utf-8")
    for job in (
        lambda: run_to_end(train_reward_model(vlm, empty, tmp_path / "o2", config)),
        lambda: run_to_end(train_reward_model(vlm, tmp_path / "nope.jsonl", tmp_path / "o3")),
        lambda: RewardModel(vlm).score(sample_images["chelsea"], "", "   "),
        lambda: load_detector(tmp_path, vlm=vlm),
        lambda: RewardModel(vlm).add_lora(LoraSettings(0, 8, 0.1)),
    ):
        with pytest.raises(VisualLensError) as caught:
            job()
        errors.append(caught.value)
    assert all(one_sentence(str(e)) for e in errors), errors

    # A text longer than the model's limit is cut with a warning; the rest is reported unchecked.
    monkeypatch.setattr(reward_module, "MAX_RESPONSE_TOKENS", 8)
    text = "A cat is sitting on a red chair next to a cup of coffee on the table."
    scores = RewardModel(vlm).score(sample_images["chelsea"], "", text)
    assert [t.checked for t in scores.tokens].count(True) == 8
    assert scores.tokens[-1].end == len(text)
    assert scores.tokens[-1].p_good is None
    assert len(scores.warnings) == 1
    assert one_sentence(scores.warnings[0])


def test_train_command(
    tiny_vlm_dirs: dict[str, Path],
    labelled: Path,
    tmp_path: Path,
    library_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from visuallens_app.cli import common
    from visuallens_app.cli.tldr_train import register_train

    parser = argparse.ArgumentParser(prog="visuallens")
    tldr = parser.add_subparsers(dest="command").add_parser("tldr").add_subparsers(dest="tldr")
    register_train(tldr)
    out = tmp_path / "cli-out"
    args = parser.parse_args(
        [
            "tldr",
            "train",
            str(labelled),
            "--vlm",
            str(tiny_vlm_dirs["idefics3"]),
            "--out",
            str(out),
            "--naive",
            "--lora-rank",
            "2",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert common.run_handler(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 2
    assert printed["naive"] is True
    assert printed["lora"] == {"rank": 2, "alpha": 128, "dropout": 0.1}
    detector = load_detector(out, device="cpu")
    assert detector.naive
    assert detector.id.endswith(":naive")

    bad = parser.parse_args(
        [
            "tldr",
            "train",
            str(tmp_path / "none.jsonl"),
            "--vlm",
            str(tiny_vlm_dirs["idefics3"]),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert common.run_handler(bad) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("visuallens: ")
    assert one_sentence(message)
