"""Correcting flagged texts (the paper's prompt, suggestions) and the annotation store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from visuallens_app.jobs import Partial, Progress
from visuallens_app.models.base import Encoder
from visuallens_app.models.registry import load_encoder
from visuallens_app.tldr.correct import (
    Correction,
    NothingToCorrectError,
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
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import tiny_vlms

    from visuallens_app.vlm import load_vlm

    folder = tiny_vlms.build("llava", tmp_path_factory.mktemp("tiny-llava") / "llava")
    return load_vlm(folder, device="cpu")


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
