"""The VisualLens recommendation engine: every stage on constructed cases, then end to end.

Stage tests use a deterministic word-vector fake encoder, so a case can be built to the point
(photos "about" latte art, a candidate that is too). The filter, the aspect words and the end to
end test use the real embedded encoder on scikit-image photos.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont, ImageOps

from visuallens_app.errors import CatalogError, NotEnoughHistoryError
from visuallens_app.lens.aspects import AspectSpace, library_aspects
from visuallens_app.lens.catalog import Catalog, CatalogItem
from visuallens_app.lens.history import (
    ITEM_VECTORS,
    PHOTO_ASPECTS,
    TEXT_VECTORS,
    History,
    ensure_lens_tables,
)
from visuallens_app.lens.matching import (
    ItemVectors,
    MatchExample,
    embed_items,
    fit_match_weights,
)
from visuallens_app.lens.pipeline import LensConfig, Recommender, candidates_for, recommend
from visuallens_app.lens.refine import (
    AspectExample,
    aspect_strength,
    fit_aspect_weights,
    refine_retrieval,
)
from visuallens_app.lens.retrieval import (
    category_prototype,
    collapse_near_duplicates,
    filter_non_preference,
    retrieval_size,
    retrieve,
)

_STOP = {"a", "an", "the", "of", "photo", "at", "you", "would", "see", "something", "inside", "and"}


class WordEncoder:
    """Deterministic fake: each word is a fixed random direction, a text the sum of its words."""

    dim = 256
    input_size = 32

    @property
    def id(self) -> str:
        return "fake:words-v1"

    def _word(self, word: str) -> NDArray[np.float32]:
        seed = int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16)
        return np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = [w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP]
            for w in words or ["empty"]:
                out[i] += self._word(w)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        raise AssertionError("stage tests never encode images")


def item(name: str, description: str, category: str = "coffee shop") -> CatalogItem:
    return CatalogItem(
        id=f"{category}/{name}", name=name, category=category, description=description
    )


def photos(encoder: WordEncoder, texts: Sequence[str], noise: float = 0.15) -> History:
    """A history whose photo i looks like text i (plus a little per-photo noise)."""
    rng = np.random.default_rng(0)
    vectors = encoder.encode_texts(texts) + noise * rng.normal(size=(len(texts), encoder.dim)) / 8
    return History.from_arrays(vectors, paths=[f"/photos/{i}.jpg" for i in range(len(texts))])


VOCAB = ["latte", "pastry", "espresso", "cat", "rocket", "beach", "neon", "brick", "wine", "tea"]

CAFES = [
    item("Latte lab", "latte art and flaky pastry on a brick counter"),
    item("Tea room", "tea pots and scones"),
    item("Wine bar", "wine and cheese under neon"),
    item("Espresso stand", "espresso shots standing up"),
]

LIBRARY = (
    ["latte pastry coffee"] * 6
    + ["cat sofa"] * 6
    + ["rocket launch"] * 6
    + ["beach sunset"] * 6
    + ["neon street"] * 4
)


@pytest.fixture(scope="module")
def fake() -> WordEncoder:
    return WordEncoder()


# -- history -----------------------------------------------------------------------------------


def test_history_from_arrays_normalises_and_subsets() -> None:
    h = History.from_arrays(np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    assert len(h) == 3
    np.testing.assert_allclose(np.linalg.norm(h.vectors, axis=1), 1.0, rtol=1e-6)
    sub = h.subset([2, 0])
    assert list(sub.ids) == [2, 0]
    assert sub.paths == (h.paths[2], h.paths[0])


# -- stage 1: prototype, filter, duplicates, retrieval -------------------------------------------


def test_prototype_is_mean_item_image_when_items_have_images(fake: WordEncoder) -> None:
    text = fake.encode_texts(["a", "b", "c"])
    image = fake.encode_texts(["latte", "espresso", "zzz"])
    vectors = ItemVectors(("a", "b", "c"), text, image, np.array([True, True, False]))
    proto = category_prototype(CAFES[:3], fake, vectors)
    expected = image[:2].mean(axis=0)
    np.testing.assert_allclose(proto, expected / np.linalg.norm(expected), rtol=1e-5)


def test_prototype_without_images_follows_category_prompts_and_items(fake: WordEncoder) -> None:
    proto = category_prototype(CAFES, fake, category="coffee shop")
    coffee = fake.encode_texts(["coffee shop"])[0]
    rocket = fake.encode_texts(["rocket launch"])[0]
    assert proto @ coffee > 0.5
    assert proto @ coffee > proto @ rocket + 0.3


def document_image() -> Image.Image:
    page = Image.new("RGB", (800, 1000), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=28)
    for line in range(25):
        draw.text(
            (40, 30 + 38 * line),
            f"Invoice line {line}: item .... {line * 3.5:.2f} EUR",
            fill="black",
            font=font,
        )
    return page


def test_filter_drops_a_rendered_document_and_keeps_photos(
    embedded: object, sample_images: dict[str, Image.Image]
) -> None:
    from visuallens_app.models.base import Encoder

    assert isinstance(embedded, Encoder)
    images = [*sample_images.values(), document_image()]
    history = History.from_arrays(embedded.encode_images(images))
    keep = filter_non_preference(history, embedded)
    assert keep.tolist() == [True] * len(sample_images) + [False]
    # A looser threshold keeps everything: the knob works in the expected direction.
    assert filter_non_preference(history, embedded, threshold=1.0).all()


def test_collapse_keeps_one_photo_per_burst_and_honours_the_time_window() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3, 16))
    vectors = np.stack([base[0], base[0] + 0.01, base[0] + 0.02, base[1], base[2], base[1] + 0.01])
    times = [
        "2024-05-01T10:00:00",
        "2024-05-01T10:00:01",
        "2024-05-01T10:00:02",
        "2024-05-01T11:00:00",
        None,
        "2024-06-01T11:00:00",
    ]
    h = History.from_arrays(vectors, taken_at=times)
    assert collapse_near_duplicates(h, 0.95).tolist() == [0, 3, 4]
    # Ranked order decides the representative: the best-ranked shot of a burst survives.
    assert collapse_near_duplicates(h, 0.95, order=[2, 1, 0, 5, 3, 4]).tolist() == [2, 5, 4]
    # Within 10 s only: the same view a month later is a new photo, not a burst.
    assert collapse_near_duplicates(h, 0.95, time_window=10.0).tolist() == [0, 3, 4, 5]


def test_retrieval_picks_the_category_photos_and_skips_filtered(fake: WordEncoder) -> None:
    history = photos(fake, LIBRARY)
    proto = category_prototype(CAFES, fake, category="coffee shop")
    top = retrieve(history, proto, w=6, duplicate_threshold=None)
    assert sorted(top.tolist()) == list(range(6))
    keep = np.ones(len(history), dtype=bool)
    keep[0] = False
    assert 0 not in retrieve(history, proto, w=6, keep=keep, duplicate_threshold=None).tolist()
    # Exact copies of one photo take one slot, not six.
    copies = History.from_arrays(np.repeat(history.vectors[:1], 6, axis=0))
    assert len(retrieve(copies, proto, w=6)) == 1


def test_retrieval_size_keeps_every_clearly_relevant_photo() -> None:
    # 150 photos about the category, 50 not: a fixed w = 64 would drop most relevant ones.
    rng = np.random.default_rng(0)
    scores = np.concatenate([0.6 + 0.05 * rng.normal(size=150), 0.1 + 0.05 * rng.normal(size=50)])
    assert retrieval_size(scores, w=64) == 150
    assert retrieval_size(scores, w=64, w_max=100) == 100
    # Never fewer than the paper's w, and never more photos than there are.
    assert retrieval_size(scores[140:], w=64) == 60
    assert retrieval_size(np.r_[scores[:5], scores[150:]], w=20) == 20


# -- aspects and refinement ----------------------------------------------------------------------


def test_library_aspects_are_cached_in_the_store(fake: WordEncoder, tmp_path: Path) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "lens.sqlite")
    ensure_lens_tables(db)
    ensure_lens_tables(db)  # idempotent
    history = photos(fake, LIBRARY)
    space = AspectSpace.build(VOCAB, fake, history, db=db)
    first = library_aspects(history, space, k=3, db=db)
    assert db[PHOTO_ASPECTS].count == len(history)
    assert db[TEXT_VECTORS].count == len(VOCAB)
    again = library_aspects(history, space, k=3, db=db)
    np.testing.assert_array_equal(first.top_terms, again.top_terms)
    assert first.for_photo(0)[0][0] in {"latte", "pastry"}
    assert first.for_photo(6)[0][0] == "cat"


def test_profile_keeps_the_favourite_when_the_category_fills_the_library() -> None:
    """Lift alone scores every café word the same when nearly every photo is a café photo."""
    # Retrieved: 90 café photos, "latte" on 40 of them, "scone" and "bagel" on 10 each; the
    # other 10 photos of the library are a dog. Each photo has one aspect of the 10.
    retrieved = np.array([40, 10, 10, 0, 0, 0, 0, 0, 0, 30], dtype=np.float64)
    rest = np.array([0, 0, 0, 10, 0, 0, 0, 0, 0, 0], dtype=np.float64)
    weights = aspect_strength(retrieved, rest, 90.0, 10.0, chance=0.1)
    assert int(np.argmax(weights)) == 0
    assert weights[0] > 2 * weights[1]
    assert weights[3] == 0.0  # the dog is not in the café photos
    assert weights.sum() == pytest.approx(1.0)
    # Nothing left out (no retrieval): lift says nothing, frequency above chance decides.
    alone = aspect_strength(retrieved, np.zeros(10), 90.0, 0.0, chance=0.1)
    assert int(np.argmax(alone)) == 0
    assert alone[1] == alone[2] > 0


def test_refinement_converges_and_is_capped(fake: WordEncoder) -> None:
    history = photos(fake, LIBRARY, noise=0.6)
    space = AspectSpace.build(VOCAB, fake, history)
    aspects = library_aspects(history, space, k=3)
    proto = category_prototype(CAFES, fake, category="coffee shop")
    start = retrieve(history, proto, w=8, duplicate_threshold=None)
    done = refine_retrieval(history, aspects, proto, start, w=8, rounds=10)
    assert done.converged
    assert 1 <= done.rounds < 10
    assert {int(i) for i in done.retrieved[:6]} == set(range(6))
    weights = dict(zip(space.terms, done.weights.tolist(), strict=True))
    assert set(sorted(weights, key=weights.__getitem__, reverse=True)[:2]) == {"latte", "pastry"}
    # The two off-category photos among the 8 still lend their words, but barely.
    assert weights["rocket"] < 0.05 * weights["latte"]
    capped = refine_retrieval(history, aspects, proto, start[::-1][:2], w=8, rounds=1)
    assert capped.rounds == 1


# -- matching, explanations, errors ---------------------------------------------------------------


def test_matching_ranks_the_planted_candidate_first_and_explains_it(fake: WordEncoder) -> None:
    history = photos(fake, LIBRARY)
    result = recommend(
        history,
        CAFES,
        "coffee shop",
        fake,
        vocabulary=VOCAB,
        config=LensConfig(w=8, use_filter=False, duplicate_threshold=None),
        k=4,
    )
    top = result.recommendations[0]
    assert top.item.name == "Latte lab"
    assert {e.path.name for e in top.evidence} <= {f"{i}.jpg" for i in range(6)}
    assert top.evidence
    assert {t for t, _ in top.aspects} & {"latte", "pastry"}
    # The café words lead the profile (in this tiny fake library the first four are nearly tied).
    assert {"latte", "pastry"} <= {t for t, _ in result.profile_aspects[:4]}
    assert set(result.retrieved[:6]) == set(range(6))
    payload = top.as_json()
    assert payload["id"] == "coffee shop/Latte lab"
    assert isinstance(payload["evidence"], list)
    assert payload["evidence"][0].startswith("/photos/")


def test_ablation_switches(fake: WordEncoder) -> None:
    history = photos(fake, LIBRARY)
    only = recommend(
        history,
        CAFES,
        "coffee shop",
        fake,
        vocabulary=VOCAB,
        config=LensConfig.retrieval_only(w=8, use_filter=False),
    )
    assert only.profile_aspects == ()
    assert all(r.aspects == () for r in only.recommendations)
    assert only.recommendations[0].item.name == "Latte lab"
    whole = recommend(
        history,
        CAFES,
        "coffee shop",
        fake,
        vocabulary=VOCAB,
        config=LensConfig.no_retrieval(duplicate_threshold=None, use_filter=False),
    )
    assert len(whole.retrieved) == len(history)


def test_too_little_history_says_what_to_do(fake: WordEncoder) -> None:
    # The fake encoder's random prompt directions would make the junk filter arbitrary.
    for n in (0, 2):
        history = History.from_arrays(np.ones((n, 4)) if n else np.zeros((0, 4)))
        with pytest.raises(NotEnoughHistoryError, match="visuallens index"):
            recommend(history, CAFES, "coffee shop", fake, vocabulary=VOCAB)


def test_counts_in_the_lens_sentences_read_as_one_or_many(fake: WordEncoder) -> None:
    """Issue 11 item 11: "only 1 photo(s)", "after 1 round(s)" read as a form letter."""
    with pytest.raises(NotEnoughHistoryError, match=r"has only 1 photo indexed"):
        recommend(
            History.from_arrays(np.ones((1, 4))), CAFES, "coffee shop", fake, vocabulary=VOCAB
        )
    result = recommend(photos(fake, LIBRARY), CAFES, "coffee shop", fake, vocabulary=VOCAB)
    assert result.notes
    assert not [note for note in result.notes if "(s)" in note]


def test_unknown_category_names_close_matches() -> None:
    catalog = Catalog("test", Path("/c"), (*CAFES, item("Louvre", "art", "museum")))
    with pytest.raises(CatalogError, match="'coffee shop'"):
        candidates_for(catalog, "cofee shop")
    with pytest.raises(CatalogError, match="Known categories: coffee shop, museum"):
        candidates_for(catalog, "zzz")
    assert len(candidates_for(catalog, "Coffee Shop")) == 4


def test_fitting_weights_prefers_the_predictive_signal() -> None:
    rng = np.random.default_rng(3)
    examples = []
    for _ in range(40):
        comps = rng.normal(size=(3, 10)).astype(np.float32)
        positives = np.zeros(10, dtype=bool)
        positives[int(np.argmax(comps[2]))] = True  # only the evidence component is predictive
        examples.append(MatchExample(comps, positives))
    weights, mrr = fit_match_weights(examples)
    assert weights.evidence > 0
    assert weights.evidence >= 2 * max(weights.profile, weights.aspects)
    assert mrr == 1.0

    terms = ["useful", "noise"]
    aspect_examples = []
    for _ in range(30):
        cands = rng.normal(size=(8, 2)).astype(np.float32)
        positives = np.zeros(8, dtype=bool)
        positives[int(np.argmax(cands[:, 0]))] = True
        aspect_examples.append(AspectExample(np.array([0.5, 0.5], np.float32), cands, positives))
    learned = fit_aspect_weights(aspect_examples, terms)
    assert learned["useful"] > 1.0 > learned["noise"]


def test_item_vectors_are_cached_in_the_store(fake: WordEncoder, tmp_path: Path) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "lens.sqlite")
    first = embed_items(CAFES, fake, db=db)
    assert db[ITEM_VECTORS].count == len(CAFES)
    again = embed_items(CAFES, fake, db=db)
    np.testing.assert_array_equal(first.text, again.text)
    changed = [item("Latte lab", "now also matcha"), *CAFES[1:]]
    embed_items(changed, fake, db=db)
    assert db[ITEM_VECTORS].count == len(CAFES) + 1


def test_a_cancelled_catalog_read_keeps_its_batches_and_the_next_reads_only_the_rest(
    fake: WordEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite_utils

    from visuallens_app.errors import Cancelled
    from visuallens_app.jobs import CancelToken
    from visuallens_app.lens import matching

    monkeypatch.setattr(matching, "ITEM_BATCH", 2)
    items = [item(f"Cafe {i}", f"espresso and cake, number {i}") for i in range(9)]
    db = sqlite_utils.Database(tmp_path / "lens.sqlite")
    cancel = CancelToken()
    job = matching.embed_items_job(items, fake, db=db, cancel=cancel)
    steps = [next(job), next(job), next(job)]  # the count, then two batches
    assert [p.done for p in steps] == [0, 2, 4]
    assert steps[0].total == 9
    assert steps[0].unit == "descriptions"
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(job)
    assert db[ITEM_VECTORS].count == 4  # what was read before the cancel is kept

    rest = list(matching.embed_items_job(items, fake, db=db))
    assert rest[0].total == 5  # only what the cancelled run had not read
    resumed = matching.embed_items(items, fake, db=db)
    np.testing.assert_allclose(resumed.text, embed_items(items, fake).text, atol=1e-6)


# -- real encoder ------------------------------------------------------------------------------


def test_aspect_words_describe_real_photos(
    embedded: object, sample_images: dict[str, Image.Image]
) -> None:
    from visuallens_app.lens.vocabulary import AspectVocabulary
    from visuallens_app.models.base import Encoder

    assert isinstance(embedded, Encoder)
    names = list(sample_images)
    history = History.from_arrays(embedded.encode_images(list(sample_images.values())))
    space = AspectSpace.build(AspectVocabulary.load(), embedded, history)
    aspects = library_aspects(history, space, k=5)
    words = {n: " ".join(t for t, _ in aspects.for_photo(i)) for i, n in enumerate(names)}
    assert "cat" in words["chelsea"]
    assert "espresso" in words["coffee"] or "coffee" in words["coffee"]


@pytest.fixture(scope="module")
def indexed_library(
    embedded: object,
    sample_images: dict[str, Image.Image],
    sample_files: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The sample photos, transformed copies (same names, under copies/) and a scanned page.

    Module-scoped: indexing is the slow part, and the tests below only read the library.
    """
    SAMPLES = sample_files  # noqa: N806 - same name as the conftest table it is

    from visuallens_app.jobs import run_to_end
    from visuallens_app.library.indexer import index_folders
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.base import Encoder

    assert isinstance(embedded, Encoder)
    root = tmp_path_factory.mktemp("lens-e2e")
    photo_dir = root / "photos"
    copies = photo_dir / "copies"
    copies.mkdir(parents=True)
    for name, filename in SAMPLES.items():
        image = sample_images[name]
        image.save(photo_dir / filename, quality=90)
        small = image.resize((image.width // 2, image.height // 2))
        ImageOps.mirror(small).save(copies / filename, quality=75)
    document_image().save(photo_dir / "scan.png")
    library = root / "library"
    with PhotoStore(library) as store:
        report = run_to_end(index_folders(store, embedded, [photo_dir]))
    assert report.indexed == 2 * len(SAMPLES) + 1
    return library


def test_recommend_coffee_shop_end_to_end(embedded: object, indexed_library: Path) -> None:
    from visuallens_app.lens.catalog import load_default_catalog
    from visuallens_app.library.store import PhotoStore
    from visuallens_app.models.base import Encoder

    assert isinstance(embedded, Encoder)
    catalog = load_default_catalog()
    with PhotoStore(indexed_library) as store:
        recommender = Recommender(store, embedded)
        result = recommender.recommend("coffee shop", catalog, k=5)
        top = result.recommendations[0]
        assert top.item.category == "coffee shop"
        assert "espresso" in top.item.text().lower()
        assert top.evidence[0].path.name == "coffee.jpg"
        # The scanned page never makes it into the profile; a copy the classifier reads
        # exactly as its original (the mirrored cat) does not take two slots.
        names = [recommender.history().paths[i].name for i in result.retrieved]
        assert "scan.png" not in names
        assert names.count("chelsea.jpg") == 1
        assert any("espresso" in t or "coffee" in t for t, _ in result.profile_aspects)

        pets = recommender.recommend("pet supplies", catalog, k=3)
        assert "cat" in pets.recommendations[0].item.text().lower()
        assert pets.recommendations[0].evidence[0].path.name == "chelsea.jpg"


# -- the CLI -----------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from visuallens_app.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_recommend_json_and_explain(
    embedded: object, indexed_library: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--library", str(indexed_library), "--encoder", "embedded", "--device", "cpu"]
    code, out, _ = run_cli(
        ["recommend", "--category", "coffee shop", "-k", "3", "--json", *common], capsys
    )
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 3
    assert set(rows[0]) == {"id", "name", "score", "evidence", "aspects", "relates"}
    assert Path(rows[0]["evidence"][0]).name == "coffee.jpg"

    code, out, _ = run_cli(
        ["recommend", "--category", "coffee shop", "-k", "2", "--explain", *common], capsys
    )
    assert code == 0
    assert out.startswith(" 1. ")
    assert "coffee.jpg" in out
    assert "aspects " in out

    code, out, err = run_cli(["recommend", "--category", "cofee shop", *common], capsys)
    assert code == 1
    assert "Did you mean 'coffee shop'?" in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("visuallens: The catalog has no category")

    code, out, _ = run_cli(
        ["aspects", str(indexed_library.parent / "photos" / "chelsea.jpg"), "-k", "5", *common],
        capsys,
    )
    assert code == 0
    assert "cat" in out


def test_cli_catalog_list_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["catalog", "list"], capsys)
    assert code == 0
    assert re.search(r"^coffee shop\s+\d+$", out, re.MULTILINE)

    from visuallens_app.lens.catalog import default_catalog_dir

    code, out, _ = run_cli(["catalog", "validate", str(default_catalog_dir())], capsys)
    assert code == 0
    assert "0 problem(s)" in out

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "items.jsonl").write_text(
        '{"name": "Good", "category": "bar", "description": "ok"}\nnot json\n{"category": "bar"}\n',
        encoding="utf-8",
    )
    code, out, _ = run_cli(["catalog", "validate", str(bad)], capsys)
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].startswith("line 2")
    assert lines[1].startswith("line 3")
    assert "2 problem(s)" in lines[-1]

    code, out, _ = run_cli(["catalog", "validate", str(tmp_path / "missing")], capsys)
    assert code == 1
    assert out.strip().endswith("does not exist.")


def test_explanations_leave_out_evidence_far_weaker_than_the_best() -> None:
    from visuallens_app.lens.explain import matched_aspects, supporting_photos
    from visuallens_app.lens.history import History

    history = History.from_arrays(
        np.eye(3, dtype=np.float32),
        ids=np.array([10, 11, 12], dtype=np.int64),
        paths=[Path("coffee.jpg"), Path("moto.jpg"), Path("latte.jpg")],
    )
    support = np.array([[0.52], [0.006], [0.3]], dtype=np.float32)
    evidence = supporting_photos(history, np.array([0, 1, 2]), support, column=0, k=3)
    assert [e.path.name for e in evidence] == ["coffee.jpg", "latte.jpg"]
    words = matched_aspects(
        ["espresso", "tennis racket", "latte art"], np.array([[1.1, 0.05, 0.8]], np.float32), 0
    )
    assert [w for w, _ in words] == ["espresso", "latte art"]


def test_bulk_item_words_read_each_item_as_it_reads_alone() -> None:
    from visuallens_app.lens.matching import item_words, items_words

    texts = [
        "Wood-fired oven, 'quoted' words -- and a trailing-",
        "Café ﬁne STRASSE: rock'n'roll ''twice'' - - x-'y",
        "",
        "line\nbreak in a description",
    ]
    items = [
        CatalogItem(id=str(i), name="N", category="c", description=t, tags=("Tag-",))
        for i, t in enumerate(texts)
    ]
    bulk = items_words(items)
    assert [frozenset(words) for words in bulk] == [item_words(it) for it in items]
    assert "wood-fired" in next(iter(bulk))
    assert "fine" in list(bulk)[1]


def test_aspect_shares_of_the_listed_items_add_up_to_their_aspect_scores() -> None:
    from visuallens_app.lens.history import standardise
    from visuallens_app.lens.matching import items_words, match_components

    rng = np.random.default_rng(0)
    terms = ["latte art", "espresso", "books", "garden", "quiet"]
    texts = ["latte art and espresso", "a book cafe, quiet", "garden seats", "espresso bar"] * 5
    items = [
        CatalogItem(id=str(i), name="x", category="c", description=t) for i, t in enumerate(texts)
    ]
    vectors = rng.normal(size=(len(items), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    iv = ItemVectors(
        tuple(it.id for it in items), vectors, np.zeros_like(vectors), np.zeros(len(items), bool)
    )
    weights = np.array([0.5, 0.3, 0.0, 0.2, 0.1], dtype=np.float32)
    parts = match_components(
        vectors[:3],
        iv,
        aspect_weights=weights,
        term_vectors=rng.normal(size=(5, 16)).astype(np.float32),
        terms=terms,
        item_word_sets=items_words(items),
    )
    assert parts.term_contributions is not None
    shares = parts.term_contributions.rows(np.arange(len(items)))
    assert shares.shape == (len(items), len(terms))
    assert not shares[:, 2].any()
    np.testing.assert_allclose(standardise(shares.sum(axis=1)), parts.aspects, atol=1e-5)
    # The literal part: "latte art" is spelled by the first text and not by the second.
    assert shares[0, 0] > shares[1, 0]
    np.testing.assert_allclose(parts.term_contributions.rows([3, 0]), shares[[3, 0]], atol=1e-6)


def test_relates_to_any_reads_every_candidate_in_blocks_as_the_full_matrix_does() -> None:
    """The 'nothing relates' test over 100,000 candidates keeps no (photos x items) matrix;
    it must still find the one photo-item pair that reaches the floor, in any block."""
    from visuallens_app.lens.explain import photo_relatedness, relates_to_any

    rng = np.random.default_rng(3)

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal((n, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    photos, items, terms = unit(6), unit(50), unit(40)
    best = photo_relatedness(photos, items, terms).max(axis=1)
    top, row = float(best.max()), int(best.argmax())
    second = float(np.sort(best)[-2])
    for block in (7, 50, 8192):
        assert relates_to_any(photos, items, terms, top - 1e-4, block=block)
        assert not relates_to_any(photos, items, terms, top + 1e-4, block=block)
    others = np.ones(6, dtype=bool)
    others[row] = False  # the one photo that reaches the floor cannot be read
    assert not relates_to_any(photos, items, terms, (top + second) / 2, readable=others, block=7)
    assert not relates_to_any(photos, items[:0], terms, -10.0)  # no candidates, no relation
