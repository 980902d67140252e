"""TLDR data, metrics and the grounding detector: perturbations, labels, metrics, real photos."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import sample_image

from visuallens_app.errors import VisualLensError
from visuallens_app.jobs import run_to_end
from visuallens_app.models.base import Encoder
from visuallens_app.models.registry import load_encoder
from visuallens_app.tldr.detector import TokenScores
from visuallens_app.tldr.grounding import GroundingDetector, load_calibration
from visuallens_app.tldr.inputs import MAX_WORDS, TldrInputError, open_image
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
from visuallens_app.tldr.perturb import CATEGORIES, check_edit, perturb
from visuallens_app.tldr.rewrite import clean_answer, rewrite_prompt
from visuallens_app.tldr.synthetic import perturb_file

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


def test_llm_rewrites_are_checked_and_the_failures_counted(tmp_path: Path) -> None:
    source = tmp_path / "captions.jsonl"
    source.write_text(json.dumps({"id": "a", "caption": "A cat sits on a red mat."}) + "\n")
    answers = {
        "object": "Edited caption: A dog sits on a red mat.",  # valid
        "attribute": '"A cat sits on a red rug."',  # an object change: outside the category
        "spatial": "A cat sits on a red mat.",  # no change
        "counterfactual": "A feline is resting upon a crimson mat.",  # a paraphrase
    }
    asked: list[str] = []

    def rewriter(requests: list[tuple[str, str]]) -> list[str]:
        asked.extend(rewrite_prompt(c, k) for c, k in requests)
        return [clean_answer(answers[k]) for _, k in requests]

    summary = run_to_end(
        perturb_file(source, tmp_path / "out.jsonl", categories=list(answers), rewriter=rewriter)
    )
    assert summary.written == {"object": 1}
    assert summary.discarded == {"attribute": 1, "spatial": 1, "counterfactual": 1}
    assert len(asked) == 4
    assert "Caption: A cat sits on a red mat." in asked[0]
    (_, edit) = read_records(tmp_path / "out.jsonl").records
    assert edit.text == "A dog sits on a red mat."
    assert [t.text for t, label in zip(edit.tokens, edit.labels, strict=True) if not label] == [
        "dog"
    ]


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


# -- the grounding detector on real photos ------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder("embedded", device="cpu").encoder


@pytest.fixture(scope="module")
def detector(encoder: Encoder) -> GroundingDetector:
    return GroundingDetector(encoder)


#: photo -> (the main object, two captions about it, with {} where the object goes).
PHOTO_CAPTIONS = {
    "chelsea": ("cat", ["A {} with green eyes stares ahead.", "A close-up of a {} indoors."]),
    "coffee": ("cup", ["A {} of espresso on a red saucer.", "A {} standing on a wooden table."]),
    "motorcycle_left": (
        "motorcycle",
        ["A red {} parked in a garage.", "A {} with a black seat and chrome wheels."],
    ),
    "camera": ("tripod", ["A man standing behind a {} in a field.", "A {} stands on the grass."]),
    "rocket": ("rocket", ["A {} on the launch pad at night.", "A tall {} under a dark blue sky."]),
}
WRONG_OBJECTS = ("dog", "car", "chair", "pizza")
#: A near miss per photo, the hard case: a similar object the photo does not show.
NEAR_MISS = {
    "chelsea": "fox",
    "coffee": "bowl",
    "motorcycle_left": "bicycle",
    "camera": "lamp",
    "rocket": "tower",
}


def _p_of(scores: TokenScores, word: str, sentence: int) -> float:
    """P(good) of ``word`` in the ``sentence``-th sentence of the scored text."""
    seen = -1
    for token in scores.tokens:
        if token.text.lower() == word:
            seen += 1
            if seen == sentence:
                assert token.checked
                assert token.p_good is not None
                return token.p_good
    raise AssertionError(f"{word!r} not in {scores.response!r}")


def test_swapping_the_main_object_lowers_its_p_good(
    detector: GroundingDetector, sample_images: dict[str, Image.Image]
) -> None:
    wins = pairs = 0
    for photo, (right, templates) in PHOTO_CAPTIONS.items():
        image = sample_images[photo] if photo in sample_images else sample_image(photo)
        for template in templates:
            # Sentences are scored one by one (each against its own variants), so one text
            # holding the right sentence and each wrong one is the same as separate calls.
            wrongs = [w for w in (*WRONG_OBJECTS, NEAR_MISS[photo]) if w != right]
            text = " ".join(template.format(w) for w in [right, *wrongs])
            scores = detector.score(image, "", text)
            p_right = _p_of(scores, right, 0)
            for wrong in wrongs:
                pairs += 1
                wins += p_right > _p_of(scores, wrong, 0)
    share = wins / pairs
    print(f"right object above the wrong one in {wins}/{pairs} pairs ({share:.0%})")
    assert pairs >= 30
    assert share >= 0.7


def test_the_heatmap_of_an_object_lies_on_it(
    encoder: Encoder, sample_images: dict[str, Image.Image]
) -> None:
    detector = GroundingDetector(encoder, heatmaps=True)
    # Boxes marked by hand on the full-size photos: (left, top, right, bottom).
    cases = [
        (
            "motorcycle_left",
            "A red motorcycle parked in a garage.",
            "motorcycle",
            (90, 60, 650, 430),
        ),
        ("coffee", "A cup of espresso on a saucer.", "cup", (60, 0, 460, 340)),
        ("camera", "A tripod stands on the grass.", "tripod", (180, 140, 400, 512)),
    ]
    for photo, text, word, (left, top, right, bottom) in cases:
        image = sample_images[photo] if photo in sample_images else sample_image(photo)
        scores = detector.score(image, "", text)
        index = next(i for i, t in enumerate(scores.tokens) if t.text == word)
        heatmap = scores.heatmaps[index]
        assert heatmap.shape == (image.height, image.width)
        assert heatmap.dtype == np.float32
        assert float(heatmap.min()) >= 0.0
        assert float(heatmap.max()) <= 1.0
        inside = float(heatmap[top:bottom, left:right].sum()) / float(heatmap.sum())
        area = (right - left) * (bottom - top) / (image.width * image.height)
        print(f"{photo}: {inside:.0%} of the {word!r} heatmap in a box of {area:.0%} of the photo")
        assert inside > 0.5
        assert inside > area


def test_words_the_encoder_cannot_judge_are_reported_unchecked(
    detector: GroundingDetector, sample_images: dict[str, Image.Image]
) -> None:
    text = "A red cat sits to the left of two small cups."
    scores = detector.score(sample_images["chelsea"], "", text)
    by_word = {t.text: t for t in scores.tokens}
    for word in ("red", "left", "two", "small", "sits", "."):
        assert not by_word[word].checked
        assert by_word[word].p_good is None
        assert not by_word[word].flagged()
    assert by_word["cat"].checked
    assert by_word["cups"].checked
    assert by_word["cat"].p_good > by_word["cups"].p_good  # type: ignore[operator]
    data = scores.as_json()
    assert [t["text"] for t in data["tokens"]][:3] == ["A", "red", "cat"]  # type: ignore[index]
    assert all(text[t.start : t.end] == t.text for t in scores.tokens)


def test_bad_input_is_one_sentence_each(
    detector: GroundingDetector, sample_images: dict[str, Image.Image], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(TldrInputError) as err:
        open_image(broken)
    assert str(err.value) == f"{broken} is not an image this app can read."
    with pytest.raises(TldrInputError, match=r"^The text is empty: .*\.$"):
        detector.score(sample_images["chelsea"], "", "   ")
    foreign = detector.score(sample_images["chelsea"], "", "Кошка сидит на диване.")
    assert not any(t.checked for t in foreign.tokens)
    assert len(foreign.tokens) == 5
    assert len(foreign.warnings) == 1
    assert foreign.warnings[0].count(". ") == 0
    long_text = "A cat sleeps. " + "and " * 10_000
    scores = detector.score(sample_images["chelsea"], "", long_text)
    assert len(scores.tokens) == 10_004  # nothing lost: the rest is reported, unchecked
    assert scores.tokens[1].checked
    assert not any(t.checked for t in scores.tokens[MAX_WORDS:])
    assert scores.warnings == (
        "The text has 10004 words; only the first 512 were checked and the rest is reported "
        "as not checked.",
    )


def test_the_shipped_calibration_belongs_to_the_embedded_encoder(encoder: Encoder) -> None:
    calibration = load_calibration(encoder.id)
    assert calibration.fitted
    assert calibration.slope > 0  # a larger margin is more likely good
    assert not load_calibration("some-other-encoder").fitted


# -- the CLI ---------------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from visuallens_app.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_perturb_score_and_eval(
    library_dir: Path,
    tmp_path: Path,
    sample_images: dict[str, Image.Image],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample_images["chelsea"].save(tmp_path / "cat.jpg")
    captions = tmp_path / "captions.jsonl"
    captions.write_text(
        json.dumps({"id": "c1", "image": "cat.jpg", "caption": "A cat sits on a red blanket."})
        + "\n{oops\n",
        encoding="utf-8",
    )
    out = tmp_path / "labelled.jsonl"
    code, stdout, stderr = _cli(
        capsys, "tldr", "perturb", str(captions), "-o", str(out), "--categories", "object",
        "attribute", "--per-caption", "2", "--json",
    )  # fmt: skip
    assert code == 0
    summary = json.loads(stdout)
    assert summary["written"] == {"object": 2, "attribute": 2}
    assert stderr.strip().splitlines() == [
        f"visuallens: {captions}: line 2: not valid JSON (Expecting property name enclosed in "
        "double quotes)"
    ]
    common = ["--encoder", "embedded", "--device", "cpu"]
    heat = tmp_path / "heat"
    code, stdout, _ = _cli(
        capsys, "tldr", "score", str(tmp_path / "cat.jpg"), "A dog on a sofa.", "--json",
        "--heatmaps", str(heat), *common,
    )  # fmt: skip
    assert code == 0
    data = json.loads(stdout)
    assert [t["text"] for t in data["tokens"]] == ["A", "dog", "on", "a", "sofa", "."]
    assert set(data["tokens"][1]) == {"text", "start", "end", "p_good", "checked", "flagged"}
    assert data["tokens"][1]["flagged"] is True
    assert len(list(heat.glob("*.png"))) == 2
    code, stdout, _ = _cli(capsys, "tldr", "eval", str(out), "--json", *common)
    assert code == 0
    report = json.loads(stdout)
    assert report["overall"]["responses"] == 5
    assert set(report["per_category"]) == {"original", "object", "attribute"}
    assert report["per_category"]["attribute"]["bad_checked_share"] == 0.0  # colours: unchecked


def test_cli_errors_are_one_sentence(
    library_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jpg"
    code, _, err = _cli(capsys, "tldr", "score", str(missing), "A cat.")
    assert code == 1
    assert err == f"visuallens: There is no image at {missing}.\n"
    folder = tmp_path / "model"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code, _, err = _cli(
        capsys, "tldr", "score", str(tmp_path / "x.png"), "A cat.", "--detector", str(folder)
    )
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("visuallens: ")
