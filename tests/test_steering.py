"""The steering studio's core and CLI on the tiny random LLaVA, Qwen2-VL and Idefics3 models.

The math (mean shift, probe, SAE selection, the sweep protocol) is checked on hand-made arrays
with planted answers; the mechanics (vectors of the model's size, masks, prefill-only, hooks
removed, the cached sweep) on the tiny models. Never steering quality: the weights are random.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visuallens_app.cli import main
from visuallens_app.errors import Cancelled
from visuallens_app.jobs import CancelToken, run_to_end
from visuallens_app.steering import SteeringError, apply, bench, concepts, store, sweep, vectors
from visuallens_app.vlm import generation, hooks, layers, prompts


def one_sentence(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    assert text.endswith(".")
    assert not re.search(r"[.;]\s+[A-Z][a-z]+ ", text[:-1]), text  # no second sentence
    return text


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """Hidden size 32: a second thread only waits for the first, and on a busy machine a
    spinning thread pool slows these tests down fifty times (measured: 30 s against 0.7 s)."""
    import torch

    from visuallens_app import devices

    devices.configure_torch_threads()  # so that a later model load keeps our setting
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def photo(sample_images: dict[str, Image.Image]) -> Image.Image:
    return sample_images["chelsea"].resize((80, 60))


def _sae_folder(
    folder: Path, w_dec: np.ndarray, *, threshold: float | None, layer: int, bias: float = -1.0
) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    width, d_in = w_dec.shape
    tensors = {
        "W_enc": np.ascontiguousarray(w_dec.T, np.float32),
        "b_enc": np.full(width, 0.0 if threshold is not None else bias, np.float32),
        "W_dec": np.ascontiguousarray(w_dec, np.float32),
        "b_dec": np.zeros(d_in, np.float32),
    }
    if threshold is not None:
        tensors["threshold"] = np.full(width, threshold, np.float32)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    cfg = {"d_in": d_in, "d_sae": width, "hook_name": f"blocks.{layer}.hook_resid_post"}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def _unit_rows(rng: np.random.Generator, rows: int, dims: int) -> np.ndarray:
    m = rng.normal(size=(rows, dims))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# -- concepts --------------------------------------------------------------------------------------


def test_every_shipped_concept_has_twenty_anchored_sentences() -> None:
    assert len(concepts.SHIPPED) == 8
    for name in concepts.SHIPPED:
        concept = concepts.load_concepts(name)
        assert len(concept) == 20
        for s in concept.sentences:
            assert s.text[s.span[0] : s.span[1]] == s.anchor


def test_a_concept_line_without_its_anchor_is_refused_with_its_number(tmp_path: Path) -> None:
    good = json.dumps({"text": "The cat is on the table", "anchor": "on"})
    bad = json.dumps({"text": "The cat is on the table", "anchor": "under"})
    file = tmp_path / "mine.jsonl"
    file.write_text(f"{good}\n{bad}\n")
    with pytest.raises(SteeringError) as caught:
        concepts.load_concepts(file)
    assert "Line 2" in one_sentence(caught.value)
    file.write_text(f"{good}\n{json.dumps({'text': 'Tonight', 'anchor': 'night'})}\n")
    with pytest.raises(SteeringError, match="Line 2"):  # a word, not a piece of one
        concepts.load_concepts(file)


# -- the math on hand-made activations -------------------------------------------------------------


def test_mean_shift_is_the_anchor_mean_minus_the_mean_of_the_others() -> None:
    a = np.array([[1, 0], [3, 2], [5, 4]], np.float32)
    b = np.array([[0, 1], [2, 8]], np.float32)
    anchors = [np.array([False, True, False]), np.array([False, True])]
    expected = np.mean([[3, 2], [2, 8]], axis=0) - np.mean([[1, 0], [5, 4], [0, 1]], axis=0)
    np.testing.assert_allclose(vectors.mean_shift([a, b], anchors), expected, rtol=1e-6)


def test_the_probe_recovers_a_planted_direction() -> None:
    rng = np.random.default_rng(0)
    planted = _unit_rows(rng, 1, 64)[0]
    labels = rng.random(400) < 0.2
    features = rng.normal(size=(400, 64)) + 3.0 * labels[:, None] * planted
    found = vectors.linear_probe(features.astype(np.float32), labels)
    assert abs(float(np.linalg.norm(found)) - 1.0) < 1e-5
    assert float(found @ planted) > 0.9  # the direction, pointing towards the anchors


@pytest.mark.parametrize("threshold", [None, 1.0])
def test_sae_selection_picks_the_planted_features(tmp_path: Path, threshold: float | None) -> None:
    rng = np.random.default_rng(1)
    w_dec = _unit_rows(rng, 512, 256)
    planted = sorted(rng.choice(512, size=16, replace=False).tolist())
    others = [f for f in range(512) if f not in planted]
    rows = []
    for i in range(20):
        on = rng.choice(planted, size=12, replace=False)
        x = 3.0 * w_dec[on].sum(axis=0) + 4.0 * w_dec[others[i]]  # a one-sentence distractor
        rows.append(x)
    sae = vectors.load_sae(_sae_folder(tmp_path / "sae", w_dec, threshold=threshold, layer=1))
    assert (sae.d_in, sae.width, sae.layer) == (256, 512, 1)
    chosen = vectors.sae_features(sae.encode(np.array(rows, np.float32)))
    assert sorted(chosen) == planted
    expected = w_dec[planted].mean(axis=0)
    np.testing.assert_allclose(
        vectors.sae_vector(sae, chosen), expected / np.linalg.norm(expected), atol=1e-5
    )


# -- vectors from the tiny models ------------------------------------------------------------------


def test_each_method_gives_vectors_of_the_hidden_size_with_metadata(
    tiny_vlm: Any, tmp_path: Path
) -> None:
    spatial = concepts.load_concepts("spatial")
    w_dec = _unit_rows(np.random.default_rng(2), 64, 32)
    sae = vectors.load_sae(_sae_folder(tmp_path / "sae", w_dec, threshold=None, layer=1, bias=0))
    saved = store.VectorStore(tmp_path / "vectors")
    for method, chosen in (("mean_shift", [0, 1]), ("probe", [0, 1]), ("sae", [1])):
        job = vectors.compute_vector(tiny_vlm, spatial, method, chosen, sae=sae)
        vector = run_to_end(job)
        assert vector.layers == chosen
        assert vector.hidden_size == 32
        assert (vector.method, vector.concept, vector.model) == (method, "spatial", tiny_vlm.name)
        assert vector.config_hash == vectors.config_hash(tiny_vlm)
        assert len(vector.sentences) == 20
        assert vector.created
        if method != "mean_shift":
            assert all(abs(n - 1.0) < 1e-5 for n in vector.norms.values())
        entry = saved.save(vector)
        loaded = saved.load(entry.name)
        assert loaded.describe() == vector.describe()
        np.testing.assert_array_equal(loaded.at(chosen[-1]), vector.at(chosen[-1]))
    assert json.loads(loaded.extras["features"])  # the SAE's chosen features are recorded
    names = [s.name for s in saved.list()]
    assert len(names) == 3
    saved.delete(names[0])
    assert len(saved.list()) == 2


def test_an_sae_of_another_width_is_one_sentence(tiny_vlm: Any, tmp_path: Path) -> None:
    w_dec = _unit_rows(np.random.default_rng(3), 64, 16)
    sae = vectors.load_sae(_sae_folder(tmp_path / "sae16", w_dec, threshold=None, layer=1))
    job = vectors.compute_vector(tiny_vlm, concepts.load_concepts("counting"), "sae", [1], sae=sae)
    with pytest.raises(SteeringError) as caught:
        run_to_end(job)
    assert "size 16" in one_sentence(caught.value)


# -- applying a vector -----------------------------------------------------------------------------


def _vector(hidden: int = 32, seed: int = 0) -> vectors.SteeringVector:
    v = np.random.default_rng(seed).normal(size=hidden).astype(np.float32)
    return vectors.SteeringVector({0: v, 1: v}, "mean_shift", "spatial", "test", "0")


def test_alpha_zero_is_bitwise_and_the_image_mask_leaves_earlier_positions_alone(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    import torch

    vector = _vector()
    prepared = apply.prepare(tiny_vlm, photo, "Is the cat on the left?")
    image = prepared.mask("image")
    plain = prepared.logits()
    zero = prepared.logits(apply.steerings(vector, [0, 1], 0.0, image))
    assert torch.equal(plain, zero)
    inputs = prepared.inputs
    with torch.inference_mode():
        base = tiny_vlm.model(**inputs).logits
        with apply.applied(tiny_vlm, apply.steerings(vector, [0], 0.0, image)):
            assert torch.equal(base, tiny_vlm.model(**inputs).logits)
    first = int(image[0].nonzero()[0])
    with layers.capture_layers(tiny_vlm.model, [1]) as before, torch.inference_mode():
        tiny_vlm.model(**inputs)
    steering = apply.steerings(vector, [0], 4.0, image)
    with (
        layers.capture_layers(tiny_vlm.model, [1]) as after,
        apply.applied(tiny_vlm, steering),
        torch.inference_mode(),
    ):
        tiny_vlm.model(**inputs)
    change = (after[1] - before[1])[0].abs().amax(dim=-1)
    assert float(change[:first].max()) == 0.0
    assert bool((change[first:] > 0).all())
    # The re-run language model sees the same steering as the whole model.
    torch.testing.assert_close(
        prepared.logits(steering), tiny_vlm_logits(tiny_vlm, inputs, steering), atol=1e-4, rtol=0
    )
    text = prepared.mask("text")
    assert not bool((text & image).any())
    assert not bool(text[0, -1])
    assert not bool((text & layers.special_mask(tiny_vlm, inputs["input_ids"])).any())
    assert hooks.hook_count(tiny_vlm.model) == 0


def tiny_vlm_logits(vlm: Any, inputs: dict[str, Any], steering: Any) -> Any:
    import torch

    with apply.applied(vlm, steering), torch.inference_mode():
        return vlm.model(**inputs, use_cache=False).logits[0, -1].float()


def test_prefill_only_leaves_the_decoding_steps_unsteered(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    import torch

    vector = _vector()
    inputs = prompts.encode(tiny_vlm, ["Describe."], [[photo]])
    text = apply.steering_mask(tiny_vlm, inputs, "text")
    layer = layers.decoder_layers(tiny_vlm.model)[1]
    for during, decoding_steered in (("prefill", False), ("generation", True)):
        calls: list[tuple[int, bool]] = []
        raw: list[Any] = []

        def before_steering(_m: Any, _a: Any, out: Any, raw: list[Any] = raw) -> None:
            raw.append(layers.layer_output(out).clone())

        def after_steering(
            _m: Any, _a: Any, out: Any, raw: list[Any] = raw, calls: list[Any] = calls
        ) -> None:
            hidden = layers.layer_output(out)
            calls.append((hidden.shape[1], not torch.equal(hidden, raw[-1])))

        steering = apply.steerings(vector, [1], 3.0, text, during)  # type: ignore[arg-type]
        with apply.applied(tiny_vlm, steering):
            first = layer.register_forward_hook(before_steering, prepend=True)
            last = layer.register_forward_hook(after_steering)
            try:
                run_to_end(generation.stream(tiny_vlm, photo, "Describe.", max_new_tokens=4))
            finally:
                first.remove()
                last.remove()
        prefill, *decoding = calls
        assert prefill == (inputs["input_ids"].shape[1], True)
        assert decoding
        assert all(changed == decoding_steered for _, changed in decoding)
    assert hooks.hook_count(tiny_vlm.model) == 0


def test_ask_side_by_side_and_hooks_gone_after_an_error_and_a_cancel(
    tiny_vlm: Any, photo: Image.Image
) -> None:
    vector = _vector()
    job = apply.ask(
        tiny_vlm, photo, "Left or right?", vector=vector, layers=[1], alpha=0.0,
        options=["left", "right"], max_new_tokens=4,
    )  # fmt: skip
    pieces: list[apply.AnswerPiece] = []
    while True:
        try:
            update = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(update, apply.AnswerPiece):
            pieces.append(update)
    data = result.to_json()
    assert set(data) == {"unsteered", "steered"}
    assert data["unsteered"] == data["steered"]  # alpha 0
    assert set(data["steered"]["probabilities"]) == {"left", "right"}
    assert {p.side for p in pieces} <= {"unsteered", "steered"}

    class BoomError(Exception):
        pass

    def fail_while_steered() -> None:
        with apply.applied(tiny_vlm, apply.steerings(vector, [0, 1], 2, None)):
            assert hooks.hook_count(tiny_vlm.model) == 2
            raise BoomError

    with pytest.raises(BoomError):
        fail_while_steered()
    assert hooks.hook_count(tiny_vlm.model) == 0
    token = CancelToken()
    job = apply.ask(
        tiny_vlm, photo, "Describe.", vector=vector, layers=[0], alpha=5.0,
        max_new_tokens=50, cancel=token,
    )  # fmt: skip
    with pytest.raises(Cancelled):  # noqa: PT012 - cancelling from inside the loop is the point
        for update in job:
            if isinstance(update, apply.AnswerPiece) and update.side == "steered":
                assert hooks.hook_count(tiny_vlm.model) == 1
                token.cancel()
    assert hooks.hook_count(tiny_vlm.model) == 0


def test_a_vector_of_another_hidden_size_is_one_sentence(tiny_vlm: Any, photo: Image.Image) -> None:
    job = apply.ask(tiny_vlm, photo, "Describe.", vector=_vector(hidden=48), layers=[0], alpha=1.0)
    with pytest.raises(SteeringError) as caught:
        run_to_end(job)
    assert "size 48" in one_sentence(caught.value)


# -- the sweep -------------------------------------------------------------------------------------


def test_the_protocol_holds_out_150_and_keeps_the_best_gain_smaller_alpha_first() -> None:
    grid, held = sweep.split(400)
    assert len(held) == 150
    assert sorted(grid + held) == list(range(400))
    assert sweep.split(400) == (grid, held)  # seed 42, every time
    assert len(sweep.split(40)[1]) == 12  # a small set: 30%
    planted = {(layer, a): 0.5 for layer in (2, 4, 6) for a in (0.1, 0.5, 1.0)}
    planted[(4, 1.0)] = planted[(4, 0.5)] = 0.62
    assert sweep.best_cell(planted, 0.5) == ((4, 0.5), pytest.approx(0.12))
    better = np.array([True] * 90 + [False] * 60)
    worse = np.array([True] * 60 + [False] * 90)
    ci = sweep.bootstrap_difference(better, worse)
    assert ci["difference"] == pytest.approx(0.2)
    assert ci["low"] < 0.2 < ci["high"]


@pytest.fixture
def benchmark_file(tmp_path: Path, sample_images: dict[str, Image.Image]) -> Path:
    folder = tmp_path / "bench"
    (folder / "img").mkdir(parents=True)
    lines = []
    names = list(sample_images)
    for i in range(10):
        name = names[i % len(names)]
        sample_images[name].resize((80, 60)).save(folder / "img" / f"{name}.jpg")
        choices = ["left", "right"] if i % 2 else ["one", "two", "three"]
        record = {"image": f"img/{name}.jpg", "question": f"Question {i}?", "choices": choices}
        lines.append(json.dumps({**record, "answer": "(B)", "task": "Relation"}))
    (folder / "bench.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "bench.jsonl"


def test_a_cancelled_sweep_resumes_to_the_same_table(
    tiny_vlm_dirs: dict[str, Path], benchmark_file: Path, tmp_path: Path
) -> None:
    from visuallens_app.vlm import load_vlm

    vlm = load_vlm(tiny_vlm_dirs["llava"], device="cpu")
    items = bench.load_benchmark(benchmark_file)
    vector = _vector()

    def job(out: Path, cancel: CancelToken | None = None) -> Any:
        return sweep.run_sweep(vlm, items, vector, [0, 1], [0.0, 8.0], out_dir=out, cancel=cancel)

    whole = run_to_end(job(tmp_path / "whole"))
    token = CancelToken()
    cells = 0
    with pytest.raises(Cancelled):  # noqa: PT012 - cancelling from inside the loop is the point
        for update in job(tmp_path / "resumed", token):
            if isinstance(update, sweep.SweepCell):
                cells += 1
                if cells == 8:  # two questions of the grid
                    token.cancel()
    assert hooks.hook_count(vlm.model) == 0
    resumed = run_to_end(job(tmp_path / "resumed"))
    assert resumed.to_json() == whole.to_json()
    assert whole.grid_size == 7
    assert whole.heldout["questions"] == 3
    assert whole.accuracy[(0, 0.0)] == whole.accuracy[(1, 0.0)] == whole.unsteered
    report = json.loads((tmp_path / "resumed" / "sweep.json").read_text())
    assert report["best"]["alpha"] in (0.0, 8.0)
    with Image.open(tmp_path / "resumed" / "heatmap.png") as png:
        assert png.size[0] > 100


def test_a_benchmark_line_without_an_answer_is_one_sentence(tmp_path: Path) -> None:
    file = tmp_path / "b.jsonl"
    file.write_text(json.dumps({"image": "a.jpg", "question": "Q?", "choices": ["a", "b"]}) + "\n")
    with pytest.raises(SteeringError) as caught:
        bench.load_benchmark(file)
    assert "Line 1 of" in one_sentence(caught.value)
    assert '"answer"' in str(caught.value)
    file.write_text(
        json.dumps({"image": "a.jpg", "question": "Q?", "choices": ["a", "b"], "answer": "(D)"})
    )
    with pytest.raises(SteeringError, match="not one of its 2 choices"):
        bench.load_benchmark(file)


# -- the CLI ---------------------------------------------------------------------------------------


def test_the_steer_commands_end_to_end(  # noqa: PLR0917 - fixtures
    tiny_vlm_dirs: dict[str, Path],
    library_dir: Path,
    benchmark_file: Path,
    photo: Image.Image,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = str(tiny_vlm_dirs["qwen2_vl"])

    def run(*argv: str) -> Any:
        code = main(["steer", *argv, "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        return json.loads(out)

    made = run("vector", "--concept", "counting", "--layers", "0-1", "--vlm", model)
    assert made["hidden_size"] == 32
    assert made["layers"] == [0, 1]
    image = tmp_path / "cat.jpg"
    photo.save(image)
    answer = run(
        "ask", str(image), "How many cats?", "--options", "one,two", "--vector", made["name"],
        "--layer", "1", "--alpha", "2", "--mask", "both", "--vlm", model, "--max-new-tokens", "3",
    )  # fmt: skip
    assert set(answer) == {"unsteered", "steered"}
    assert set(answer["steered"]["probabilities"]) == {"one", "two"}
    swept = run(
        "sweep", str(benchmark_file), "--vector", made["name"], "--layers", "1",
        "--alphas", "0,4", "--out", str(tmp_path / "sweep"), "--vlm", model,
    )  # fmt: skip
    assert swept["heldout"]["questions"] == 3
    assert [v["name"] for v in run("list")] == [made["name"]]
    assert run("delete", made["name"])["deleted"] == made["name"]
    assert run("list") == []
    assert main(["steer", "delete", made["name"]]) == 1
    assert "no saved steering vector" in capsys.readouterr().err
