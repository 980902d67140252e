"""The shipped catalog and aspect vocabulary, and forgiving catalog loading of user files."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from visuallens_app.errors import CatalogError, VisualLensError
from visuallens_app.lens.catalog import (
    CatalogProblem,
    default_catalog_dir,
    load_catalog,
    load_default_catalog,
)
from visuallens_app.lens.vocabulary import AspectVocabulary, default_vocabulary_path

EXPECTED_CATEGORIES = {
    "restaurant",
    "coffee shop",
    "bar",
    "bakery",
    "museum",
    "park",
    "hiking trail",
    "beach",
    "hotel",
    "book",
    "film",
    "pet supplies",
    "sports & outdoors",
    "music venue",
}


def write_jsonl(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def item(**fields: object) -> str:
    return json.dumps(fields)


# --- the shipped catalog ------------------------------------------------------------------------


def test_shipped_catalog_loads_cleanly_and_is_large_and_varied() -> None:
    loaded = load_catalog(default_catalog_dir())
    assert loaded.problems == ()
    items = loaded.catalog.items
    assert len(items) >= 400
    counts = Counter(i.category for i in items)
    assert set(counts) == EXPECTED_CATEGORIES
    assert all(n >= 20 for n in counts.values()), counts
    assert len({i.id for i in items}) == len(items)
    names = Counter((i.category, i.name.casefold()) for i in items)
    assert [key for key, n in names.items() if n > 1] == []


def test_shipped_items_have_specific_descriptions_and_tags() -> None:
    for entry in load_default_catalog().items:
        assert 60 <= len(entry.description) <= 300, entry.id
        assert entry.description.casefold() != entry.name.casefold(), entry.id
        assert 4 <= len(entry.tags) <= 8, entry.id
        assert entry.images == ()  # the shipped catalog is text only
        assert entry.id.startswith(entry.category.replace(" & ", "-").replace(" ", "-") + "/")
        assert entry.text().startswith(entry.name)


def test_shipped_descriptions_are_distinct_within_a_category() -> None:
    catalog = load_default_catalog()
    for category in catalog.categories():
        descriptions = [i.description for i in catalog.in_category(category)]
        assert len(set(descriptions)) == len(descriptions), category


# --- the aspect vocabulary ----------------------------------------------------------------------


def test_shipped_vocabulary_is_large_lowercase_unique_and_grouped() -> None:
    lines = default_vocabulary_path().read_text(encoding="utf-8").splitlines()
    raw_terms = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(raw_terms) == len(set(raw_terms)), "duplicate terms in aspects.txt"
    assert all(t == t.lower() for t in raw_terms)

    vocab = AspectVocabulary.load()
    assert len(vocab) >= 500
    assert list(vocab) == raw_terms
    groups = vocab.by_group()
    assert len(groups) >= 12
    assert "ungrouped" not in groups
    for term in ("dome", "balcony", "neon", "spicy", "latte art", "exposed brick"):
        assert term in vocab
    assert vocab.groups["exposed brick"] == "materials & textures"


def test_vocabulary_index_is_the_row_of_a_term() -> None:
    vocab = AspectVocabulary.load()
    assert vocab.terms[vocab.index("Latte  Art")] == "latte art"
    with pytest.raises(ValueError, match="not in the aspect vocabulary"):
        vocab.index("no such aspect at all")


def test_vocabulary_file_is_normalised_and_forgiving(tmp_path: Path) -> None:
    path = tmp_path / "aspects.txt"
    path.write_text("stray\n# Colours\nRed\n  dark   blue \nred\n\n# shapes\ndome\n")
    vocab = AspectVocabulary.load(path)
    assert vocab.terms == ("stray", "red", "dark blue", "dome")
    assert vocab.by_group() == {
        "ungrouped": ("stray",),
        "colours": ("red", "dark blue"),
        "shapes": ("dome",),
    }


def test_vocabulary_missing_or_empty_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(VisualLensError, match="cannot be read"):
        AspectVocabulary.load(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# only a header\n")
    with pytest.raises(VisualLensError, match="no terms"):
        AspectVocabulary.load(tmp_path / "empty.txt")


# --- loading user catalogs ----------------------------------------------------------------------


def test_jsonl_good_lines_load_and_each_bad_line_is_reported(tmp_path: Path) -> None:
    folder = write_jsonl(
        tmp_path / "cat",
        [
            "# my catalog",  # line 1: comment
            item(id="r/1", name="Pizzeria", category="restaurant", description="Wood oven."),
            "",  # line 3: blank
            "{not json",  # line 4
            item(name="No category"),  # line 5
            item(category="museum"),  # line 6: no name
            item(name="Bad rating", category="bar", rating="five"),  # line 7
            item(id="r/1", name="Twin", category="restaurant"),  # line 8: duplicate id
            item(Title="Dive bar", Type="bar", Stars="4.5", Labels="cheap; neon"),  # line 9
            "[1, 2]",  # line 10: not an object
            item(name="Museum", category="museum", rating=4),  # line 11
        ],
    )
    loaded = load_catalog(folder, name="Mine")
    catalog = loaded.catalog
    assert catalog.name == "Mine"
    assert [i.name for i in catalog.items] == ["Pizzeria", "Dive bar", "Museum"]

    problems = {p.line: p for p in loaded.problems}
    assert sorted(problems) == [4, 5, 6, 7, 8, 10]
    assert len(loaded.problems) == 6  # one problem per bad line
    assert problems[5].field == "category"
    assert problems[6].field == "name"
    assert problems[7].field == "rating"
    assert problems[8].field == "id"
    assert problems[4].field == problems[10].field == ""  # the whole line is unreadable
    assert str(problems[5]) == "line 5, field 'category': missing"
    assert str(problems[4]).startswith("line 4: not valid JSON")

    dive = catalog.items[1]
    assert dive.category == "bar"
    assert dive.rating == 4.5
    assert dive.tags == ("cheap", "neon")
    assert dive.id == "bar/dive-bar"  # derived from category and name
    assert dive.description == "Dive bar: cheap, neon"  # no description: name and tags
    assert catalog.items[2].description == "Museum"


def test_derived_ids_are_unique(tmp_path: Path) -> None:
    folder = write_jsonl(
        tmp_path / "cat",
        [
            item(name="Café Noir", category="Coffee Shop"),
            item(name="Café  noir", category="coffee shop"),
            item(id="coffee-shop/cafe-noir-2", name="Taken", category="coffee shop"),
        ],
    )
    loaded = load_catalog(folder)
    assert loaded.problems == ()
    assert [i.id for i in loaded.catalog.items] == [
        "coffee-shop/cafe-noir",
        "coffee-shop/cafe-noir-3",
        "coffee-shop/cafe-noir-2",
    ]
    assert len(loaded.catalog.in_category("COFFEE SHOP")) == 3


def test_derived_ids_read_the_same_for_plain_and_accented_names(tmp_path: Path) -> None:
    names = ["Bar  No. 5!", "__Beer__Garden--", "Crème brûlée", "東京 カフェ", "?!", "K2 & co"]
    folder = write_jsonl(tmp_path / "cat", [item(name=n, category="Bar & Pub") for n in names])
    assert [i.id for i in load_catalog(folder).catalog.items] == [
        "bar-pub/bar-no-5",
        "bar-pub/beer-garden",
        "bar-pub/creme-brulee",
        "bar-pub/東京-カフェ",
        "bar-pub/item",
        "bar-pub/k2-co",
    ]


def test_a_lone_surrogate_is_refused_wherever_it_is_spelled(tmp_path: Path) -> None:
    # Lines without any \\u escape skip the search for lone surrogates; escaped ones never do.
    folder = write_jsonl(
        tmp_path / "cat",
        [
            item(name="plain", category="bar", tags=["quiet"]),
            '{"name": "caf\\u00e9", "category": "bar", "description": "ok \\u00e9"}',
            '{"name": "t", "category": "bar", "description": "d", "url": "\\udbff"}',
            '{"name": "u", "category": "bar", "tags": ["fine", "\\ud800x"]}',
        ],
    )
    loaded = load_catalog(folder)
    assert [i.name for i in loaded.catalog.items] == ["plain", "café"]
    assert [(p.line, p.field) for p in loaded.problems] == [(3, "url"), (4, "tags")]


def test_csv_export_with_bom_aliases_and_list_cells(tmp_path: Path) -> None:
    folder = tmp_path / "csvcat"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.jpg").write_bytes(b"jpeg")
    (folder / "img" / "b.jpg").write_bytes(b"jpeg")
    rows = [
        "Title,Kind,Summary,Keywords,Score,Website,Photos",
        'Ramen bar,restaurant,"Tonkotsu broth, chashu",noodles|broth,"4,5",https://x.test,'
        "img/a.jpg;img/b.jpg",
        "Cat café,coffee shop,,cats;cosy,,,",
        ",,,,,,",  # an empty spreadsheet row is ignored
        "Nameless?,,,,,,",  # line 5: no category
    ]
    (folder / "items.csv").write_bytes("\r\n".join(rows).encode("utf-8-sig"))
    loaded = load_catalog(folder)
    ramen, cats = loaded.catalog.items
    assert ramen.name == "Ramen bar"
    assert ramen.category == "restaurant"
    assert ramen.description == "Tonkotsu broth, chashu"
    assert ramen.tags == ("noodles", "broth")
    assert ramen.rating == 4.5
    assert ramen.url == "https://x.test"
    assert ramen.images == ((folder / "img/a.jpg").resolve(), (folder / "img/b.jpg").resolve())
    assert cats.tags == ("cats", "cosy")
    assert [(p.line, p.field) for p in loaded.problems] == [(5, "category")]


def test_semicolon_csv_from_a_european_spreadsheet(tmp_path: Path) -> None:
    folder = tmp_path / "eu"
    folder.mkdir()
    (folder / "items.csv").write_text(
        "name;category;rating;tags\nBeer hall;bar;4,2;beer, pretzels\n", encoding="utf-8"
    )
    (hall,) = load_catalog(folder).catalog.items
    assert hall.rating == pytest.approx(4.2)
    assert hall.tags == ("beer", "pretzels")


def test_image_paths_may_not_escape_the_catalog_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "inside.jpg").write_bytes(b"jpeg")
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"jpeg")
    os.symlink(secret, folder / "link.jpg")
    write_jsonl(
        folder,
        [
            item(
                name="Park",
                category="park",
                images=["inside.jpg", "../secret.jpg", str(secret), "link.jpg", "gone.jpg"],
            )
        ],
    )
    loaded = load_catalog(folder)
    (park,) = loaded.catalog.items
    assert park.images == ((folder / "inside.jpg").resolve(),)
    reasons = [(p.line, p.field, p.reason) for p in loaded.problems]
    assert len(reasons) == 4
    assert all(line == 1 and fld == "images" for line, fld, _ in reasons)
    assert sum("outside the catalog folder" in r for *_, r in reasons) == 3
    assert sum("does not exist" in r for *_, r in reasons) == 1


def test_missing_folder_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path / "nowhere")
    message = str(info.value)
    assert message == f"The catalog folder {tmp_path / 'nowhere'} does not exist."
    assert "\n" not in message


def test_folder_without_items_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"has no items\.jsonl or items\.csv file\.$"):
        load_catalog(tmp_path)


def test_all_bad_file_is_an_error_that_shows_the_first_problems(tmp_path: Path) -> None:
    folder = write_jsonl(
        tmp_path / "cat",
        ["{oops", item(name="x"), item(category="y"), item(name="z", category="bar", rating="?")],
    )
    with pytest.raises(CatalogError) as info:
        load_catalog(folder)
    message = str(info.value)
    assert "no valid items" in message
    assert "line 1: not valid JSON" in message
    assert "line 2, field 'category': missing" in message
    assert "and 1 more problem" in message
    assert "\n" not in message


def test_empty_items_file_is_an_error(tmp_path: Path) -> None:
    folder = write_jsonl(tmp_path / "cat", ["# nothing yet"])
    with pytest.raises(CatalogError, match="has no items"):
        load_catalog(folder)


def test_problem_for_the_whole_file_reads_well() -> None:
    assert str(CatalogProblem(0, "", "not UTF-8")) == "file: not UTF-8"
    assert str(CatalogProblem(12, "category", "missing")) == "line 12, field 'category': missing"


def test_windows_1252_export_still_loads_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "items.csv").write_bytes("name,category\nCrème brûlée shop,bakery\n".encode("cp1252"))
    loaded = load_catalog(folder)
    assert loaded.catalog.items[0].name == "Crème brûlée shop"
    assert [(p.line, p.field) for p in loaded.problems] == [(0, "")]
    assert "Windows-1252" in str(loaded.problems[0])


# --- hostile lines: each one a reported problem, never an exception ------------------------------

#: Malformed catalog lines of every kind that once escaped as an exception, ``{n}`` a unique number.
#: Each is skipped with exactly one problem.
HOSTILE_CATALOG_LINES = {
    "NUL in an image path": '{"name": "nul {n}", "category": "bar", "images": ["a\\u0000b.jpg"]}',
    "400-digit rating": '{"name": "big {n}", "category": "bar", "rating": 1' + "0" * 400 + "}",
    "4301-digit integer": '{"name": "long {n}", "category": "bar", "id": 1' + "0" * 4300 + "}",
    "100k-deep nesting": '{"name": "deep {n}", "category": "bar", "tags": '
    + "[" * 100_000
    + "]" * 100_000
    + "}",
    "lone surrogate in the name": '{"name": "caf\\ud800 {n}", "category": "coffee shop"}',
    "lone surrogate in a tag": '{"name": "tag {n}", "category": "bar", "tags": ["\\udfff"]}',
    "lone surrogate in an image path": '{"name": "im {n}", "category": "bar", "images": "\\ud83d"}',
}


def test_hostile_catalog_lines_are_each_one_problem_and_the_valid_lines_load(
    tmp_path: Path,
) -> None:
    rng = random.Random(0)
    lines: list[str] = []
    bad: dict[int, str] = {}  # line number -> kind
    valid: list[str] = []
    for n in range(300):
        if rng.random() < 0.25:
            valid.append(f"good {n}")
            lines.append(item(name=f"good {n}", category="bar", rating=4.5))
        else:
            kind = rng.choice(sorted(HOSTILE_CATALOG_LINES))
            lines.append(HOSTILE_CATALOG_LINES[kind].replace("{n}", str(n)))
            bad[len(lines)] = kind
    assert set(bad.values()) == set(HOSTILE_CATALOG_LINES)  # every kind is in the mix

    loaded = load_catalog(write_jsonl(tmp_path / "cat", lines))

    assert [i.name for i in loaded.catalog.items] == valid
    per_line = Counter(p.line for p in loaded.problems)
    assert dict(per_line) == dict.fromkeys(bad, 1), {bad[n] for n in set(bad) - set(per_line)}
    for problem in loaded.problems:
        text = str(problem)
        assert text.isprintable(), (bad[problem.line], text)
        assert len(text) < 200, (bad[problem.line], text)
        text.encode("utf-8")  # printable on any terminal, whatever the line held


def test_validate_rejects_what_recommend_could_not_use(tmp_path: Path) -> None:
    from visuallens_app.lens.matching import item_hash

    folder = write_jsonl(
        tmp_path / "cat",
        [
            '{"name": "Caf\\ud800", "category": "coffee shop"}',
            item(name="Café", category="coffee shop"),
        ],
    )
    loaded = load_catalog(folder)
    assert [str(p) for p in loaded.problems] == [
        "line 1, field 'name': '\\ud800' is not a character (a lone UTF-16 surrogate)"
    ]
    assert all(item_hash(i) for i in loaded.catalog.items)  # what recommend and eval compute


def test_a_catalog_folder_under_an_unknown_user_is_one_sentence() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(Path("~nosuchuser-visuallens/catalog"))
    assert str(caught.value) == (
        "The catalog folder ~nosuchuser-visuallens/catalog names the home folder of "
        "'nosuchuser-visuallens', who is not a user on this computer."
    )


def test_huge_fields_are_cut_at_load_with_one_warning_each(tmp_path: Path) -> None:
    from visuallens_app.lens.catalog import MAX_DESCRIPTION_CHARS

    huge = "espresso bar with latte art " * 2_000_000  # about 56 MB on one line
    lines = [
        {"name": "Huge", "category": "coffee shop", "description": huge},
        {"name": "Plain", "category": "coffee shop", "description": "a quiet cafe"},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    loaded = load_catalog(tmp_path)
    big, plain = loaded.catalog.items
    assert len(big.description) <= MAX_DESCRIPTION_CHARS
    assert big.description.startswith("espresso bar with latte art")
    assert plain.description == "a quiet cafe"
    (problem,) = loaded.problems
    assert "cut to 10,000 characters" in str(problem)
