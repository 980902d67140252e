"""TLDR data, metrics and the grounding detector: perturbations, labels, metrics, real photos."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from visuallens_app.errors import VisualLensError
from visuallens_app.jobs import run_to_end
from visuallens_app.tldr.labels import (
    BAD,
    GOOD,
    LabelledRecord,
    diff_labels,
    read_records,
    write_records,
)
from visuallens_app.tldr.lexicon import tokenize
from visuallens_app.tldr.metrics import (
    HallucinationRates,
    ScoredResponse,
    average_precision,
    evaluate_scored,
    hallucination_rates,
    response_accuracy,
    sentence_accuracy,
    sentence_ids,
    token_accuracy,
)
from visuallens_app.tldr.perturb import CATEGORIES, check_edit, perturb, perturb_file

# -- perturbations and labels --------------------------------------------------------------------

#: category -> (a caption with something of the category, the words an edit must touch).
WRITTEN = {
    "spatial": ("A cat sits to the left of a white cup.", {"left", "right"}),
    "attribute": ("A red car is parked beside a wooden bench.", None),
    "binding": ("A blue car and a yellow bus wait at the lights.", {"blue", "yellow"}),
    "object": ("A dog is lying on the sofa.", {"dog", "sofa"}),
    "counting": ("Three birds sit on the fence.", {"three"}),
    "small_object": ("A tiny bird perches on a branch of the tree.", {"bird", "a", "tiny"}),
    "ocr": ('A red sign that says "STOP" stands at the corner.', {"stop"}),
    "counterfactual": ("A man is riding a horse on the beach.", None),
}
#: category -> a caption with nothing of that category: a counted skip.
NOTHING = {
    "spatial": "A tabby cat.",
    "attribute": "A cat and a dog.",
    "binding": "A cat sleeps.",
    "object": "It is sunny today.",
    "counting": "Cats sleep.",
    "small_object": "A horse grazes.",
    "ocr": "The sky at dusk.",
    "counterfactual": "A cat sleeps.",
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_gives_a_minimal_edit_with_its_labels(category: str) -> None:
    caption, must_touch = WRITTEN[category]
    edits = perturb(caption, category, n=3, rng=random.Random(0))
    assert edits, f"no {category} edit of {caption!r}"
    original_words = [t.text.lower() for t in tokenize(caption)]
    for edit in edits:
        assert edit.text != caption
        assert check_edit(caption, edit.text, category) is None
        tokens, labels = diff_labels(caption, edit.text)
        bad = [t.text.lower() for t, label in zip(tokens, labels, strict=True) if label == BAD]
        assert 1 <= len(bad) <= 8, (edit.text, bad)
        # Good tokens are exactly the ones kept from the original, in order.
        kept = [t.text.lower() for t, label in zip(tokens, labels, strict=True) if label == GOOD]
        assert len(kept) >= len(original_words) - 3
        if must_touch is not None and category != "binding":
            assert set(edit.change.lower().replace("->", " ").split()) & must_touch, edit


def test_binding_swaps_the_two_attributes() -> None:
    (edit,) = perturb("A blue car and a yellow bus.", "binding", n=1)
    assert edit.text == "A yellow car and a blue bus."
    tokens, labels = diff_labels("A blue car and a yellow bus.", edit.text)
    assert [t.text for t, label in zip(tokens, labels, strict=True) if not label] == [
        "yellow",
        "blue",
    ]


def test_known_edits_are_labelled_exactly() -> None:
    tokens, labels = diff_labels("A cat is sitting.", "A cat is not sitting.")
    assert [t.text for t in tokens] == ["A", "cat", "is", "not", "sitting", "."]
    assert labels == [1, 1, 1, 0, 1, 1]
    tokens, labels = diff_labels("An apple on a table.", "A banana on a table.")
    assert labels == [0, 0, 1, 1, 1, 1]
    assert (tokens[1].start, tokens[1].end) == (2, 8)


@pytest.mark.parametrize("category", CATEGORIES)
def test_a_caption_with_nothing_of_the_category_is_a_skip(category: str) -> None:
    assert perturb(NOTHING[category], category) == []


def test_the_validity_check_refuses_paraphrases_and_off_category_edits() -> None:
    assert check_edit("A big dog.", "A large dog.", "attribute") == "the edit is a paraphrase"
    assert check_edit("A cat sits.", "A cat sits.", "object") == "the edit changes nothing"
    assert check_edit("A red cat on a mat.", "A blue cat on a mat.", "spatial") is not None
    assert check_edit("A cat on a mat.", "A cat under a mat.", "spatial") is None


def test_perturb_file_counts_skips_reports_bad_lines_and_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "captions.jsonl"
    lines = [
        json.dumps({"id": "cat", "image": "chelsea.jpg", "caption": WRITTEN["spatial"][0]}),
        "{not json",
        json.dumps({"id": "empty", "caption": ""}),
        json.dumps({"id": "sky", "caption": "The sky."}),
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "labelled.jsonl"
    summary = run_to_end(perturb_file(source, out, per_caption=2))
    assert summary.captions == 2
    assert [p.split(":")[0] for p in summary.problems] == ["line 2", "line 3"]
    assert all(len(p.split(". ")) == 1 for p in summary.problems)  # one sentence each
    assert summary.skipped["spatial"] == 1  # "The sky." has no relation
    assert summary.written["spatial"] >= 1
    load = read_records(out)
    assert not load.problems
    assert len(load.records) == summary.records
    originals = [r for r in load.records if r.category == "original"]
    assert len(originals) == 2
    assert all(set(r.labels) == {GOOD} for r in originals)
    assert all(r.bad for r in load.records if r.category != "original")
    # Round trip: written again, read again, identical.
    again = tmp_path / "again.jsonl"
    write_records(again, load.records)
    assert read_records(again).records == load.records
    assert load.records[1].image == "chelsea.jpg"
    assert load.records[1].original


def test_a_malformed_record_line_is_one_sentence_and_nothing_else_is_lost(tmp_path: Path) -> None:
    good = LabelledRecord.of_edit("A cat.", "A dog.", "object", "x")
    path = tmp_path / "data.jsonl"
    broken = dict(good.as_json(), labels=[1])
    path.write_text(
        "\n".join([json.dumps(good.as_json()), "[1, 2", json.dumps(broken)]) + "\n",
        encoding="utf-8",
    )
    load = read_records(path)
    assert load.records == [good]
    assert len(load.problems) == 2
    assert load.problems[0].startswith("line 2: not valid JSON")
    assert load.problems[1] == 'line 3: "labels" must be a list with one 0 or 1 per token'


def test_unknown_category_is_one_sentence() -> None:
    with pytest.raises(VisualLensError, match=r"^Unknown category 'colour'; choose from .*\.$"):
        perturb("A cat.", "colour")


# -- metrics, on hand-computed examples ----------------------------------------------------------


def _two_responses() -> list[ScoredResponse]:
    return [
        ScoredResponse(
            ["A", "cat", ".", "A", "dog", "."],
            [1, 1, 1, 1, 0, 1],
            [0.9, 0.8, None, 0.7, 0.3, None],
            "object",
        ),
        ScoredResponse(["Two", "cups", "."], [0, 1, 1], [0.6, 0.4, None], "counting"),
    ]


def test_accuracies_split_sentences_at_periods() -> None:
    responses = _two_responses()
    assert sentence_ids(["A", "cat", ".", "A", "dog", ".", "Hi"]) == [0, 0, 0, 1, 1, 1, 2]
    # 6/6 right in the first response; in the second "Two" (bad, 0.6) and "cups" (good, 0.4) wrong.
    assert token_accuracy(responses) == pytest.approx(7 / 9)
    # The second response's one sentence is bad and predicted bad (for the wrong token): right.
    assert sentence_accuracy(responses) == 1.0
    assert response_accuracy(responses) == 1.0
    # With the threshold at 0.35 "dog" (0.3) is still flagged, "cups" (0.4) no longer.
    assert token_accuracy(responses, threshold=0.35) == pytest.approx(8 / 9)
    assert response_accuracy(responses, threshold=0.25) == 0.0


def test_map_on_the_bad_and_the_good_class() -> None:
    responses = _two_responses()
    # Bad class by 1 - P: dog 0.7 (bad), cups 0.6 (good), Two 0.4 (bad): (1/1 + 2/3) / 2.
    assert average_precision(responses, BAD) == pytest.approx((1 + 2 / 3) / 2)
    # Good class by P: the three unchecked (1.0) and 0.9, 0.8, 0.7 are all good (recall 6/7 at
    # precision 1), then 0.6 (bad), then 0.4 (good: precision 7/8).
    assert average_precision(responses, GOOD) == pytest.approx(6 / 7 + (1 / 7) * (7 / 8))
    assert average_precision(responses[:1][:0], BAD) is None


def test_hallucination_rates_at_token_sentence_and_response_level() -> None:
    responses = _two_responses()
    rates = hallucination_rates([(r.tokens, r.labels) for r in responses])
    assert rates == HallucinationRates(token=2 / 9, sentence=2 / 3, response=1.0)
    clean = hallucination_rates([(["A", "cat", "."], [1, 1, 1]), (["A", "dog"], [1, 0])])
    assert clean == HallucinationRates(token=1 / 5, sentence=1 / 2, response=1 / 2)


def test_metrics_report_per_category() -> None:
    report = evaluate_scored(_two_responses())
    assert list(report.per_category) == ["object", "counting"]
    counting = report.per_category["counting"]
    assert counting.token_accuracy == pytest.approx(1 / 3)
    assert counting.map_bad == pytest.approx(1 / 2)  # "cups" 0.6 outranks "Two" 0.4
    assert report.overall.checked_share == pytest.approx(6 / 9)
    assert report.overall.bad_checked_share == 1.0
    data = report.as_json()
    assert data["overall"]["response_accuracy"] == 1.0  # type: ignore[index]
    assert "A_T" in report.table()
