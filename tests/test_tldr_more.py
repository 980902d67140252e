"""Correcting flagged texts (the paper's prompt, suggestions) and the annotation store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visuallens_app.jobs import Partial, Progress
from visuallens_app.models.base import Encoder
from visuallens_app.models.registry import load_encoder
from visuallens_app.tldr.annotate import (
    AnnotationError,
    AnnotationStore,
    AnnotationTimer,
    default_annotations_path,
)
from visuallens_app.tldr.correct import (
    Correction,
    NothingToCorrectError,
    apply_suggestion,
    correct_with_vlm,
    correction_prompt,
    merge_correction,
    sentence_spans,
    suggestions,
    word_diff,
)
from visuallens_app.tldr.detector import TokenScore, TokenScores
from visuallens_app.tldr.grounding import GroundingDetector
from visuallens_app.tldr.lexicon import tokenize

TEXT = "A cat sits on a sofa. The sky is blue. A car is parked next to a dog."


def fake_scores(text: str, bad: Sequence[str] = (), good: Sequence[str] = ()) -> TokenScores:
    """Scores by hand: words in ``bad`` at P(good) 0.1, in ``good`` at 0.9, the rest unchecked."""
    tokens = []
    for t in tokenize(text):
        word = t.text.lower()
        p = 0.1 if word in bad else 0.9 if word in good else None
        tokens.append(TokenScore(t.text, t.start, t.end, p, p is not None))
    return TokenScores(text, tuple(tokens), "fake")


def rebuilt(diff: list[tuple[str, str, str]]) -> tuple[str, str]:
    return "".join(old for _, old, _ in diff), "".join(new for _, _, new in diff)


# -- the prompt, the merge and the diff -------------------------------------------------------


def test_the_prompt_feeds_back_the_flagged_words_sentence_by_sentence() -> None:
    prompt = correction_prompt(TEXT, fake_scores(TEXT, bad=["sofa", "car", "dog"], good=["cat"]))
    assert 'Take a closer look at these words: "sofa", "car" and "dog".' in prompt
    assert 'Fix the sentence "A cat sits on a sofa." with more attention to "sofa".' in prompt
    assert (
        'Fix the sentence "A car is parked next to a dog." with more attention to "car" and "dog".'
        in prompt
    )
    assert 'Fix the sentence "The sky is blue."' not in prompt
    assert "minimal edits" in prompt
    assert "leave every other sentence exactly as it is" in prompt


def test_nothing_flagged_is_one_sentence() -> None:
    with pytest.raises(NothingToCorrectError, match="nothing to correct") as err:
        correction_prompt(TEXT, fake_scores(TEXT, good=["cat", "sofa"]))
    assert str(err.value).count(". ") == 0


def test_sentences_split_after_periods() -> None:
    assert [TEXT[s:e] for s, e in sentence_spans(TEXT)] == [
        "A cat sits on a sofa.",
        "The sky is blue.",
        "A car is parked next to a dog.",
    ]
    assert [e for _, e in sentence_spans("No period at the end")] == [20]


def test_unflagged_sentences_stay_as_they_were_whatever_the_model_wrote() -> None:
    answer = "A cat sits on a blanket. The sky is grey. A cat is next to a cat."
    corrected, warnings = merge_correction(TEXT, answer, [0, 2])
    assert corrected == "A cat sits on a blanket. The sky is blue. A cat is next to a cat."
    assert warnings == ()
    # A different sentence count: each flagged sentence takes its most similar one.
    corrected, _ = merge_correction(TEXT, "Sure. A cat sits on a blanket.", [0])
    assert corrected == "A cat sits on a blanket. The sky is blue. A car is parked next to a dog."
    # Nothing recognisable: the flagged sentence is kept, with a warning.
    corrected, warnings = merge_correction(TEXT, "Zzz qqq.", [0, 2])
    assert corrected == TEXT
    assert len(warnings) == 1


def test_the_word_diff_rebuilds_both_texts() -> None:
    new = "A cat sits on a blanket. The sky is blue. A cat lies next to a dog!"
    diff = word_diff(TEXT, new)
    assert rebuilt(diff) == (TEXT, new)
    changes = [(old, new) for op, old, new in diff if op != "equal"]
    assert changes == [("sofa", "blanket"), ("car", "cat"), ("is parked", "lies"), (".", "!")]


# -- the model's correction (tiny random VLM: its text is noise, the mechanics are not) -------


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tiny_vlms

    return Path(tiny_vlms.build("llava", tmp_path_factory.mktemp("tiny-llava") / "llava"))


@pytest.fixture(scope="module")
def tiny_llava(tiny_llava_dir: Path) -> Any:
    from visuallens_app.vlm import load_vlm

    return load_vlm(tiny_llava_dir, device="cpu")


def test_correct_with_vlm_streams_and_keeps_unflagged_sentences(
    tiny_llava: Any, sample_images: dict[str, Image.Image]
) -> None:
    scores = fake_scores(TEXT, bad=["car"], good=["cat"])
    job = correct_with_vlm(tiny_llava, sample_images["chelsea"], TEXT, scores, max_new_tokens=12)
    records: list[Progress | Partial] = []
    while True:
        try:
            records.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    assert isinstance(result, Correction)
    assert isinstance(records[0], Progress)
    assert any(isinstance(r, Partial) for r in records)
    assert result.original == TEXT
    assert result.corrected.startswith("A cat sits on a sofa. The sky is blue. ")
    assert rebuilt(result.diff) == (TEXT, result.corrected)
    assert result.as_json()["corrected"] == result.corrected


# -- suggestions ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder("embedded", device="cpu").encoder


def test_grounding_suggestions_rank_the_right_object_first(
    encoder: Encoder, sample_images: dict[str, Image.Image]
) -> None:
    detector = GroundingDetector(encoder)
    image = sample_images["chelsea"]
    text = "A car sleeps on the sofa. The room is warm."
    scores = detector.score(image, "", text)
    found = suggestions(detector, image, text, scores, per_phrase=3)
    car = next(s for s in found if s.original == "A car")
    assert (car.start, car.end, car.kind) == (0, 5, "object")
    assert len(car.replacements) == 3
    best, p = car.replacements[0]
    assert best == "A cat"
    assert p is not None
    assert car.p_good is not None
    assert p > 0.5 > car.p_good
    values = [r[1] or 0.0 for r in car.replacements]
    assert values == sorted(values, reverse=True)
    assert apply_suggestion(text, car, best) == "A cat sleeps on the sofa. The room is warm."
    # What the sentence already names is never offered: no "a cat sits on a cat".
    text = "A cat sits on a sofa."
    sofa = suggestions(detector, image, text, detector.score(image, "", text))[0]
    assert sofa.original == "a sofa"
    assert "a cat" not in [r for r, _ in sofa.replacements]


class FakeDetector:
    """A detector that likes cats and blue, scores in batches, and counts its calls."""

    id = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, image: Image.Image, prompt: str, response: str) -> TokenScores:
        return self.score_many([(image, prompt, response)])[0]

    def score_many(self, items: Sequence[tuple[Image.Image, str, str]]) -> list[TokenScores]:
        self.batches.append(len(items))
        return [
            fake_scores(r, bad=["dogs", "car", "red", "sofa"], good=["cats", "blue"])
            for *_, r in items
        ]


def test_suggestions_from_any_detector_are_batched_and_ranked(
    sample_images: dict[str, Image.Image],
) -> None:
    detector = FakeDetector()
    text = "Two dogs sit on a red sofa. Then hello."
    scores = detector.score(sample_images["chelsea"], "", text)
    found = suggestions(detector, sample_images["chelsea"], text, scores, per_phrase=4)
    assert len(detector.batches) == 2  # the scores, then every variant in one batch
    dogs = next(s for s in found if s.original == "dogs")
    assert dogs.replacements[0] == ("cats", 0.9)  # plural kept
    red = next(s for s in found if s.original == "red")
    assert red.kind == "colour"
    assert red.replacements[0] == ("blue", 0.9)
    assert all(p == 0.1 or p is None for _, p in red.replacements[1:])


# -- annotation mode --------------------------------------------------------------------------

CAPTION = "A car sleeps on a red sofa."


def test_annotation_items_round_trip_toggle_and_time(tmp_path: Path) -> None:
    path = default_annotations_path(tmp_path / "library")
    assert path == tmp_path / "library" / "tldr" / "annotations.sqlite"
    store = AnnotationStore(path)
    scores = fake_scores(CAPTION, bad=["car"], good=["sofa"])
    item = store.add("photos/cat.jpg", CAPTION, scores=scores)
    assert item.labels == [1, 0, 1, 1, 1, 1, 1, 1]
    assert item.detector == "fake"
    assert item.tokens[1].p_good == 0.1
    assert item.bad_spans() == [(2, 5)]
    item = store.toggle(item.id, 5)  # "red" is wrong too
    item = store.update(item.id, corrected="A cat sleeps on a grey sofa.")
    clock = iter([10.0, 14.5, 20.0, 21.0]).__next__
    timer = AnnotationTimer(store, clock=clock)
    timer.start(item.id)
    assert timer.stop() == 4.5
    timer.start(item.id)
    assert timer.stop() == 1.0
    store.close()

    reopened = AnnotationStore(path)  # migrations applied once, data kept
    again = reopened.get(item.id)
    assert again.labels == [1, 0, 1, 1, 1, 0, 1, 1]
    assert again.corrected == "A cat sleeps on a grey sofa."
    assert again.seconds == 5.5
    plain = reopened.add(Path("dog.jpg"), "A dog.")
    assert plain.labels == [1, 1, 1]
    assert [i.id for i in reopened.list()] == [item.id, plain.id]
    assert [i.id for i in reopened.list("dog.jpg")] == [plain.id]
    assert len(reopened) == 2


def test_the_store_is_usable_from_a_worker_thread(tmp_path: Path) -> None:
    import threading

    store = AnnotationStore(tmp_path / "a.sqlite")
    item = store.add("cat.jpg", CAPTION)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                store.add_seconds(item.id, 0.5)
        except BaseException as err:  # pragma: no cover - reported below
            failures.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert store.get(item.id).seconds == 30.0


def test_annotation_errors_are_one_sentence(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path / "a.sqlite")
    item = store.add("cat.jpg", CAPTION)
    with pytest.raises(AnnotationError, match="no annotation item 99"):
        store.get(99)
    with pytest.raises(AnnotationError, match="8 tokens but 2 labels"):
        store.update(item.id, labels=[1, 0])
    with pytest.raises(AnnotationError, match="empty"):
        store.add("cat.jpg", "  ")
    with pytest.raises(AnnotationError, match="different text"):
        store.add("cat.jpg", "A dog.", scores=fake_scores(CAPTION))
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(AnnotationError, match="cannot be opened as an annotation store"):
        AnnotationStore(tmp_path / "junk.sqlite")


def test_exports_jsonl_and_label_studio(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path / "a.sqlite")
    scores = fake_scores(CAPTION, bad=["car", "red"], good=["sofa"])
    item = store.add("cat.jpg", CAPTION, scores=scores, seconds=3.25)
    store.update(item.id, labels=[1, 0, 1, 1, 1, 0, 0, 1])  # the annotator: "car", "red sofa"
    store.add("dog.jpg", "A dog.")
    assert store.export_jsonl(tmp_path / "out.jsonl") == 2
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    first = lines[0]
    assert first["text"] == CAPTION
    assert first["tokens"][1] == {"text": "car", "start": 2, "end": 5}
    assert first["labels"] == [1, 0, 1, 1, 1, 0, 0, 1]
    assert first["p_good"][1] == 0.1
    assert first["p_good"][0] is None
    assert first["seconds"] == 3.25
    assert store.export_label_studio(tmp_path / "ls.json") == 2
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert tasks[0]["data"] == {"image": "cat.jpg", "text": CAPTION}
    spans = [r["value"] for r in tasks[0]["annotations"][0]["result"]]
    assert spans == [
        {"start": 2, "end": 5, "text": "car", "labels": ["hallucination"]},
        {"start": 18, "end": 26, "text": "red sofa", "labels": ["hallucination"]},
    ]
    result = tasks[0]["annotations"][0]["result"][0]
    assert (result["from_name"], result["to_name"], result["type"]) == ("label", "text", "labels")
    predicted = tasks[0]["predictions"][0]["result"]
    assert [r["value"]["text"] for r in predicted] == ["car", "red"]
    assert predicted[0]["score"] == 0.9
    assert tasks[0]["annotations"][0]["lead_time"] == 3.25
    assert "predictions" not in tasks[1]  # no detector scored it


# -- the commands -----------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from visuallens_app.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_correct_suggests_without_a_vlm_and_corrects_with_one(
    library_dir: Path,
    tmp_path: Path,
    tiny_llava_dir: Path,
    sample_images: dict[str, Image.Image],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample_images["chelsea"].save(tmp_path / "cat.jpg")
    text = "A car sleeps on the sofa. The room is warm."
    common = ["--encoder", "embedded", "--device", "cpu", "--json"]
    code, out, _ = _cli(capsys, "tldr", "correct", str(tmp_path / "cat.jpg"), text, *common)
    assert code == 0
    data = json.loads(out)
    assert data["mode"] == "suggestions"
    car = next(s for s in data["suggestions"] if s["original"] == "A car")
    assert car["replacements"][0]["text"] == "A cat"
    code, out, _ = _cli(
        capsys, "tldr", "correct", str(tmp_path / "cat.jpg"), text, "--per-phrase", "2",
        "--encoder", "embedded", "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    assert "'A car' at 0-5" in out
    assert "give --vlm" in out

    code, out, _ = _cli(
        capsys, "tldr", "correct", str(tmp_path / "cat.jpg"), text, "--vlm",
        str(tiny_llava_dir), "--max-new-tokens", "8", *common,
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["mode"] == "correction"
    correction = data["correction"]
    assert correction["corrected"].endswith(" The room is warm.")
    assert "".join(d["new"] for d in correction["diff"]) == correction["corrected"]
    assert "".join(d["old"] for d in correction["diff"]) == text
    assert data["rescored"]["tokens"]


def test_cli_correct_errors_are_one_sentence(
    library_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "tldr", "correct", str(tmp_path / "none.jpg"), "A cat.")
    assert code == 1
    assert err == f"visuallens: There is no image at {tmp_path / 'none.jpg'}.\n"
    code, _, err = _cli(capsys, "tldr", "correct", str(tmp_path / "none.jpg"), " ")
    assert code == 1
    assert err.startswith("visuallens: The text is empty")


def test_cli_annotate_export(
    library_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "tldr", "annotate-export", "-o", str(tmp_path / "x.jsonl"))
    assert code == 1
    assert "There is no annotation store at" in err
    assert len(err.strip().splitlines()) == 1
    with AnnotationStore(default_annotations_path(library_dir)) as store:
        store.add("cat.jpg", CAPTION, scores=fake_scores(CAPTION, bad=["car"]))
    code, out, _ = _cli(capsys, "tldr", "annotate-export", "-o", str(tmp_path / "x.jsonl"))
    assert code == 0
    assert "Wrote 1 item(s)" in out
    assert json.loads((tmp_path / "x.jsonl").read_text())["labels"][1] == 0
    code, out, _ = _cli(
        capsys, "tldr", "annotate-export", "--format", "label-studio", "-o",
        str(tmp_path / "ls.json"), "--store", str(default_annotations_path(library_dir)), "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["items"] == 1
    task = json.loads((tmp_path / "ls.json").read_text())[0]
    assert task["annotations"][0]["result"][0]["value"]["text"] == "car"
