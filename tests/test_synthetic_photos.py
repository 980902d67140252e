"""The probability-photo benchmark: the real classifier bottleneck, and the gate it holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from visuallens_app.jobs import run_to_end
from visuallens_app.lens.evaluate import evaluate
from visuallens_app.lens.synthetic_photos import (
    THEMES,
    document_photo,
    hub_photo,
    make_photo_benchmark,
    subject_photo,
)
from visuallens_app.models.embedded import EmbeddedEncoder, imagenet_class_names


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedEncoder:
    return EmbeddedEncoder(cache_dir=tmp_path_factory.mktemp("encoder-cache"))


def test_theme_classes_are_what_their_names_say() -> None:
    names = imagenet_class_names()  # the "extended" wording: "tabby cat", "puffer"...
    expect = {
        "cats": "cat",
        "fish": "fish|puffer",
        "space": "shuttle|missile|projectile|planetarium|telescope",
        "maritime": "schooner|pirate|container|wreck|yawl|beacon",
        "espresso": "espresso|mug|coffee",
        "pizza": "pizza",
    }
    for themes in THEMES.values():
        for theme in themes:
            if theme.name in expect:
                for c in theme.classes:
                    assert re.search(expect[theme.name], names[c], re.I), (theme.name, names[c])


def test_generated_photos_look_like_the_classifier_answers(embedded: EmbeddedEncoder) -> None:
    rng = np.random.default_rng(0)
    cats = THEMES["pet store"][0].classes
    clear = np.stack([subject_photo(rng, cats) for _ in range(20)])
    blurry = np.stack([subject_photo(rng, cats, blurry=True) for _ in range(20)])
    hubs = np.stack([hub_photo(rng) for _ in range(20)])
    pages = np.stack([document_photo(rng) for _ in range(20)])
    _, clear_signals = embedded.vectors_from_probabilities(clear)
    _, blurry_signals = embedded.vectors_from_probabilities(blurry)
    _, hub_signals = embedded.vectors_from_probabilities(hubs)
    _, page_signals = embedded.vectors_from_probabilities(pages)
    assert clear_signals.confidence.min() >= 0.35
    assert blurry_signals.confidence.max() <= 0.16
    assert hub_signals.confidence.max() < 0.1
    assert page_signals.document.mean() > 0.25
    assert clear_signals.document.max() < 0.05


def test_the_full_lens_beats_the_naive_profile_and_no_retrieval(
    embedded: EmbeddedEncoder,
) -> None:
    # The gate of issue 10: on histories of 10-300 probability photos, with hubs, blurry
    # photos and documents, the full pipeline with its shipped weights is at least as good as
    # the plain mean of all photos and as the paper's no-retrieval baseline.
    examples = make_photo_benchmark(embedded, 60, seed=3)
    sizes = [len(e.history_vectors) for e in examples if e.history_vectors is not None]
    assert min(sizes) >= 10
    assert max(sizes) <= 300
    report = run_to_end(
        evaluate(examples, embedded, methods=["naive", "no_retrieval", "full"], bootstrap=0)
    )
    full = report.metric("full").mean
    assert full >= report.metric("naive").mean
    assert full >= report.metric("no_retrieval").mean
    assert full > 0.6  # far above random (about 0.45 with a third of the candidates right)


def test_fit_weights_writes_the_file_recommend_reads(
    embedded: EmbeddedEncoder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from visuallens_app.cli import main
    from visuallens_app.lens.matching import read_match_weights

    out = tmp_path / "weights.json"
    code = main(
        [
            "eval",
            "--synthetic",
            "12",
            "--photos",
            "--encoder",
            "embedded",
            "--fit-weights",
            "--write",
            str(out),
            "--methods",
            "naive",
            "full",
            "--bootstrap",
            "50",
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    weights = read_match_weights(out)
    assert data["fitted_weights"]["profile"] == weights.profile
    assert "--fit-weights" in json.loads(out.read_text())["command"]
    assert data["examples"] == 6  # the held-out half
