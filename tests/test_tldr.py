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
