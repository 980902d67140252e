"""Recommendations on real photos that must not be swayed by a hub image or a photographed page."""

from __future__ import annotations

import numpy as np
import pytest
from samples import hub_image, photographed_page, sample_image

from visuallens_app.lens.catalog import Catalog, load_default_catalog
from visuallens_app.lens.history import History
from visuallens_app.lens.pipeline import candidates_for, default_vocabulary, recommend
from visuallens_app.models.embedded import EmbeddedEncoder

#: A dozen everyday-looking sample photos (scikit-image's wheel): a cat, coffee, a person, a
#: rocket, a motorcycle, the night sky, a horse, a photographer, coins, the moon, a retina, bricks.
TWELVE = (
    "chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "hubble_deep_field",
    "horse", "camera", "coins", "moon", "retina", "brick",
)  # fmt: skip


@pytest.fixture(scope="module")
def library(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[EmbeddedEncoder, list[str], np.ndarray, np.ndarray, np.ndarray]:
    encoder = EmbeddedEncoder(cache_dir=tmp_path_factory.mktemp("encoder-cache"))
    images = [sample_image(n) for n in TWELVE] + [hub_image(), photographed_page()]
    vectors, signals = encoder.encode_images_with_signals(images)
    names = [*TWELVE, "hub", "page"]
    return encoder, names, vectors, signals.confidence, signals.document


def _tops(library, rows: list[int], catalog: Catalog) -> dict[str, tuple[str, set[str]]]:
    """Per category: the top recommendation and the photos shown as evidence in the top 3."""
    encoder, names, vectors, confidence, document = library
    history = History.from_arrays(
        vectors[rows],
        paths=[f"{names[i]}.jpg" for i in rows],
        confidence=confidence[rows],
        document=document[rows],
    )
    vocabulary = default_vocabulary()
    out = {}
    for category in catalog.categories():
        result = recommend(
            history,
            candidates_for(catalog, category),
            category,
            encoder,
            vocabulary=vocabulary,
            k=3,
        )
        shown = {e.path.stem for r in result.recommendations for e in r.evidence}
        out[category] = (result.recommendations[0].item.id, shown)
    return out


@pytest.mark.parametrize("extra", ["hub", "page"])
def test_a_hub_or_a_page_changes_no_top_recommendation_and_is_never_evidence(
    library, extra: str
) -> None:
    catalog = load_default_catalog()
    names = library[1]
    base = _tops(library, list(range(len(TWELVE))), catalog)
    with_extra = _tops(library, [*range(len(TWELVE)), names.index(extra)], catalog)
    changed = [c for c in base if with_extra[c][0] != base[c][0]]
    assert changed == [], changed
    assert [c for c, (_, shown) in with_extra.items() if extra in shown] == []
    # The recommendations still rest on the photos: the cat for pets, the cup for coffee.
    assert "chelsea" in with_extra["pet supplies"][1]
    assert "coffee" in with_extra["coffee shop"][1]
